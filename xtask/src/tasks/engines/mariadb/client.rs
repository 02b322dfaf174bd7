//! MariaDB's and MySQL's clients, as each flavour names them: `mariadb-dump`/`mariadb` (MySQL:
//! `mysqldump`/`mysql`), a loader that cannot reach the shell or files, a dump beside the
//! service through a FIFO, a query's rows.

use anyhow::Result;

use super::My;
use crate::engine::db::Login;
use crate::engine::docker::helper::{Beside, Helper};
use crate::engine::docker::{Docker, DockerCmd};
use crate::model::compose::Stack;

impl My {
    /// The dump and load clients: (`mariadb-dump`, `mariadb`) or MySQL's names.
    pub fn tools(&self) -> (&'static str, &'static str) {
        (self.record.dump_tool, self.client)
    }

    /// `mariadb`/`mysql` reading SQL on stdin, as the loader runs it: stop at the first error,
    /// client commands off (`--binary-mode`), no shell or file access (`--sandbox`, MariaDB
    /// only), no client-side files (`--local-infile=0`).
    pub fn load(&self, login: &Login, docker: &Docker, stack: &Stack, database: Option<&str>) -> DockerCmd {
        let user = format!("--user={}", login.user);
        let mut args = vec![self.client, "--batch", "--binary-mode", "--local-infile=0", &user];
        if self.sandbox {
            args.push("--sandbox");
        }
        args.extend(database);
        login.client(docker, stack, &args)
    }

    /// `mariadb-dump`/`mysqldump ARGS… --result-file=/xtask-io/stream` in a helper beside the
    /// service's `container` (its `image`, its network namespace: the server at 127.0.0.1 over
    /// TCP; its mounts: the `_FILE` secret at its path), so the dump reaches the tool through a
    /// FIFO instead of the daemon's attach stream (three times faster here).
    pub fn dump_beside(&self, login: &Login, container: &str, image: &str, args: &[&str]) -> Helper {
        let dump_tool = self.record.dump_tool;
        let user = format!("--user={}", login.user);
        let (mut command, secret) = login.password_passing();
        let secret_env = secret.map(|(name, value)| (name.to_string(), value)).into_iter().collect();
        let out = "--result-file=/xtask-io/stream";
        command.extend([dump_tool, "--host=127.0.0.1", "--protocol=TCP", &user, out].map(String::from));
        command.extend(args.iter().map(|a| a.to_string()));
        let beside = Beside { container: container.into(), image: image.into(), secret_env };
        Helper { mounts: Vec::new(), stdin: false, command, beside: Some(beside) }
    }

    /// One query's rows (tab-separated, no headers) through `mariadb`/`mysql`.
    pub fn query(&self, login: &Login, docker: &Docker, stack: &Stack, sql: &str) -> Result<Vec<String>> {
        let user = format!("--user={}", login.user);
        let args = [self.client, "--batch", "--skip-column-names", &user, "-e", sql];
        let out = docker.query(&login.client(docker, stack, &args))?;
        Ok(out.lines().map(str::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::db::{login, Secret};
    use crate::model::compose::Service;
    use crate::model::db::DbEngine;

    fn svc(image: &str, env: &[(&str, &str)]) -> Service {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Service {
            name: "db".into(),
            image: Some(image.into()),
            mounts: vec![],
            environment: env,
            labels: Default::default(),
            command: Vec::new(),
        }
    }

    #[test]
    fn passwords_never_reach_a_command_line() {
        let docker = Docker::for_plans();
        let stack = Stack {
            name: "demo".into(),
            files: vec![],
            project_dir: "/s".into(),
            profiles: vec![],
            env: crate::model::compose::Env::default(),
        };
        let by_value = Login {
            password: Some(Secret::Value("hunter2".into())),
            ..login(&svc("mariadb", &[("MARIADB_ROOT_PASSWORD", "x")]), DbEngine::Mariadb).unwrap()
        };
        let c = super::super::MARIADB.load(&by_value, &docker, &stack, Some("wp"));
        assert!(!c.args.iter().any(|a| a.contains("hunter2")), "{c}");
        assert_eq!(c.secret_env, [("MYSQL_PWD".to_string(), "hunter2".to_string())]);
        assert!(c.args.iter().any(|a| a == "--sandbox") && c.args.iter().any(|a| a == "--binary-mode"));
        let by_file = Login { password: Some(Secret::File("/run/secrets/root".into())), ..by_value };
        let c = super::super::MARIADB.load(&by_file, &docker, &stack, None);
        assert!(c.secret_env.is_empty() && c.args.contains(&"/run/secrets/root".to_string()), "{c}");
    }
}

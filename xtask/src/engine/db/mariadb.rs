//! MariaDB's and MySQL's clients: `mariadb-dump`/`mariadb` (MySQL: `mysqldump`/`mysql`), a
//! loader that cannot reach the shell or files, a dump beside the service through a FIFO.

use anyhow::Result;

use super::Login;
use crate::engine::docker::helper::{Beside, Helper};
use crate::engine::docker::{Docker, DockerCmd};
use crate::model::compose::Stack;
use crate::model::db::DbEngine;

impl Login {
    /// The engine's dump and load clients: (`mariadb-dump`, `mariadb`) or MySQL's names.
    pub fn my_tools(&self) -> (&'static str, &'static str) {
        match self.engine {
            DbEngine::Mysql => ("mysqldump", "mysql"),
            _ => ("mariadb-dump", "mariadb"),
        }
    }

    /// `mariadb`/`mysql` reading SQL on stdin, as the loader runs it: stop at the first error,
    /// client commands off (`--binary-mode`), no shell or file access (`--sandbox`, MariaDB
    /// only), no client-side files (`--local-infile=0`).
    pub fn my_load(&self, docker: &Docker, stack: &Stack, database: Option<&str>) -> DockerCmd {
        let (_, client) = self.my_tools();
        let user = format!("--user={}", self.user);
        let mut args = vec![client, "--batch", "--binary-mode", "--local-infile=0", &user];
        if self.engine == DbEngine::Mariadb {
            args.push("--sandbox");
        }
        args.extend(database);
        self.client(docker, stack, &args)
    }

    /// `mariadb-dump`/`mysqldump ARGS… --result-file=/xtask-io/stream` in a helper beside the
    /// service's `container` (its `image`, its network namespace: the server at 127.0.0.1 over
    /// TCP; its mounts: the `_FILE` secret at its path), so the dump reaches the tool through a
    /// FIFO instead of the daemon's attach stream (three times faster here).
    pub fn my_dump_beside(&self, container: &str, image: &str, args: &[&str]) -> Helper {
        let (dump_tool, _) = self.my_tools();
        let user = format!("--user={}", self.user);
        let (mut command, secret) = self.password_passing();
        let secret_env = secret.map(|(name, value)| (name.to_string(), value)).into_iter().collect();
        let out = "--result-file=/xtask-io/stream";
        command.extend([dump_tool, "--host=127.0.0.1", "--protocol=TCP", &user, out].map(String::from));
        command.extend(args.iter().map(|a| a.to_string()));
        let beside = Beside { container: container.into(), image: image.into(), secret_env };
        Helper { mounts: Vec::new(), stdin: false, command, beside: Some(beside) }
    }

    /// One query's rows (tab-separated, no headers) through `mariadb`/`mysql`.
    pub fn my_query(&self, docker: &Docker, stack: &Stack, sql: &str) -> Result<Vec<String>> {
        let (_, client) = self.my_tools();
        let user = format!("--user={}", self.user);
        let out =
            docker.query(&self.client(docker, stack, &[client, "--batch", "--skip-column-names", &user, "-e", sql]))?;
        Ok(out.lines().map(str::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::svc;
    use super::super::{login, Secret};
    use super::*;

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
            ..login(&svc("mariadb", &[("MARIADB_ROOT_PASSWORD", "x")], &[]), DbEngine::Mariadb).unwrap()
        };
        let c = by_value.my_load(&docker, &stack, Some("wp"));
        assert!(!c.args.iter().any(|a| a.contains("hunter2")), "{c}");
        assert_eq!(c.secret_env, [("MYSQL_PWD".to_string(), "hunter2".to_string())]);
        assert!(c.args.iter().any(|a| a == "--sandbox") && c.args.iter().any(|a| a == "--binary-mode"));
        let by_file = Login { password: Some(Secret::File("/run/secrets/root".into())), ..by_value };
        let c = by_file.my_load(&docker, &stack, None);
        assert!(c.secret_env.is_empty() && c.args.contains(&"/run/secrets/root".to_string()), "{c}");
    }
}

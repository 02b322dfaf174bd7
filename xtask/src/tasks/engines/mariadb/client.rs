//! MariaDB's and MySQL's clients, as each flavour names them: `mariadb-dump`/`mariadb` (MySQL:
//! `mysqldump`/`mysql`), a loader that cannot reach the shell or files, a dump beside the
//! service through a FIFO, a query's rows.

use anyhow::{Context, Result};

use super::My;
use crate::archive::{DbDump, DbProperties};
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

    /// The default character set and collation of database `name` (a checked name: no quote).
    pub fn charset_of(&self, login: &Login, docker: &Docker, stack: &Stack, name: &str) -> Result<DbProperties> {
        let sql = format!(
            "SELECT default_character_set_name, default_collation_name FROM information_schema.schemata \
             WHERE schema_name = '{name}'"
        );
        let row = self.query(login, docker, stack, &sql)?.concat();
        let (charset, collation) = row
            .split_once('\t')
            .with_context(|| format!("database {name}: no character set and collation in {row:?}"))?;
        let (charset, collation) = (Some(charset.to_string()), Some(collation.to_string()));
        Ok(DbProperties { charset, collation, ..DbProperties::default() })
    }

    /// One query's rows (tab-separated, no headers) through `mariadb`/`mysql`.
    pub fn query(&self, login: &Login, docker: &Docker, stack: &Stack, sql: &str) -> Result<Vec<String>> {
        let user = format!("--user={}", login.user);
        let args = [self.client, "--batch", "--skip-column-names", &user, "-e", sql];
        let out = docker.query(&login.client(docker, stack, &args))?;
        Ok(out.lines().map(str::to_string).collect())
    }
}

/// `CREATE DATABASE` of `d` with the default character set and collation the archive recorded
/// (names of `[A-Za-z0-9_]` only, as the grammar checked; the server's defaults without them).
pub fn create_database(d: &DbDump) -> String {
    let plain =
        |s: &&String| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let p = d.properties.as_ref();
    let mut sql = format!("CREATE DATABASE `{}`", d.name);
    if let Some(charset) = p.and_then(|p| p.charset.as_ref()).filter(plain) {
        sql.push_str(&format!(" CHARACTER SET {charset}"));
    }
    if let Some(collation) = p.and_then(|p| p.collation.as_ref()).filter(plain) {
        sql.push_str(&format!(" COLLATE {collation}"));
    }
    sql
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

    #[test]
    fn a_database_is_created_with_its_recorded_character_set() {
        let mut d = crate::archive::DbDump {
            name: "wp".into(),
            entry: "databases/m/wp.sql".into(),
            tables: Default::default(),
            properties: None,
        };
        assert_eq!(create_database(&d), "CREATE DATABASE `wp`");
        d.properties = Some(crate::archive::DbProperties {
            charset: Some("utf8mb4".into()),
            collation: Some("utf8mb4_unicode_ci".into()),
            ..Default::default()
        });
        assert_eq!(create_database(&d), "CREATE DATABASE `wp` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
        d.properties.as_mut().unwrap().collation = Some("x; DROP DATABASE y".into());
        assert_eq!(create_database(&d), "CREATE DATABASE `wp` CHARACTER SET utf8mb4");
    }
}

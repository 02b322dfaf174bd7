//! Database services as one interface: which engine a service runs (its `xtask.engine` label,
//! its `xtask.dump` hook, else its image: the records in model/db/), and a client run with its
//! [`Login`] (the engine's conventions, read by its record; `*_FILE` secrets read inside the
//! container). Secrets reach the container only through its environment (`-e NAME`, the value
//! in docker's own environment) or a file it already has: never on a command line. Database and
//! table names reach these commands only after the grammar checked them.

use anyhow::{bail, Result};

use crate::engine::docker::{Docker, DockerCmd};
use crate::model::compose::{Service, Stack};
use crate::model::db::{self, DbEngine, RECORDS};
pub use crate::model::db::{login, Login, Secret};

pub mod redis;

pub use redis::{redis_auth, RedisAuth, REDIS_PASSWORD_LABEL};

/// What a service is, for the data it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A database the tool dumps.
    Dump(DbEngine),
    /// Redis and its kin: saved, then its volume copied.
    Redis,
    /// Not a database (or `xtask.engine: none`).
    Other,
}

/// The engine of `service`: label `xtask.engine`, then a `xtask.dump` hook, then the image.
pub fn detect(service: &Service) -> Result<Detected> {
    if let Some(e) = service.labels.get("xtask.engine") {
        return Ok(match e.as_str() {
            "redis" => Detected::Redis,
            "none" => Detected::Other,
            name => match RECORDS.iter().find(|r| r.name == name) {
                Some(r) => Detected::Dump(r.engine),
                None => {
                    let known: Vec<&str> = RECORDS.iter().map(|r| r.name).collect();
                    bail!(
                        "service {}: label xtask.engine is {name:?}; use {}, redis or none",
                        service.name,
                        known.join(", ")
                    )
                }
            },
        });
    }
    if service.labels.contains_key("xtask.dump") {
        return Ok(Detected::Dump(DbEngine::Hook));
    }
    let image = service.image.as_deref().unwrap_or_default();
    if let Some(engine) = db::dumped_by(image) {
        return Ok(Detected::Dump(engine));
    }
    let base = db::image_base(image);
    Ok(if db::REDIS_IMAGES.iter().any(|w| base.contains(w)) { Detected::Redis } else { Detected::Other })
}

impl Login {
    /// `docker compose exec -T [--user U] SERVICE CMD…` with the password in the client's
    /// environment: forwarded by name (`-e VAR`), or read from its file inside the container by
    /// a fixed script that takes the path as an argument.
    pub fn exec(&self, docker: &Docker, stack: &Stack, os_user: Option<&str>, cmd: &[&str]) -> DockerCmd {
        let var = self.engine.record().password_var;
        let mut args: Vec<String> = vec!["exec".into(), "-T".into()];
        if let Some(u) = os_user {
            args.extend(["--user".into(), u.into()]);
        }
        let (wrapper, secret) = self.password_passing();
        if secret.is_some() {
            args.extend(["-e".into(), var.into()]);
        }
        args.push(self.service.clone());
        args.extend(wrapper);
        args.extend(cmd.iter().map(|s| s.to_string()));
        let c = docker.compose(stack, args);
        match secret {
            Some((name, value)) => c.secret_env(name, &value),
            None => c,
        }
    }

    /// How the password reaches the client: a value as the engine's variable in the child's
    /// environment (the second part), or a `_FILE` path read inside the container by a fixed
    /// script that takes the path as an argument and puts it there (the argv prefix).
    pub fn password_passing(&self) -> (Vec<String>, Option<(&'static str, String)>) {
        let var = self.engine.record().password_var;
        match &self.password {
            Some(Secret::Value(v)) => (Vec::new(), Some((var, v.clone()))),
            Some(Secret::File(path)) => {
                let script = format!("p=$(cat -- \"$1\") || exit 1; shift; {var}=$p; export {var}; exec \"$@\"");
                (vec!["sh".into(), "-c".into(), script, "xtask-login".into(), path.clone()], None)
            }
            None => (Vec::new(), None),
        }
    }

    /// The user name: `user`, or what the file `POSTGRES_USER_FILE` names holds, read inside
    /// the (running) container the first time it is asked for.
    pub fn user_name(&self, docker: &Docker, stack: &Stack) -> Result<&str> {
        let Some(file) = &self.user_file else { return Ok(&self.user) };
        if let Some(user) = self.resolved.get() {
            return Ok(user);
        }
        let out = docker.query(&docker.compose(stack, ["exec", "-T", &self.service, "cat", "--", file]))?;
        let user = out.trim().to_string();
        if !crate::model::db::is_db_name(&user) {
            bail!("service {}: the user in {file} is outside [A-Za-z0-9_.-]; archives cannot record it", self.service);
        }
        Ok(self.resolved.get_or_init(|| user))
    }

    /// Replaces `user_file` by the user it names (see [`Login::user_name`]).
    pub fn resolve_user(&mut self, docker: &Docker, stack: &Stack) -> Result<()> {
        self.user = self.user_name(docker, stack)?.to_string();
        self.user_file = None;
        Ok(())
    }

    /// A client command as the engine's clients run: PostgreSQL's as the `postgres` OS user.
    pub fn client(&self, docker: &Docker, stack: &Stack, cmd: &[&str]) -> DockerCmd {
        self.exec(docker, stack, self.engine.record().os_user, cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn svc(image: &str, env: &[(&str, &str)], labels: &[(&str, &str)]) -> Service {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Service {
            name: "db".into(),
            image: Some(image.into()),
            mounts: vec![],
            environment: map(env),
            labels: map(labels),
            command: Vec::new(),
        }
    }

    #[test]
    fn detects_by_label_then_hook_then_image() {
        let d = |image: &str, labels: &[(&str, &str)]| detect(&svc(image, &[], labels)).unwrap();
        assert_eq!(d("postgres:16", &[]), Detected::Dump(DbEngine::Postgres));
        assert_eq!(d("ghcr.io/immich-app/postgres:14-vectorchord0.4.3", &[]), Detected::Dump(DbEngine::Postgres));
        assert_eq!(d("timescale/timescaledb:latest-pg16", &[]), Detected::Dump(DbEngine::Postgres));
        assert_eq!(d("mariadb:11", &[]), Detected::Dump(DbEngine::Mariadb));
        assert_eq!(d("mysql:8", &[]), Detected::Dump(DbEngine::Mysql));
        assert_eq!(d("percona/percona-server:8.0", &[]), Detected::Dump(DbEngine::Mysql));
        assert_eq!(d("tensorchord/pgvecto-rs:pg14-v0.2.0", &[]), Detected::Dump(DbEngine::Postgres));
        assert_eq!(d("valkey/valkey:8", &[]), Detected::Redis);
        assert_eq!(d("nginx", &[]), Detected::Other);
        assert_eq!(d("alpine", &[("xtask.dump", "sqlite3 /d/x.db .dump")]), Detected::Dump(DbEngine::Hook));
        assert_eq!(d("postgres:16", &[("xtask.engine", "none")]), Detected::Other);
        assert_eq!(d("my/custom-db", &[("xtask.engine", "mariadb")]), Detected::Dump(DbEngine::Mariadb));
        assert!(detect(&svc("x", &[], &[("xtask.engine", "oracle")])).unwrap_err().to_string().contains("oracle"));
    }

    #[test]
    fn logins_follow_the_images_conventions() {
        let pg = login(
            &svc("postgres", &[("POSTGRES_USER", "app"), ("POSTGRES_PASSWORD_FILE", "/run/secrets/pw")], &[]),
            DbEngine::Postgres,
        )
        .unwrap();
        assert_eq!((pg.user.as_str(), pg.password), ("app", Some(Secret::File("/run/secrets/pw".into()))));
        let pg = login(&svc("postgres", &[("POSTGRES_USER_FILE", "/run/secrets/u")], &[]), DbEngine::Postgres).unwrap();
        assert_eq!(pg.user_file.as_deref(), Some("/run/secrets/u"));
        let my = login(&svc("mariadb", &[("MYSQL_ROOT_PASSWORD", "s3")], &[]), DbEngine::Mariadb).unwrap();
        assert_eq!((my.user.as_str(), my.password), ("root", Some(Secret::Value("s3".into()))));
        let err = login(&svc("mariadb", &[("MARIADB_USER", "wp")], &[]), DbEngine::Mariadb).unwrap_err().to_string();
        assert!(err.contains("MARIADB_ROOT_PASSWORD") && err.contains("xtask.engine: none"), "{err}");
    }
}

//! Database services as one interface: which engine a service runs (its `xtask.engine` label,
//! its `xtask.dump` hook, else its image), how the tool logs in (the image's own conventions,
//! `*_FILE` secrets read inside the container), and the client commands that dump, query and
//! load it. Secrets reach the container only through its environment (`-e NAME`, the value in
//! docker's own environment) or a file it already has: never on a command line. Database and
//! table names reach these commands only after the grammar checked them.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::engine::docker::helper::{Beside, Helper};
use crate::engine::docker::{Docker, DockerCmd};
use crate::engine::postgres;
use crate::model::compose::{Service, Stack};
use crate::model::db::DbEngine;

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

/// The label naming the variable that holds a Redis service's password.
pub const REDIS_PASSWORD_LABEL: &str = "xtask.redis.password_env";

/// How the tool logs in to a Redis service, from its compose file (never from an archive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAuth {
    /// No password found: Redis is asked without one.
    None,
    /// The password itself, and where it was found (for messages; never the value).
    Value { from: String, value: String },
    /// A file inside the container that holds the password (a `*_FILE` variable).
    File { from: String, path: String },
    /// The server's configuration file inside the container (the `.conf` its command names):
    /// its last `requirepass` line, read there when Redis is asked.
    Config { path: String },
}

impl RedisAuth {
    /// Where the password came from, for a message: "no password", "REDIS_PASSWORD"…
    pub fn source(&self) -> String {
        match self {
            RedisAuth::None => "no password (none of the usual variables is set)".into(),
            RedisAuth::Value { from, .. } | RedisAuth::File { from, .. } => from.clone(),
            RedisAuth::Config { path } => format!("requirepass in {path}, if it has one"),
        }
    }
}

/// Redis's password by the conventions real stacks use: the variable the label
/// `xtask.redis.password_env` names, then `REDIS_PASSWORD`, `REDISPASS`, `REDIS_PASS`,
/// `REDIS_AUTH`, `REDISCLI_AUTH`, `VALKEY_PASSWORD` (each also as `NAME_FILE`), then
/// `--requirepass VALUE` in its command, then the `requirepass` line of the configuration file
/// its command names.
pub fn redis_auth(service: &Service) -> RedisAuth {
    let labelled = service.labels.get(REDIS_PASSWORD_LABEL).cloned();
    let names = labelled.into_iter().chain(
        ["REDIS_PASSWORD", "REDISPASS", "REDIS_PASS", "REDIS_AUTH", "REDISCLI_AUTH", "VALKEY_PASSWORD"]
            .map(String::from),
    );
    for name in names {
        if let Some(value) = service.environment.get(&name).filter(|v| !v.is_empty()) {
            return RedisAuth::Value { from: name, value: value.clone() };
        }
        let file = format!("{name}_FILE");
        if let Some(path) = service.environment.get(&file).filter(|v| !v.is_empty()) {
            return RedisAuth::File { from: file, path: path.clone() };
        }
    }
    let words = &service.command;
    for (i, w) in words.iter().enumerate() {
        let value = match w.strip_prefix("--requirepass") {
            Some("") => words.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            return RedisAuth::Value { from: "--requirepass in its command".into(), value };
        }
    }
    match words.iter().find(|w| w.ends_with(".conf") && w.starts_with('/')) {
        Some(conf) => RedisAuth::Config { path: conf.clone() },
        None => RedisAuth::None,
    }
}

/// The engine of `service`: label `xtask.engine`, then a `xtask.dump` hook, then the image.
pub fn detect(service: &Service) -> Result<Detected> {
    if let Some(e) = service.labels.get("xtask.engine") {
        return Ok(match e.as_str() {
            "postgres" => Detected::Dump(DbEngine::Postgres),
            "mariadb" => Detected::Dump(DbEngine::Mariadb),
            "mysql" => Detected::Dump(DbEngine::Mysql),
            "redis" => Detected::Redis,
            "hook" => Detected::Dump(DbEngine::Hook),
            "none" => Detected::Other,
            other => bail!(
                "service {}: label xtask.engine is {other:?}; use postgres, mariadb, mysql, redis, hook or none",
                service.name
            ),
        });
    }
    if service.labels.contains_key("xtask.dump") {
        return Ok(Detected::Dump(DbEngine::Hook));
    }
    let image = service.image.as_deref().unwrap_or_default().to_lowercase();
    let base = image.rsplit('/').next().unwrap_or_default().split([':', '@']).next().unwrap_or_default();
    let has = |words: &[&str]| words.iter().any(|w| base.contains(w));
    Ok(if has(&["postgres", "postgis", "timescaledb"]) {
        Detected::Dump(DbEngine::Postgres)
    } else if has(&["mariadb"]) {
        Detected::Dump(DbEngine::Mariadb)
    } else if has(&["mysql", "percona"]) {
        Detected::Dump(DbEngine::Mysql)
    } else if has(&["redis", "valkey", "keydb"]) {
        Detected::Redis
    } else {
        Detected::Other
    })
}

/// A password as the service's compose file gives it: a value, or a file inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    File(String),
}

/// How the tool logs in to a database service, from its compose environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub service: String,
    pub engine: DbEngine,
    /// The user, or the file inside the container that holds it (`POSTGRES_USER_FILE`).
    pub user: String,
    pub user_file: Option<String>,
    /// The user read from `user_file` (once).
    resolved: std::cell::OnceCell<String>,
    pub password: Option<Secret>,
    /// `xtask.dump` / `xtask.load` of a hook service (commands run by `sh -c` in the service).
    pub dump_cmd: Option<String>,
    pub load_cmd: Option<String>,
}

fn value_or_file(env: &BTreeMap<String, String>, names: &[&str]) -> Option<Secret> {
    names.iter().find_map(|n| {
        let v = env.get(*n).filter(|v| !v.is_empty()).map(|v| Secret::Value(v.clone()));
        v.or_else(|| env.get(&format!("{n}_FILE")).filter(|f| !f.is_empty()).map(|f| Secret::File(f.clone())))
    })
}

/// The login for `service`, run by `engine`, by the image's own conventions.
pub fn login(service: &Service, engine: DbEngine) -> Result<Login> {
    let env = &service.environment;
    let mut login = Login {
        service: service.name.clone(),
        engine,
        user: String::new(),
        user_file: None,
        resolved: std::cell::OnceCell::new(),
        password: None,
        dump_cmd: None,
        load_cmd: None,
    };
    match engine {
        DbEngine::Postgres => {
            login.user = env.get("POSTGRES_USER").cloned().unwrap_or_else(|| "postgres".into());
            login.user_file = env.get("POSTGRES_USER_FILE").filter(|_| !env.contains_key("POSTGRES_USER")).cloned();
            login.password = value_or_file(env, &["POSTGRES_PASSWORD"]);
        }
        DbEngine::Mariadb | DbEngine::Mysql => {
            login.user = "root".into();
            login.password = value_or_file(env, &["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"]);
            let empty_ok = ["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD", "MYSQL_ALLOW_EMPTY_PASSWORD"]
                .iter()
                .any(|k| env.get(*k).is_some_and(|v| !v.is_empty()));
            if login.password.is_none() && !empty_ok {
                bail!(
                    "service {}: no root password in its environment (MARIADB_ROOT_PASSWORD, MYSQL_ROOT_PASSWORD \
                     or their _FILE forms), which the tool needs to dump every database with its users and \
                     grants; set one, or label the service xtask.engine: none to leave it out",
                    service.name
                );
            }
        }
        DbEngine::Hook => {
            login.dump_cmd = service.labels.get("xtask.dump").cloned();
            login.load_cmd = service.labels.get("xtask.load").cloned();
            if login.dump_cmd.is_none() {
                bail!("service {}: label xtask.engine: hook needs a label xtask.dump (a command whose stdout is the dump)", service.name);
            }
        }
    }
    Ok(login)
}

/// The environment variable each engine's client reads its password from.
fn password_var(engine: DbEngine) -> &'static str {
    match engine {
        DbEngine::Postgres => "PGPASSWORD",
        DbEngine::Mariadb | DbEngine::Mysql | DbEngine::Hook => "MYSQL_PWD",
    }
}

impl Login {
    /// `docker compose exec -T [--user U] SERVICE CMD…` with the password in the client's
    /// environment: forwarded by name (`-e VAR`), or read from its file inside the container by
    /// a fixed script that takes the path as an argument.
    pub fn exec(&self, docker: &Docker, stack: &Stack, os_user: Option<&str>, cmd: &[&str]) -> DockerCmd {
        let var = password_var(self.engine);
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
    fn password_passing(&self) -> (Vec<String>, Option<(&'static str, String)>) {
        let var = password_var(self.engine);
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
        match self.engine {
            DbEngine::Postgres => self.exec(docker, stack, Some(postgres::OS_USER), cmd),
            _ => self.exec(docker, stack, None, cmd),
        }
    }

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
    use super::*;

    fn svc(image: &str, env: &[(&str, &str)], labels: &[(&str, &str)]) -> Service {
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
    fn redis_passwords_by_every_convention() {
        let auth = |env: &[(&str, &str)], labels: &[(&str, &str)], command: &[&str]| {
            let mut s = svc("redis:7", env, labels);
            s.command = command.iter().map(|c| c.to_string()).collect();
            redis_auth(&s)
        };
        let value = |from: &str, v: &str| RedisAuth::Value { from: from.into(), value: v.into() };
        assert_eq!(auth(&[("REDIS_PASSWORD", "a")], &[], &[]), value("REDIS_PASSWORD", "a"));
        assert_eq!(auth(&[("REDISPASS", "b")], &[], &[]), value("REDISPASS", "b"));
        assert_eq!(auth(&[("REDIS_PASS", "c")], &[], &[]), value("REDIS_PASS", "c"));
        let file = RedisAuth::File { from: "REDIS_PASSWORD_FILE".into(), path: "/run/secrets/r".into() };
        assert_eq!(auth(&[("REDIS_PASSWORD_FILE", "/run/secrets/r")], &[], &[]), file);
        let cmd = ["redis-server", "--appendonly", "yes", "--requirepass", "d"];
        assert_eq!(auth(&[], &[], &cmd), value("--requirepass in its command", "d"));
        assert_eq!(auth(&[], &[], &["redis-server", "--requirepass=e"]), value("--requirepass in its command", "e"));
        let labelled =
            auth(&[("CACHE_SECRET", "f"), ("REDIS_PASSWORD", "g")], &[(REDIS_PASSWORD_LABEL, "CACHE_SECRET")], &[]);
        assert_eq!(labelled, value("CACHE_SECRET", "f"), "the label wins");
        assert_eq!(auth(&[("REDIS_PASSWORD", "")], &[], &[]), RedisAuth::None);
        let conf = auth(&[], &[], &["redis-server", "/usr/local/etc/redis/redis.conf"]);
        assert_eq!(conf, RedisAuth::Config { path: "/usr/local/etc/redis/redis.conf".into() });
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

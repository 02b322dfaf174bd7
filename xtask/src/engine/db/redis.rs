//! Redis and its kin (Valkey, KeyDB): no dump engine (their volume is copied after `SAVE`), but
//! a login: the password by every convention real stacks use.

use crate::model::compose::Service;

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

#[cfg(test)]
mod tests {
    use super::super::tests::svc;
    use super::*;

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
}

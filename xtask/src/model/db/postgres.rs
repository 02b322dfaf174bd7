//! PostgreSQL as data: the images that run it, plain-SQL `pg_dump` per database with
//! `pg_dumpall --globals-only` for the roles, and the table names its dumps give. The login
//! follows the official image: `POSTGRES_USER` (default `postgres`) or `POSTGRES_USER_FILE`,
//! `POSTGRES_PASSWORD` or its `_FILE` form; the clients run as the `postgres` OS user inside
//! the container, never as root.
//!
//! How the tool names a PostgreSQL database to psql and pg_dump: never as a bare `-d NAME`,
//! which libpq expands as a connection string when it holds `=` (a name like
//! `host=elsewhere dbname=x` would connect to another server and send it the password), but
//! as a quoted `dbname='…'` connection string that can only ever mean that database.

use anyhow::Result;

use super::{value_or_file, DbEngine, Dialect, Login, Record};
use crate::model::compose::Service;

pub const RECORD: Record = Record {
    engine: DbEngine::Postgres,
    name: "postgres",
    images: &["postgres", "postgis", "timescaledb", "pgvecto"],
    globals_file: Some("globals.sql"),
    single_dump: None,
    dialect: Dialect::Postgres,
    dump_tool: "pg_dump",
    globals_what: "PostgreSQL roles and tablespaces (pg_dumpall --globals-only)",
    each_what: "plain SQL pg_dump",
    globals_words: "roles",
    is_table: is_table_name,
    fill_login,
    password_var: "PGPASSWORD",
    os_user: Some(OS_USER),
};

/// The OS user psql and pg_dump run as in the database container.
pub const OS_USER: &str = "postgres";

fn fill_login(service: &Service, login: &mut Login) -> Result<()> {
    let env = &service.environment;
    login.user = env.get("POSTGRES_USER").cloned().unwrap_or_else(|| "postgres".into());
    login.user_file = env.get("POSTGRES_USER_FILE").filter(|_| !env.contains_key("POSTGRES_USER")).cloned();
    login.password = value_or_file(env, &["POSTGRES_PASSWORD"]);
    Ok(())
}

/// A table as pg_dump `--quote-all-identifiers` names it: `"schema"."table"`, each part 1 to 63
/// bytes without `"` or control characters, so it can stand in SQL as it is.
pub fn is_table_name(s: &str) -> bool {
    let part = |p: &str| {
        let inner = p.strip_prefix('"').and_then(|p| p.strip_suffix('"'));
        inner.is_some_and(|i| !i.is_empty() && i.len() <= 63 && !i.chars().any(|c| c == '"' || c.is_control()))
    };
    match s.split_once("\".\"") {
        Some((a, b)) => part(&format!("{a}\"")) && part(&format!("\"{b}")),
        None => false,
    }
}

/// `--dbname=dbname='NAME'`, with `\` and `'` escaped as libpq requires.
pub fn dbname_arg(name: &str) -> String {
    format!("--dbname=dbname='{}'", name.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_become_connection_parameters() {
        assert_eq!(dbname_arg("app"), "--dbname=dbname='app'");
        assert_eq!(dbname_arg("host=evil port=1 dbname=x"), "--dbname=dbname='host=evil port=1 dbname=x'");
        assert_eq!(dbname_arg(r"a'b\c"), r"--dbname=dbname='a\'b\\c'");
    }
}

//! How the tool names a PostgreSQL database to psql and pg_dump: never as a bare `-d NAME`,
//! which libpq expands as a connection string when it holds `=` (a name like
//! `host=elsewhere dbname=x` would connect to another server and send it the password), but
//! as a quoted `dbname='…'` connection string that can only ever mean that database. The
//! client runs as the `postgres` OS user inside the container, never as root. The login follows
//! the official image: `POSTGRES_USER` (default `postgres`) or `POSTGRES_USER_FILE`,
//! `POSTGRES_PASSWORD` or its `_FILE` form.

use anyhow::Result;

use super::{value_or_file, Engine, Login};
use crate::model::compose::Service;
use crate::model::db::DbEngine;

pub struct Postgres;

impl Engine for Postgres {
    fn kind(&self) -> DbEngine {
        DbEngine::Postgres
    }

    fn fill_login(&self, service: &Service, login: &mut Login) -> Result<()> {
        let env = &service.environment;
        login.user = env.get("POSTGRES_USER").cloned().unwrap_or_else(|| "postgres".into());
        login.user_file = env.get("POSTGRES_USER_FILE").filter(|_| !env.contains_key("POSTGRES_USER")).cloned();
        login.password = value_or_file(env, &["POSTGRES_PASSWORD"]);
        Ok(())
    }

    fn password_var(&self) -> &'static str {
        "PGPASSWORD"
    }

    fn os_user(&self) -> Option<&'static str> {
        Some(OS_USER)
    }
}

/// `--dbname=dbname='NAME'`, with `\` and `'` escaped as libpq requires.
pub fn dbname_arg(name: &str) -> String {
    format!("--dbname=dbname='{}'", name.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The OS user psql and pg_dump run as in the database container.
pub const OS_USER: &str = "postgres";

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

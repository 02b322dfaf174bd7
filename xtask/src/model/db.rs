//! The database services' kinds as the model knows them: which engine made a service's dumps
//! (and so how they are checked and loaded), and the names a database may have here. The engine
//! layer drives them; the archive format records them.

use serde::{Deserialize, Serialize};

/// How a database service's dumps were made, and so how they are checked and loaded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbEngine {
    /// Plain-SQL `pg_dump` per database, `pg_dumpall --globals-only` for the roles.
    #[default]
    Postgres,
    /// `mariadb-dump` per database, `--system=users` for users and grants.
    Mariadb,
    /// The same with MySQL's `mysqldump` and `mysql`, without users (mysqldump cannot dump them).
    Mysql,
    /// The service's own `xtask.dump` command: one opaque dump, loaded by `xtask.load`.
    Hook,
}

impl DbEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            DbEngine::Postgres => "postgres",
            DbEngine::Mariadb => "mariadb",
            DbEngine::Mysql => "mysql",
            DbEngine::Hook => "hook",
        }
    }

    /// The entry of the cluster-wide dump (roles, users and grants), if the engine has one.
    pub fn globals_file(self) -> Option<&'static str> {
        match self {
            DbEngine::Postgres => Some("globals.sql"),
            DbEngine::Mariadb => Some("users.sql"),
            DbEngine::Mysql | DbEngine::Hook => None,
        }
    }
}

/// A database or role name the tool archives: `[A-Za-z0-9_][A-Za-z0-9_.-]*`, at most 63 bytes
/// (PostgreSQL's limit); no space, quote, `=` or backslash that a client could reinterpret.
pub fn is_db_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

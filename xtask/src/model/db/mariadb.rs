//! MariaDB and MySQL as data: the images that run them, one `mariadb-dump`/`mysqldump` per
//! database (MariaDB's users and grants by `--system=users`; mysqldump cannot dump them), and
//! the table names their dumps give.

use super::{DbEngine, Dialect, Record};

pub const MARIADB: Record = Record {
    engine: DbEngine::Mariadb,
    name: "mariadb",
    images: &["mariadb"],
    globals_file: Some("users.sql"),
    dump_tool: "mariadb-dump",
    globals_what: "MariaDB users and grants (mariadb-dump --system=users)",
    each_what: "mariadb-dump",
    ..MYSQL
};

pub const MYSQL: Record = Record {
    engine: DbEngine::Mysql,
    name: "mysql",
    images: &["mysql", "percona"],
    globals_file: None,
    single_dump: None,
    dialect: Dialect::Mysql,
    dump_tool: "mysqldump",
    globals_what: "",
    each_what: "mysqldump",
    globals_words: "users and grants",
    is_table: is_my_table_name,
};

/// A MariaDB/MySQL table as the dump scanner names it: `` `name` ``, 1 to 64 bytes inside,
/// without a backtick or a control character.
pub fn is_my_table_name(t: &str) -> bool {
    t.strip_prefix('`').and_then(|r| r.strip_suffix('`')).is_some_and(|inner| {
        (1..=64).contains(&inner.len()) && !inner.contains('`') && !inner.chars().any(char::is_control)
    })
}

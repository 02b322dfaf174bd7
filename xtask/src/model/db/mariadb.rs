//! MariaDB and MySQL as data: the images that run them, one `mariadb-dump`/`mysqldump` per
//! database (MariaDB's users and grants by `--system=users`; mysqldump cannot dump them), and
//! the table names their dumps give. The login is `root` by the official images' conventions
//! (`MARIADB_ROOT_PASSWORD`/`MYSQL_ROOT_PASSWORD` or their `_FILE` forms, or an explicitly empty
//! root password).

use anyhow::{bail, Result};

use super::{value_or_file, DbEngine, Dialect, Login, Record};
use crate::model::compose::Service;

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
    fill_login,
    password_var: "MYSQL_PWD",
    os_user: None,
};

fn fill_login(service: &Service, login: &mut Login) -> Result<()> {
    let env = &service.environment;
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
    Ok(())
}

/// A MariaDB/MySQL table as the dump scanner names it: `` `name` ``, 1 to 64 bytes inside,
/// without a backtick or a control character.
pub fn is_my_table_name(t: &str) -> bool {
    t.strip_prefix('`').and_then(|r| r.strip_suffix('`')).is_some_and(|inner| {
        (1..=64).contains(&inner.len()) && !inner.contains('`') && !inner.chars().any(char::is_control)
    })
}

//! A service's own dump hook as data: no image of its own (the label `xtask.dump` says it),
//! one opaque dump named `dump` per service, no tables the tool can count.

use anyhow::{bail, Result};

use super::{DbEngine, Dialect, Login, Record};
use crate::model::compose::Service;

pub const RECORD: Record = Record {
    engine: DbEngine::Hook,
    name: "hook",
    images: &[],
    globals_file: None,
    single_dump: Some("dump"),
    dialect: Dialect::Opaque,
    dump_tool: "the dump hook",
    globals_what: "",
    each_what: "output of the xtask.dump command",
    globals_words: "",
    is_table: |_| false,
    fill_login,
    password_var: "MYSQL_PWD",
    os_user: None,
};

fn fill_login(service: &Service, login: &mut Login) -> Result<()> {
    login.dump_cmd = service.labels.get("xtask.dump").cloned();
    login.load_cmd = service.labels.get("xtask.load").cloned();
    if login.dump_cmd.is_none() {
        bail!(
            "service {}: label xtask.engine: hook needs a label xtask.dump (a command whose stdout is the dump)",
            service.name
        );
    }
    Ok(())
}

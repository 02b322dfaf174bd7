//! A service's own dump hook: `xtask.dump` (a command whose stdout is the dump, run by `sh -c`
//! in the service) and `xtask.load` (reads it on stdin); one opaque dump, no login of its own.

use anyhow::{bail, Result};

use super::{Engine, Login};
use crate::model::compose::Service;
use crate::model::db::DbEngine;

pub struct Hook;

impl Engine for Hook {
    fn kind(&self) -> DbEngine {
        DbEngine::Hook
    }

    fn fill_login(&self, service: &Service, login: &mut Login) -> Result<()> {
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

    fn password_var(&self) -> &'static str {
        "MYSQL_PWD"
    }
}

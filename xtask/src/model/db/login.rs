//! How the tool logs in to a database service, as data read from its compose environment by
//! its engine's conventions ([`super::Record::fill_login`]). Running a client with it is the
//! engine layer's (`engine/db`).

use std::collections::BTreeMap;

use anyhow::Result;

use super::DbEngine;
use crate::model::compose::Service;

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
    /// The user read from `user_file` (once; see `engine::db`'s `Login::user_name`).
    pub(crate) resolved: std::cell::OnceCell<String>,
    pub password: Option<Secret>,
    /// `xtask.dump` / `xtask.load` of a hook service (commands run by `sh -c` in the service).
    pub dump_cmd: Option<String>,
    pub load_cmd: Option<String>,
}

/// The first of `names` set (not empty) in `env`, as a value or as its `NAME_FILE` form.
pub fn value_or_file(env: &BTreeMap<String, String>, names: &[&str]) -> Option<Secret> {
    names.iter().find_map(|n| {
        let v = env.get(*n).filter(|v| !v.is_empty()).map(|v| Secret::Value(v.clone()));
        v.or_else(|| env.get(&format!("{n}_FILE")).filter(|f| !f.is_empty()).map(|f| Secret::File(f.clone())))
    })
}

/// The login for `service`, run by `engine`, by the image's own conventions.
pub fn login(service: &Service, engine: DbEngine) -> Result<Login> {
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
    (engine.record().fill_login)(service, &mut login)?;
    Ok(login)
}

//! The database engines' drivers: one module per engine owning all its steps (its dumps, the
//! restore's recover, stage, swap and in-place steps, the deep proof) behind [`Driver`], which
//! the tasks call through [`of`]; its data (images, login, dump file names, dialect) is its
//! record in `model/db/`. What several drivers share is here: the services they work on
//! ([`DbSource`], [`DbRestore`]), the dump machinery ([`dump`]) and throwaway servers
//! ([`throwaway`]). docs/design.md, "Adding a database engine", says what a new one takes.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::archive::extract::Spooled;
use crate::archive::DbInfo;
use crate::engine::db::Login;

pub mod dump;
pub mod throwaway;

/// A database service to dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSource {
    /// Engine, user and password (reaching the container by its environment, never a command line).
    pub login: Login,
    /// The database volume its dump stands for (none when its data is a bind mount or unmounted).
    pub volume: Option<String>,
    /// Databases to dump; empty: all.
    pub databases: Vec<String>,
}

/// One database service to restore: how to log in to it now (from this stack's compose file,
/// never from the archive) and what the archive holds for it.
#[derive(Debug, Clone, PartialEq)]
pub struct DbRestore {
    pub login: Login,
    pub info: DbInfo,
}

impl DbRestore {
    /// The entry of the cluster-wide dump (an error if the archive has none).
    pub fn globals_entry(&self) -> Result<&str> {
        self.info.globals_entry.as_deref().with_context(|| format!("service {}: no roles entry", self.login.service))
    }
}

/// A database loaded beside the live one.
pub struct StagedDb {
    /// The live database it replaces.
    pub live: String,
    /// The staged copy (`xtask_new_PID_N`).
    pub new: String,
    /// The handover script staging prepared for the swap, kept in memory (empty until then):
    /// nothing the swap runs is read back from a file.
    pub handover: String,
}

/// The spooled dump of `entry`, which the one pass or `in_place` copied out and checked.
pub fn find<'a>(spooled: &'a BTreeMap<String, Spooled>, entry: &str) -> Result<&'a Spooled> {
    spooled.get(entry).with_context(|| format!("the dump {entry} was not staged"))
}

//! The database engines' drivers: one module per engine owning all its steps (its dumps, the
//! restore's recover, stage, swap and in-place steps, the deep proof) behind [`Driver`], which
//! the tasks call through [`of`]; its data (images, login, dump file names, dialect) is its
//! record in `model/db/`. What several drivers share is here: the services they work on
//! ([`DbSource`], [`DbRestore`]), the dump machinery ([`dump`]) and throwaway servers
//! ([`throwaway`]). docs/design.md, "Adding a database engine", says what a new one takes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::archive::extract::{self, Spooled, Verified};
use crate::archive::DbInfo;
use crate::context::Ctx;
use crate::engine::db::Login;
use crate::model::db::DbEngine;

pub mod dump;
pub mod hook;
pub mod mariadb;
pub mod postgres;
pub mod throwaway;

/// The driver of `engine`.
pub fn of(engine: DbEngine) -> &'static dyn Driver {
    match engine {
        DbEngine::Postgres => &postgres::Postgres,
        DbEngine::Mariadb => &mariadb::MARIADB,
        DbEngine::Mysql => &mariadb::MYSQL,
        DbEngine::Hook => &hook::Hook,
    }
}

/// One engine's steps, each for one service; the tasks call them in their order and say which
/// service failed. Every step is the driver's to write (none has a default): an engine without
/// a step says so in its own code.
pub trait Driver: Sync {
    /// The backup's dumps of one service (its server running, its user resolved), each checked
    /// complete: (entry, file) in archive order, and what the metadata says of them.
    fn dump(&self, ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<dump::Dumped>;
    /// Settles what restores that died left in the service.
    fn recover(&self, ctx: &Ctx, db: &DbRestore) -> Result<()>;
    /// Before anything live changes: the dumps loaded beside the live databases (returned, to
    /// swap in) or proven away from them. On an error, what it staged is dropped.
    fn stage(&self, ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<Vec<StagedDb>>;
    /// Drops what [`Driver::stage`] staged (best effort): the live databases stay as they are.
    fn unstage(&self, ctx: &Ctx, db: &DbRestore, staged: &[StagedDb]);
    /// The destructive part: the staged copies swapped in, or the databases reloaded from the
    /// dumps proven before. Returns the old copies to drop once the services are back.
    fn swap(
        &self,
        ctx: &Ctx,
        db: &DbRestore,
        staged: &[StagedDb],
        spooled: &BTreeMap<String, Spooled>,
    ) -> Result<Vec<String>>;
    /// After a way back that restored the safety backup: this restore's staged and old copies.
    fn drop_own(&self, ctx: &Ctx, db: &DbRestore) -> Result<()>;
    /// Drops the old copies [`Driver::swap`] returned (the services are healthy again).
    fn drop_old(&self, ctx: &Ctx, db: &DbRestore, old: &[String]) -> Result<()>;
    /// Drops and reloads every database directly (`--in-place`, and the way back).
    fn in_place(&self, ctx: &Ctx, verified: &Verified, db: &DbRestore, dir: &Path) -> Result<()>;
    /// `verify --deep`: proves the archive's dumps of one service load, away from the stack
    /// (a throwaway server), or says why it cannot.
    fn deep_check(&self, ctx: &Ctx, verified: &Verified, db: &DbInfo) -> Result<()>;
}

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
    /// SQL staging prepared to run once the copy has the live name (PostgreSQL: the database's
    /// recorded owner, privileges and settings), in memory; empty for none.
    pub after: String,
    /// The owner the copy is handed to, decided in staging (the archive's, when that role
    /// exists); None: the live database's.
    pub owner: Option<String>,
}

/// The spooled dump of `entry`, which the one pass or `in_place` copied out and checked.
pub fn find<'a>(spooled: &'a BTreeMap<String, Spooled>, entry: &str) -> Result<&'a Spooled> {
    spooled.get(entry).with_context(|| format!("the dump {entry} was not staged"))
}

/// Every dump of `info` (its globals entry first) copied out of the archive and checked, by entry.
pub fn spool_all(verified: &Verified, info: &DbInfo, dir: &Path) -> Result<BTreeMap<String, Spooled>> {
    let entries = info.globals_entry.iter().chain(info.databases.iter().map(|d| &d.entry));
    entries.map(|e| Ok((e.clone(), extract::spool_dump(verified, e, dir)?))).collect()
}

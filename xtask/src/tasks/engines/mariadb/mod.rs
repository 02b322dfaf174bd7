//! The MariaDB and MySQL driver (one, two flavours): dumps by `mariadb-dump` ([`dump`]) with
//! the clients of [`client`]; each dump proven in a throwaway server
//! ([`prove`]) before the live databases are reloaded in the swap ([`restore`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::dump::Dumped;
use super::{spool_all, DbRestore, DbSource, Driver, StagedDb};
use crate::archive::extract::{Spooled, Verified};
use crate::archive::DbInfo;
use crate::context::Ctx;
use crate::model::db::{self, Record};

pub mod client;
mod dump;
mod prove;
mod restore;

/// MariaDB or MySQL: the same steps; MySQL's clients have other names, no `--sandbox` and no
/// users dump.
pub struct My {
    pub record: &'static Record,
    /// The client that loads and queries (`mariadb`, `mysql`); the dump tool is the record's.
    pub client: &'static str,
    /// The loader takes `--sandbox` (no shell or file access: MariaDB's client only).
    pub sandbox: bool,
    /// Dumps need `--set-gtid-purged=OFF` (MySQL's mysqldump would write a server-wide
    /// `SET @@GLOBAL.GTID_PURGED` the grammar refuses).
    pub gtid_purged_off: bool,
}

pub const MARIADB: My = My { record: &db::mariadb::MARIADB, client: "mariadb", sandbox: true, gtid_purged_off: false };
pub const MYSQL: My = My { record: &db::mariadb::MYSQL, client: "mysql", sandbox: false, gtid_purged_off: true };

impl Driver for My {
    fn dump(&self, ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
        dump::dump(self, ctx, src, dir)
    }

    fn recover(&self, ctx: &Ctx, db: &DbRestore) -> Result<()> {
        restore::recover(self, ctx, db)
    }

    fn stage(&self, ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<Vec<StagedDb>> {
        restore::prove(self, ctx, db, spooled).map(|()| Vec::new())
    }

    /// Nothing was staged: the proof's throwaway server is gone already.
    fn unstage(&self, _: &Ctx, _: &DbRestore, _: &[StagedDb]) {}

    fn swap(
        &self,
        ctx: &Ctx,
        db: &DbRestore,
        _: &[StagedDb],
        spooled: &BTreeMap<String, Spooled>,
    ) -> Result<Vec<String>> {
        restore::reload(self, ctx, db, spooled).map(|()| Vec::new())
    }

    /// No copies: the swap reloads the live databases.
    fn drop_own(&self, _: &Ctx, _: &DbRestore) -> Result<()> {
        Ok(())
    }

    fn drop_old(&self, _: &Ctx, _: &DbRestore, _: &[String]) -> Result<()> {
        Ok(())
    }

    fn in_place(&self, ctx: &Ctx, verified: &Verified, db: &DbRestore, dir: &Path) -> Result<()> {
        restore::reload(self, ctx, db, &spool_all(verified, &db.info, dir)?)
    }

    fn deep_check(&self, ctx: &Ctx, verified: &Verified, db: &DbInfo) -> Result<()> {
        prove::check(self, ctx, verified, db)
    }
}

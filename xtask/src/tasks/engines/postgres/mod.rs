//! The PostgreSQL driver: dumps by `pg_dump` ([`dump`]), a restore staged beside the live databases and
//! swapped in by renames ([`stage`], as the throwaway role of [`pgload`], the lines handed over
//! read by [`pglines`]), all through [`psql`]; `verify --deep` in a throwaway server ([`deep`]).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use super::dump::Dumped;
use super::{DbRestore, DbSource, Driver, StagedDb};
use crate::archive::extract::{Spooled, Verified};
use crate::archive::DbInfo;
use crate::context::Ctx;

mod dbprops;
mod deep;
mod dump;
mod pglines;
mod pgload;
mod psql;
mod stage;

pub struct Postgres;

impl Driver for Postgres {
    fn dump(&self, ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
        dump::dump(ctx, src, dir)
    }

    fn recover(&self, ctx: &Ctx, db: &DbRestore) -> Result<()> {
        stage::recover(ctx, db)
    }

    fn stage(&self, ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<Vec<StagedDb>> {
        stage::stage(ctx, db, spooled)
    }

    fn unstage(&self, ctx: &Ctx, db: &DbRestore, staged: &[StagedDb]) {
        stage::unstage(ctx, db, staged)
    }

    fn swap(
        &self,
        ctx: &Ctx,
        db: &DbRestore,
        staged: &[StagedDb],
        spooled: &BTreeMap<String, Spooled>,
    ) -> Result<Vec<String>> {
        stage::swap(ctx, db, staged, spooled)
    }

    fn drop_own(&self, ctx: &Ctx, db: &DbRestore) -> Result<()> {
        stage::drop_own(ctx, db)
    }

    fn drop_old(&self, ctx: &Ctx, db: &DbRestore, old: &[String]) -> Result<()> {
        stage::drop_old(ctx, db, old)
    }

    fn in_place(&self, ctx: &Ctx, verified: &Verified, db: &DbRestore, dir: &Path) -> Result<()> {
        stage::in_place(ctx, verified, db, dir)
    }

    fn deep_check(&self, ctx: &Ctx, verified: &Verified, db: &DbInfo) -> Result<()> {
        deep::check(ctx, verified, db)
    }
}

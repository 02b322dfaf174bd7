//! Restoring the database services, each by its engine's driver (`tasks/engines/`), in the
//! order the restore calls these steps: `recover` (leftovers of a restore that died), `stage`
//! (before anything live is touched), `swap` (the short destructive part), `drop_old` (once the
//! services are back), and `in_place` (`--in-place` and the way back). Each step here runs one
//! driver step per service and says which service failed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::archive::extract::{Spooled, Verified};
use crate::context::Ctx;
use crate::tasks::engines;
pub use crate::tasks::engines::{DbRestore, StagedDb};

/// What staging left to swap in, per service (in plan order).
pub type Staged = Vec<Vec<StagedDb>>;

/// Settles what restores that died left in each service.
pub fn recover(ctx: &Ctx, dbs: &[DbRestore]) -> Result<()> {
    for db in dbs {
        engines::of(db.login.engine).recover(ctx, db)?;
    }
    Ok(())
}

/// Before anything live changes: each service's dumps staged by its driver (PostgreSQL loads
/// beside the live databases, MariaDB proves each dump in a scratch server). On an error, what
/// was staged is dropped.
pub fn stage(ctx: &Ctx, dbs: &[DbRestore], spooled: &BTreeMap<String, Spooled>) -> Result<Staged> {
    let mut staged: Staged = Vec::new();
    for db in dbs {
        let step = engines::of(db.login.engine).stage(ctx, db, spooled);
        match step.with_context(|| format!("stage the databases of service {}", db.login.service)) {
            Ok(s) => staged.push(s),
            Err(e) => {
                unstage(ctx, dbs, &staged);
                return Err(e);
            }
        }
    }
    Ok(staged)
}

/// Drops staged copies (best effort): the live databases stay as they are.
pub fn unstage(ctx: &Ctx, dbs: &[DbRestore], staged: &Staged) {
    for (db, s) in dbs.iter().zip(staged) {
        engines::of(db.login.engine).unstage(ctx, db, s);
    }
}

/// The destructive part: PostgreSQL's staged copies renamed in, MariaDB's databases and hooks
/// reloaded from the dumps proven before. Returns the old copies to drop later, per service.
pub fn swap(
    ctx: &Ctx,
    dbs: &[DbRestore],
    staged: &Staged,
    spooled: &BTreeMap<String, Spooled>,
) -> Result<Vec<Vec<String>>> {
    let mut old = Vec::new();
    for (db, s) in dbs.iter().zip(staged) {
        let done = engines::of(db.login.engine).swap(ctx, db, s, spooled);
        old.push(done.with_context(|| format!("restore the databases of service {}", db.login.service))?);
    }
    Ok(old)
}

/// After a way back that restored the safety backup: this restore's staged and old copies go.
pub fn drop_own(ctx: &Ctx, dbs: &[DbRestore]) -> Result<()> {
    for db in dbs {
        engines::of(db.login.engine).drop_own(ctx, db)?;
    }
    Ok(())
}

/// Drops the old copies after a successful swap (the services are healthy again).
pub fn drop_old(ctx: &Ctx, dbs: &[DbRestore], old: &[Vec<String>]) -> Result<()> {
    for (db, o) in dbs.iter().zip(old).filter(|(_, o)| !o.is_empty()) {
        engines::of(db.login.engine).drop_old(ctx, db, o)?;
    }
    Ok(())
}

/// Drops and reloads every database directly (`--in-place`, and the way back).
pub fn in_place(ctx: &Ctx, verified: &Verified, dbs: &[DbRestore], dir: &Path) -> Result<()> {
    for db in dbs {
        let what = format!("restore the databases of service {}", db.login.service);
        engines::of(db.login.engine).in_place(ctx, verified, db, dir).context(what)?;
    }
    Ok(())
}

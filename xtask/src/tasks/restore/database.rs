//! Restoring the database services, each by its engine, behind one set of steps the restore
//! calls in order: `recover` (leftovers of a restore that died), `stage` (before anything live is
//! touched), `swap` (the short destructive part), `drop_old` (once the services are back), and
//! `in_place` (`--in-place` and the way back). PostgreSQL ([`postgres`]) loads beside the live
//! database and swaps by renames; MariaDB ([`mariadb`]) proves each dump by loading it into a
//! scratch database first, then reloads the live one in the swap; a hook ([`hook`]) pipes its
//! dump into the service's `xtask.load` command in the swap.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::archive::extract::{self, Spooled, Verified};
use crate::archive::DbEngine;
use crate::context::Ctx;
pub use crate::tasks::engines::{find, DbRestore, StagedDb};

mod hook;
mod mariadb;
mod pglines;
mod pgload;
mod postgres;

/// What staging left to swap in, per service (in plan order).
pub type Staged = Vec<Vec<StagedDb>>;

/// Settles what restores that died left in each service.
pub fn recover(ctx: &Ctx, dbs: &[DbRestore]) -> Result<()> {
    for db in dbs {
        match db.login.engine {
            DbEngine::Postgres => postgres::recover(ctx, db)?,
            DbEngine::Mariadb | DbEngine::Mysql => mariadb::recover(ctx, db)?,
            DbEngine::Hook => {}
        }
    }
    Ok(())
}

/// Before anything live changes: PostgreSQL loads beside the live databases, MariaDB proves
/// each dump in a scratch database. On an error, what was staged is dropped.
pub fn stage(ctx: &Ctx, dbs: &[DbRestore], spooled: &BTreeMap<String, Spooled>) -> Result<Staged> {
    let mut staged: Staged = Vec::new();
    for db in dbs {
        let step = match db.login.engine {
            DbEngine::Postgres => postgres::stage(ctx, db, spooled),
            DbEngine::Mariadb | DbEngine::Mysql => mariadb::prove(ctx, db, spooled).map(|()| Vec::new()),
            DbEngine::Hook => Ok(Vec::new()),
        };
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
        if db.login.engine == DbEngine::Postgres {
            postgres::unstage(ctx, db, s);
        }
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
        let done = match db.login.engine {
            DbEngine::Postgres => postgres::swap(ctx, db, s, spooled),
            DbEngine::Mariadb | DbEngine::Mysql => mariadb::reload(ctx, db, spooled).map(|()| Vec::new()),
            DbEngine::Hook => hook::load(ctx, db, spooled).map(|()| Vec::new()),
        };
        old.push(done.with_context(|| format!("restore the databases of service {}", db.login.service))?);
    }
    Ok(old)
}

/// After a way back that restored the safety backup: this restore's staged and old copies go.
pub fn drop_own(ctx: &Ctx, dbs: &[DbRestore]) -> Result<()> {
    for db in dbs.iter().filter(|db| db.login.engine == DbEngine::Postgres) {
        postgres::drop_own(ctx, db)?;
    }
    Ok(())
}

/// Drops the old copies after a successful swap (the services are healthy again).
pub fn drop_old(ctx: &Ctx, dbs: &[DbRestore], old: &[Vec<String>]) -> Result<()> {
    for (db, o) in dbs.iter().zip(old).filter(|(_, o)| !o.is_empty()) {
        postgres::drop_old(ctx, db, o)?;
    }
    Ok(())
}

/// Drops and reloads every database directly (`--in-place`, and the way back).
pub fn in_place(ctx: &Ctx, verified: &Verified, dbs: &[DbRestore], dir: &Path) -> Result<()> {
    for db in dbs {
        let what = format!("restore the databases of service {}", db.login.service);
        match db.login.engine {
            DbEngine::Postgres => postgres::in_place(ctx, verified, db, dir),
            DbEngine::Mariadb | DbEngine::Mysql | DbEngine::Hook => {
                let entries = db.info.globals_entry.iter().chain(db.info.databases.iter().map(|d| &d.entry));
                let spooled: BTreeMap<String, Spooled> =
                    entries.map(|e| Ok((e.clone(), extract::spool_dump(verified, e, dir)?))).collect::<Result<_>>()?;
                match db.login.engine {
                    DbEngine::Hook => hook::load(ctx, db, &spooled),
                    _ => mariadb::reload(ctx, db, &spooled),
                }
            }
        }
        .context(what)?;
    }
    Ok(())
}

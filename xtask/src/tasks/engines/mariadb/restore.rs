//! Restoring a MariaDB/MySQL service. Each dump is proven before anything live changes: loaded
//! into a throwaway server of the service's image with no network (`tasks::deep::mariadb`),
//! row counts compared, so whatever SQL a dump holds, proving it never reaches the live server.
//! In the swap each live database is dropped, recreated and loaded again, counts compared (a
//! failure there takes the restore's way back through the safety backup); then users and grants
//! (`CREATE USER IF NOT EXISTS`, `GRANT`). The client runs with `--binary-mode --sandbox
//! --local-infile=0`: SQL only, no client commands, no files. Database names are checked names
//! (no backtick) and stand quoted in backticks.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::My;
use crate::archive::extract::{self, Spooled};
use crate::archive::DbDump;
use crate::context::Ctx;
use crate::signals;
use crate::tasks::engines::{find, DbRestore};

fn sql(my: &My, ctx: &Ctx, db: &DbRestore, statement: &str) -> Result<Vec<String>> {
    my.query(&db.login, ctx.docker()?, &ctx.stack, statement)
}

fn load(my: &My, ctx: &Ctx, db: &DbRestore, database: Option<&str>, dump: &Spooled, entry: &str) -> Result<()> {
    let docker = ctx.docker()?;
    let cmd = my.load(&db.login, docker, &ctx.stack, database);
    extract::pipe_file(docker, dump, &cmd).with_context(|| format!("load {entry} (stopped at the first SQL error)"))
}

fn recreate(my: &My, ctx: &Ctx, db: &DbRestore, name: &str) -> Result<()> {
    sql(my, ctx, db, &format!("DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`")).map(drop)
}

/// Every table's rows in `database` equal the archive's counts (tables passed the grammar:
/// `` `name` `` without a backtick inside).
fn check_counts(my: &My, ctx: &Ctx, db: &DbRestore, database: &str, d: &DbDump) -> Result<()> {
    for (table, rows) in &d.tables {
        let got = sql(my, ctx, db, &format!("SELECT COUNT(*) FROM `{database}`.{table}"))?.concat();
        if got != rows.to_string() {
            bail!("database {}: table {table} has {got} rows after loading, the archive says {rows}", d.name);
        }
    }
    Ok(())
}

fn apply_users(my: &My, ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<()> {
    let Some(entry) = &db.info.globals_entry else { return Ok(()) };
    ctx.ui.step(&format!("restore the users and grants of service {}", db.login.service));
    load(my, ctx, db, None, find(spooled, entry)?, entry)
}

/// Loads the dumps (and the users dump) into a throwaway server of the service's image and
/// compares the row counts; the live server is not asked anything.
pub fn prove(my: &My, ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<()> {
    signals::check()?;
    ctx.ui.step(&format!("prove the dumps of {} in a throwaway server, away from the live one", db.login.service));
    super::prove::prove(my, ctx, &db.info, spooled)
        .with_context(|| format!("prove the dumps of {} (nothing live was changed)", db.login.service))
}

/// Every database dropped, recreated and loaded, counts compared; then users and grants. Last,
/// because `GRANT … IDENTIFIED BY PASSWORD` sets the archived password, root's too: had it
/// changed since the backup, the tool's own login would fail for the rest of the restore.
pub fn reload(my: &My, ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<()> {
    for d in &db.info.databases {
        ctx.ui.step(&format!("drop and recreate database {} of {}, then load its dump", d.name, db.login.service));
        recreate(my, ctx, db, &d.name)?;
        load(my, ctx, db, Some(&d.name), find(spooled, &d.entry)?, &d.entry)?;
    }
    // Counted once every dump is in: a dump that reached into another one shows there.
    for d in &db.info.databases {
        check_counts(my, ctx, db, &d.name, d)?;
    }
    apply_users(my, ctx, db, spooled)
}

/// Scratch databases left by a restore that died (its process gone) are dropped.
pub fn recover(my: &My, ctx: &Ctx, db: &DbRestore) -> Result<()> {
    let rows = sql(
        my,
        ctx,
        db,
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'xtask\\_new\\_%'",
    )?;
    for name in rows {
        let pid = name.split('_').nth(2).unwrap_or_default();
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        ctx.ui.step(&format!("drop {name}, left by an interrupted restore"));
        sql(my, ctx, db, &format!("DROP DATABASE IF EXISTS `{name}`"))?;
    }
    Ok(())
}

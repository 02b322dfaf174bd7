//! Restoring a MariaDB/MySQL service. Each dump is proven before anything live changes: loaded
//! into a throwaway server of the service's image with no network (`tasks::deep::mariadb`),
//! row counts compared, so whatever SQL a dump holds, proving it never reaches the live server.
//! In the swap each live database is dropped, recreated and loaded again, counts compared (a
//! failure there takes the restore's way back through the safety backup); then users and grants
//! (`CREATE USER IF NOT EXISTS`, `GRANT`). The client runs with `--binary-mode --sandbox
//! --local-infile=0`: SQL only, no client commands, no files. Database names are checked names
//! (no backtick) and stand quoted in backticks.

use std::collections::BTreeMap;
use std::io::{Read, Write};

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

fn recreate(my: &My, ctx: &Ctx, db: &DbRestore, d: &DbDump) -> Result<()> {
    sql(my, ctx, db, &format!("DROP DATABASE IF EXISTS `{}`; {}", d.name, super::client::create_database(d))).map(drop)
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
    let users = find(spooled, entry)?;
    let held = proxies_held(my, ctx, db)?;
    let mut text = Vec::new();
    users.reader().read_to_end(&mut text).with_context(|| format!("read {entry}"))?;
    let (kept, dropped) = without_lines(&text, &held);
    if dropped == 0 {
        return load(my, ctx, db, None, users, entry);
    }
    let filtered = users.sibling()?;
    filtered
        .writer()
        .write_all(&kept)
        .and_then(|()| filtered.writer().sync_all())
        .context("write the users to load")?;
    load(my, ctx, db, None, &filtered, entry)
}

/// The `GRANT PROXY` lines the live server shows already (`SHOW GRANTS`, as a users dump
/// writes them, with their `;`). Replayed, such a line adds a second row to
/// `mysql.proxies_priv` (the server's own row names the proxied host `''`, the line `'%'`),
/// and every later backup would hold the line twice.
fn proxies_held(my: &My, ctx: &Ctx, db: &DbRestore) -> Result<Vec<String>> {
    let accounts = sql(my, ctx, db, "SELECT DISTINCT CONCAT(QUOTE(User), '@', QUOTE(Host)) FROM mysql.proxies_priv")?;
    let mut held = Vec::new();
    for account in accounts {
        // QUOTE() made it: a quoted string, '@', a quoted string. An account the batch output
        // escaped (a backslash in its name) fails here: its lines are then loaded as they are.
        let grants = sql(my, ctx, db, &format!("SHOW GRANTS FOR {account}")).unwrap_or_default();
        held.extend(grants.into_iter().filter(|g| g.starts_with("GRANT PROXY ON ")).map(|g| format!("{g};")));
    }
    Ok(held)
}

/// `text` without the lines equal to one of `lines` (a whole line, its `;` included), and how
/// many it left out. Only removes: what is loaded is the dump's own text or less.
fn without_lines(text: &[u8], lines: &[String]) -> (Vec<u8>, usize) {
    let (mut kept, mut dropped) = (Vec::with_capacity(text.len()), 0);
    for line in text.split_inclusive(|b| *b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        if lines.iter().any(|l| l.as_bytes() == bare) {
            dropped += 1;
        } else {
            kept.extend_from_slice(line);
        }
    }
    (kept, dropped)
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
        recreate(my, ctx, db, d)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_grant_the_server_holds_is_not_replayed_again() {
        let dump = b"CREATE USER IF NOT EXISTS `root`@`localhost`;\n\
            GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION;\n\
            GRANT PROXY ON 'app'@'%' TO 'root'@'localhost';\n-- Dump completed\n";
        let held = ["GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION;".to_string()];
        let (kept, dropped) = without_lines(dump, &held);
        assert_eq!(dropped, 1);
        let kept = String::from_utf8(kept).unwrap();
        assert!(!kept.contains("''@'%'") && kept.contains("'app'@'%'") && kept.ends_with("completed\n"), "{kept}");
        assert_eq!(without_lines(dump, &[]).0, dump.to_vec());
    }
}

//! Restoring a PostgreSQL service's databases. Staged (the default): each dump is loaded into a
//! new database beside the live one (`xtask_new_PID_N`, its comment naming the database it stands
//! for) as a throwaway role that owns only that copy ([`pgload`]), its row counts checked, and
//! only then are the databases swapped by renames (connections to the live one refused and ended
//! first); the old one (`xtask_old_PID_N`) is dropped once the services are back. The live
//! database is never dropped before the new one is complete; a load that fails drops only the
//! staged copy. Leftovers of a restore that died are settled by the
//! next one: a staged copy never swapped in is dropped; an old copy whose live name exists is
//! dropped, one whose live name is gone is renamed back. `--in-place` and the way back drop and
//! reload directly. Roles (`globals.sql`) are cluster-wide: before the swap only the roles the
//! staged loads need that do not exist yet are created, bare (`NOLOGIN`, no attribute, no
//! password), so nothing of the live roles changes while staging; the roles dump itself is
//! applied in the swap (and before the loads in `--in-place` and the way back).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::psql::Psql;
use super::{dbprops, pgload};
use crate::archive::extract::{self, Spooled, Verified};
use crate::context::Ctx;
use crate::signals;
use crate::tasks::engines::{DbRestore, StagedDb};

/// Drops database `:s` if it exists, even when its owner made it a template (a staged copy's
/// owner is the restricted role: it could, to make the copy stay).
const DROP_DB: &str = "SELECT pg_catalog.format('ALTER DATABASE %I WITH IS_TEMPLATE false', datname) \
    FROM pg_catalog.pg_database WHERE datname = :'s' AND datistemplate \\gexec\n\
    DROP DATABASE IF EXISTS :\"s\" WITH (FORCE);\n";

/// Swaps staged copy `:s` in for live database `:d` (if there is one: moved aside to `:o`,
/// marked `:m` first), giving `:d` the live one's comment `:c` (none when empty).
const SWAP: &str = "SELECT pg_catalog.format('COMMENT ON DATABASE %I IS %L', :'d', :'m') FROM pg_catalog.pg_database \
    WHERE datname = :'d' \\gexec\n\
    SELECT pg_catalog.format('ALTER DATABASE %I WITH ALLOW_CONNECTIONS false', :'d') FROM pg_catalog.pg_database \
    WHERE datname = :'d' \\gexec\n\
    SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity \
    WHERE datname = :'d' AND pid <> pg_catalog.pg_backend_pid();\n\
    SELECT pg_catalog.format('ALTER DATABASE %I RENAME TO %I', :'d', :'o') FROM pg_catalog.pg_database \
    WHERE datname = :'d' \\gexec\n\
    ALTER DATABASE :\"s\" RENAME TO :\"d\";\n\
    SELECT pg_catalog.format('COMMENT ON DATABASE %I IS %L', :'d', NULLIF(:'c', '')) \\gexec\n";

/// Opens database `:d`, a staged copy just swapped in (closed to everyone until now): it
/// takes connections and has the privileges of a new database.
const OPEN_DB: &str = "UPDATE pg_catalog.pg_database SET datacl = NULL WHERE datname = :'d';\n\
    ALTER DATABASE :\"d\" WITH ALLOW_CONNECTIONS true;\n";

/// Applies the roles. Ones that exist already (the superuser) make statements fail harmlessly;
/// the roles dump holds no COPY (verify checks), so no data line can become a command.
fn apply_roles(ctx: &Ctx, db: &DbRestore, globals: &Spooled) -> Result<()> {
    ctx.ui.step(&format!("restore the roles of service {}", db.login.service));
    let psql = Psql { ctx, db };
    extract::pipe_file(ctx.docker()?, globals, &psql.cmd("template1", &[])?).context("restore roles")
}

/// Every dump copied out of the archive and checked, and the roles applied.
fn spool_and_roles(ctx: &Ctx, verified: &Verified, db: &DbRestore, dir: &Path) -> Result<Vec<Spooled>> {
    let globals = extract::spool_dump(verified, db.globals_entry()?, dir)?;
    let dumps =
        db.info.databases.iter().map(|d| extract::spool_dump(verified, &d.entry, dir)).collect::<Result<_>>()?;
    apply_roles(ctx, db, &globals)?;
    Ok(dumps)
}

/// Drops and reloads each database directly (`--in-place`, and the way back).
pub fn in_place(ctx: &Ctx, verified: &Verified, db: &DbRestore, dir: &Path) -> Result<()> {
    let dumps = spool_and_roles(ctx, verified, db, dir)?;
    let psql = Psql { ctx, db };
    for (d, dump) in db.info.databases.iter().zip(&dumps) {
        signals::check()?;
        ctx.ui.step(&format!("drop and recreate database {} of {}, then load its dump", d.name, db.login.service));
        let sql = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'d' AND pid <> pg_backend_pid();\n\
                   DROP DATABASE IF EXISTS :\"d\" WITH (FORCE);\nCREATE DATABASE :\"d\";\n";
        psql.run("template1", sql, &[("d", &d.name)]).with_context(|| format!("recreate database {}", d.name))?;
        psql.load(&d.name, dump, &d.entry)?;
        psql.check_counts(&d.name, d)?;
        if let Some(p) = &d.properties {
            dbprops::apply(&psql, &d.name, p)?;
        }
    }
    Ok(())
}

/// The roles `CREATE ROLE` lines of a roles dump name (`CREATE ROLE name;` or
/// `CREATE ROLE "name";`, as pg_dumpall writes them); other lines are not read here.
pub fn created_roles(globals: &str) -> Vec<String> {
    let mut roles = Vec::new();
    for line in globals.lines() {
        let Some(name) = line.strip_prefix("CREATE ROLE ").and_then(|r| r.strip_suffix(';')) else { continue };
        let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
            Some(quoted) if !quoted.replace("\"\"", "").contains('"') => quoted.replace("\"\"", "\""),
            Some(_) => continue,
            None if name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') => name.to_string(),
            None => continue,
        };
        if !name.is_empty() && name.len() <= 63 {
            roles.push(name);
        }
    }
    roles
}

/// Creates, bare (`NOLOGIN`, nothing else), the roles of the roles dump that do not exist yet,
/// so the staged loads can give objects to them; every live role stays as it is until the swap.
/// Returns the roles it created.
fn create_missing_roles(ctx: &Ctx, db: &DbRestore, globals: &Spooled) -> Result<Vec<String>> {
    let text = globals.read_to_string().context("read the roles dump")?;
    let psql = Psql { ctx, db };
    let existing = psql.rows("template1", "SELECT rolname FROM pg_roles")?;
    let mut created = Vec::new();
    for role in created_roles(&text).into_iter().filter(|r| !existing.contains(r)) {
        // The name goes in as a psql variable, quoted by psql: never into the SQL text.
        let sql = "SELECT format('CREATE ROLE %I NOLOGIN', :'r') \
                   WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'r') \\gexec\n";
        psql.run("template1", sql, &[("r", &role)]).with_context(|| format!("create the missing role {role}"))?;
        created.push(role);
    }
    Ok(created)
}

/// Drops the bare roles staging created (best effort), after a failed staging.
fn drop_roles(ctx: &Ctx, db: &DbRestore, roles: &[String]) {
    let psql = Psql { ctx, db };
    for role in roles {
        if let Err(e) = psql.run("template1", "DROP ROLE IF EXISTS :\"r\";\n", &[("r", role)]) {
            eprintln!("warning: could not drop the role {role} this restore created ({e:#})");
        }
    }
}

/// Loads every dump into a new database beside the live one, as a role that owns only those
/// ([`pgload`], which says in which order and why), and checks its row counts; on an error the
/// staged copies loaded so far and the roles created for them are dropped, and the live
/// databases and roles are untouched.
pub fn stage(ctx: &Ctx, db: &DbRestore, spooled: &BTreeMap<String, Spooled>) -> Result<Vec<StagedDb>> {
    let find = |entry: &str| spooled.get(entry).with_context(|| format!("the dump {entry} was not staged"));
    let dumps: Vec<&Spooled> = db.info.databases.iter().map(|d| find(&d.entry)).collect::<Result<_>>()?;
    let created = create_missing_roles(ctx, db, find(db.globals_entry()?)?)?;
    let mut staged = Vec::new();
    let result = pgload::Loader::create(ctx, db).and_then(|loader| {
        let loaded = stage_with(ctx, db, &loader, &dumps, &mut staged);
        // On success the role stays (NOLOGIN, locked out) until the swap hands its copies over;
        // on an error it is locked out, then dropped with its copies.
        if loaded.is_err() {
            if let Err(e) = loader.lock_out(ctx, db) {
                eprintln!("warning: {e:#}");
            }
            unstage(ctx, db, &staged);
        }
        loaded
    });
    match result {
        Ok(()) => Ok(staged),
        Err(e) => {
            drop_roles(ctx, db, &created);
            Err(e)
        }
    }
}

/// The steps of [`pgload`] over every dump; each staged database (`xtask_new_PID_N`) is noted
/// in `staged` as soon as it exists.
fn stage_with(
    ctx: &Ctx,
    db: &DbRestore,
    loader: &pgload::Loader,
    dumps: &[&Spooled],
    staged: &mut Vec<StagedDb>,
) -> Result<()> {
    let psql = Psql { ctx, db };
    let mut prepared = Vec::new();
    for (i, (d, dump)) in db.info.databases.iter().zip(dumps).enumerate() {
        let new = format!("xtask_new_{}_{i}", std::process::id());
        let sql = format!("{DROP_DB}CREATE DATABASE :\"s\" OWNER :\"l\";\nCOMMENT ON DATABASE :\"s\" IS :'c';\n");
        let comment = format!("xtask restore of {}", d.name);
        psql.run("template1", &sql, &[("s", &new), ("c", &comment), ("l", &loader.role)])?;
        let handover = String::new();
        staged.push(StagedDb { live: d.name.clone(), new: new.clone(), handover, after: String::new(), owner: None });
        prepared.push(pgload::Loader::prepare(ctx, db, d, &new, dump)?);
    }
    for (d, (StagedDb { new, .. }, (filtered, _))) in db.info.databases.iter().zip(staged.iter().zip(&prepared)) {
        signals::check()?;
        ctx.ui.step(&format!("load database {} of {} into {new}, beside the live one", d.name, db.login.service));
        loader.load(ctx, db, d, new, filtered)?;
    }
    loader.lock_out(ctx, db)?;
    for (d, (s, (_, held))) in db.info.databases.iter().zip(staged.iter_mut().zip(&prepared)) {
        pgload::settle(&psql, &s.new)?;
        s.handover = loader.prepare_handover(ctx, db, d, &s.new, held)?;
        // Decided now, with every role the loads needed in place, so the swap runs it in the
        // same session as its renames (no more time with the services stopped).
        if let Some(p) = &d.properties {
            let props = dbprops::prepare(&psql, &d.name, p)?;
            (s.after, s.owner) = (props.script, props.owner);
        }
    }
    Ok(())
}

/// Drops staged copies and the role that loaded them (best effort): the live databases stay as
/// they are.
pub fn unstage(ctx: &Ctx, db: &DbRestore, staged: &[StagedDb]) {
    let psql = Psql { ctx, db };
    for StagedDb { new, .. } in staged {
        if let Err(e) = psql.run("template1", DROP_DB, &[("s", new)]) {
            eprintln!("warning: could not drop the staged database {new} ({e:#}); the next restore drops it");
        }
    }
    if let Err(e) = pgload::Loader::of_this_process().drop(ctx, db) {
        eprintln!("warning: {e:#}; the next restore drops it");
    }
}

/// Applies the roles dump, then swaps each staged database in by renames; returns the old
/// copies to drop once the services are back.
pub fn swap(
    ctx: &Ctx,
    db: &DbRestore,
    staged: &[StagedDb],
    spooled: &BTreeMap<String, Spooled>,
) -> Result<Vec<String>> {
    let globals = spooled.get(db.globals_entry()?).context("the roles dump was not staged")?;
    apply_roles(ctx, db, globals)?;
    let psql = Psql { ctx, db };
    let loader = pgload::Loader::of_this_process();
    let mut old = Vec::new();
    for (i, s) in staged.iter().enumerate() {
        let (live, new) = (&s.live, &s.new);
        ctx.ui.step(&format!("swap database {live} for the restored copy"));
        let Some(d) = db.info.databases.iter().find(|d| &d.name == live) else {
            bail!("a staged database the archive lacks: {live}");
        };
        loader.hand_over(ctx, db, s)?;
        // The live database's comment goes to the copy that replaces it, unless the archive
        // recorded the database's own (given below); the one moved aside is marked first, so
        // that a run killed between the renames knows what it was.
        // `live` is a checked name (no quote): it can stand in a literal. No live database: none.
        let sql = format!("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{live}'");
        let comment = match &d.properties {
            Some(_) => String::new(),
            None => psql.rows("template1", &sql)?.join("\n"),
        };
        let mark = format!("xtask restore of {live}");
        let aside = format!("xtask_old_{}_{i}", std::process::id());
        // Then, in the same session, the database's recorded owner, privileges and settings.
        let sql = format!("{SWAP}{OPEN_DB}{}", s.after);
        let vars = [("d", live.as_str()), ("s", new.as_str()), ("o", aside.as_str()), ("m", &mark), ("c", &comment)];
        psql.run("template1", &sql, &vars).with_context(|| format!("swap database {live}"))?;
        if psql.exists(&aside)? {
            old.push(aside);
        }
    }
    loader.drop(ctx, db)?;
    Ok(old)
}

/// Drops the old copies after a successful swap.
pub fn drop_old(ctx: &Ctx, db: &DbRestore, old: &[String]) -> Result<()> {
    let psql = Psql { ctx, db };
    for o in old {
        psql.run("template1", DROP_DB, &[("s", o)]).with_context(|| format!("drop the old copy {o}"))?;
    }
    Ok(())
}

/// Settles what restores that died left: staged copies dropped, old copies dropped when their
/// live name exists, renamed back when it does not.
pub fn recover(ctx: &Ctx, db: &DbRestore) -> Result<()> {
    let psql = Psql { ctx, db };
    let sql = "SELECT d.datname || '|' || coalesce(shobj_description(d.oid, 'pg_database'), '') FROM pg_database d \
               WHERE d.datname ~ '^xtask_(new|old)_[0-9]+_[0-9]+$'";
    for row in psql.rows("template1", sql)? {
        let Some((name, comment)) = row.split_once('|') else { continue };
        let pid = name.split('_').nth(2).unwrap_or_default();
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let live = comment.strip_prefix("xtask restore of ").unwrap_or_default();
        if name.starts_with("xtask_old_") && crate::archive::grammar::is_db_name(live) && !psql.exists(live)? {
            ctx.ui.step(&format!("rename {name} back to {live}: an interrupted restore had moved it aside"));
            psql.run("template1", "ALTER DATABASE :\"o\" RENAME TO :\"d\";\n", &[("o", name), ("d", live)])?;
            psql.run("template1", "ALTER DATABASE :\"d\" WITH ALLOW_CONNECTIONS true;\n", &[("d", live)])?;
        } else {
            ctx.ui.step(&format!("drop {name}, left by an interrupted restore"));
            psql.run("template1", DROP_DB, &[("s", name)])?;
        }
    }
    open_marked(&psql)?;
    pgload::drop_stale(&psql)
}

/// A live database that refuses connections and still carries the mark a swap puts on it
/// before closing it (`xtask restore of` its own name): a swap was cut off before its renames.
/// It holds the live data: it takes connections again.
fn open_marked(psql: &Psql) -> Result<()> {
    let sql = "SELECT datname FROM pg_database WHERE datname !~ '^xtask_' AND NOT datallowconn \
               AND shobj_description(oid, 'pg_database') = 'xtask restore of ' || datname";
    for name in psql.rows("template1", sql)? {
        psql.ctx.ui.step(&format!("open database {name} again: an interrupted restore had closed it"));
        let sql = "ALTER DATABASE :\"d\" WITH ALLOW_CONNECTIONS true;\nCOMMENT ON DATABASE :\"d\" IS NULL;\n";
        psql.run("template1", sql, &[("d", &name)])?;
    }
    Ok(())
}

/// After this process's own way back restored the safety backup: its staged and old copies
/// (`xtask_(new|old)_PID_N`) are garbage, the live databases hold the state from before.
pub fn drop_own(ctx: &Ctx, db: &DbRestore) -> Result<()> {
    let psql = Psql { ctx, db };
    // Only digits of our own: the pattern can stand in a literal.
    let sql =
        format!("SELECT datname FROM pg_database WHERE datname ~ '^xtask_(new|old)_{}_[0-9]+$'", std::process::id());
    for name in psql.rows("template1", &sql)? {
        psql.run("template1", DROP_DB, &[("s", &name)])?;
    }
    pgload::Loader::of_this_process().drop(ctx, db)
}

#[cfg(test)]
mod tests {
    use super::created_roles;

    #[test]
    fn the_roles_a_roles_dump_creates_are_read_strictly() {
        let globals = "SET standard_conforming_strings = on;\nCREATE ROLE app;\nALTER ROLE app WITH SUPERUSER;\n\
                       CREATE ROLE \"Odd \"\"one\"\"\";\nCREATE ROLE bad\"name;\nCREATE ROLE \"x\"\"; DROP\";\n  CREATE ROLE indented;\n";
        assert_eq!(created_roles(globals), ["app", "Odd \"one\"", "x\"; DROP"]);
    }
}

//! The role a staged PostgreSQL load runs as. A dump from an archive is SQL its author chose,
//! and no scanner can tell every statement that runs code (a function called by `CREATE TABLE
//! … AS`, an index expression, a column default): so a staged load never runs as the stack's
//! user, often a superuser. It runs as a throwaway role `xtask_load_PID`, made for it: LOGIN
//! only while a load opens its one session (then NOLOGIN again before the dump is sent), and
//! nothing else (no superuser, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS; member of no
//! role but the implicit `pg_database_owner` of its own copies). It owns the staged databases
//! and nothing else, so whatever a dump does, it does as the owner of those copies.
//!
//! The order keeps the stack's user away from anything the role's code could still do:
//! 1. every staged database is made (owned by the role) and the extensions the dumps create
//!    that the live database already has in `public` are created in it, by the stack's user,
//!    before any dump is loaded (an archive cannot bring in an extension only a superuser may
//!    create: the error says how to add it to the live database);
//! 2. the dumps are loaded by the role, minus the lines [`pglines`] holds back;
//! 3. the role is locked out: NOLOGIN, every session of it ended (also one a dump opened to
//!    itself through dblink to outlive its load), waited for;
//! 4. each copy is settled by the stack's user from `template1`: not a template, connections
//!    allowed, no connection limit, no settings, default privileges on the database (what a
//!    dump set on its own database never reaches the swap);
//! 5. row counts are checked by the stack's user (plain tables only, `search_path` pinned to
//!    `pg_catalog`, so no function of the dump is called), and the handover is decided: the
//!    held-back lines whose object the role owns (the dump made it), looked up before any is
//!    replayed. The copies stay the role's until the swap: whatever of the dump still runs
//!    meanwhile (autovacuum analyzes as a table's owner, evaluating its index expressions)
//!    runs as the role;
//! 6. in the swap, just before each copy is renamed in, the stack's user replays those
//!    ownership lines, reassigns everything else the role owns to the database's owner (the
//!    archive's when that role exists, else the live database's, else the stack's user), replays the privilege lines as the owners would
//!    have issued them, and gives the copy that owner; the role is dropped after the swap.
//!
//! Any failure locks the role out before the staged copies are dropped.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::pglines::{self, Held, HeldBack};
use super::psql::Psql;
use crate::archive::extract::Spooled;
use crate::archive::DbDump;
use crate::context::Ctx;
use crate::engine::db::Secret;
use crate::tasks::engines::{DbRestore, StagedDb};

/// The throwaway role a staged load runs as (see the module header), while it exists.
pub struct Loader {
    pub role: String,
}

impl Loader {
    /// Makes the role, NOLOGIN until a load opens its one session; a role of that name left by
    /// a dead run is replaced.
    pub fn create(ctx: &Ctx, db: &DbRestore) -> Result<Loader> {
        let role = Loader::of_this_process().role;
        let sql = "DROP ROLE IF EXISTS :\"l\";\nCREATE ROLE :\"l\" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE \
                   NOREPLICATION NOBYPASSRLS;\n";
        Psql { ctx, db }.run("template1", sql, &[("l", &role)]).context("create the role staged loads run as")?;
        Ok(Loader { role })
    }

    /// Step 1 for one database: `dump` filtered into a file beside it, and the extensions the
    /// live database vouches for created in the staged copy `new`. Returns what to load.
    pub fn prepare(ctx: &Ctx, db: &DbRestore, d: &DbDump, new: &str, dump: &Spooled) -> Result<(Spooled, HeldBack)> {
        let (filtered, held) = pglines::filter_dump(dump)?;
        add_extensions(&Psql { ctx, db }, &d.name, new, &held.extensions)?;
        Ok((filtered, held))
    }

    /// Step 2: the filtered dump of `d` loaded into `new` as the role, in one session: the role
    /// may log in, with a fresh password (a dump loaded before may have set one it knows), only
    /// until that session exists, and nothing of the dump is sent before.
    pub fn load(&self, ctx: &Ctx, db: &DbRestore, d: &DbDump, new: &str, filtered: &Spooled) -> Result<()> {
        let su = Psql { ctx, db };
        let password = random_hex()?;
        // The password is hex made here: it stands in the SQL text, which reaches psql on stdin.
        let sql = format!("ALTER ROLE :\"l\" LOGIN PASSWORD '{password}';\n");
        su.run("template1", &sql, &[("l", &self.role)]).context("let the loading role log in")?;
        let mut as_role = db.clone();
        as_role.login.user = self.role.clone();
        as_role.login.user_file = None;
        as_role.login.password = Some(Secret::Value(password));
        let loaded = Psql { ctx, db: &as_role }.load_after(new, filtered, &d.entry, || self.close_behind(&su));
        let closed = su.run("template1", "ALTER ROLE :\"l\" NOLOGIN;\n", &[("l", &self.role)]);
        loaded.map_err(|e| explain_denied(e, db, &d.name))?;
        closed
    }

    /// Waits until the load's session of the role exists, then makes the role NOLOGIN: no
    /// other session of it can start.
    fn close_behind(&self, su: &Psql) -> Result<()> {
        // The role's name is `xtask_load_` and digits: it can stand in a literal.
        let sql = format!("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = '{}'", self.role);
        for _ in 0..150 {
            if su.rows("template1", &sql)?.concat() != "0" {
                return su.run("template1", "ALTER ROLE :\"l\" NOLOGIN;\n", &[("l", &self.role)]);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bail!(
            "the loading role's session did not start within 15 s (the server must accept a password for local \
             connections in pg_hba.conf)"
        )
    }

    /// Step 3: the role can no longer log in and none of its sessions is left.
    pub fn lock_out(&self, ctx: &Ctx, db: &DbRestore) -> Result<()> {
        let sql = "ALTER ROLE :\"l\" NOLOGIN;\nSELECT pg_catalog.set_config('xtask.loader', :'l', false);\n\
            DO $$ DECLARE l text := pg_catalog.current_setting('xtask.loader'); BEGIN\n\
              FOR i IN 1..100 LOOP\n\
                PERFORM pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = l;\n\
                EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE usename = l);\n\
                PERFORM pg_catalog.pg_sleep(0.1);\n\
              END LOOP;\n\
              IF EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE usename = l) THEN\n\
                RAISE EXCEPTION 'sessions of % did not end', l;\n\
              END IF;\n\
            END $$;\n";
        Psql { ctx, db }
            .run("template1", sql, &[("l", &self.role)])
            .with_context(|| format!("lock out the role {} staged loads ran as", self.role))
    }

    /// The loading role of this process (made by [`Loader::create`] in its staging).
    pub fn of_this_process() -> Loader {
        Loader { role: format!("{LOADER_PREFIX}{}", std::process::id()) }
    }

    /// Step 5, before the swap, for one staged copy (settled): counts checked, and the script
    /// that hands it over in the swap ([`Loader::hand_over`]): the held-back lines whose object
    /// the dump made (owners, then everything else of the role to the database's owner,
    /// then privileges); the others named. Until the swap the copy stays the role's: anything
    /// of the dump that runs meanwhile (autovacuum analyzes as a table's owner, evaluating its
    /// index expressions) runs as the role.
    pub fn prepare_handover(
        &self,
        ctx: &Ctx,
        db: &DbRestore,
        d: &DbDump,
        new: &str,
        held: &HeldBack,
    ) -> Result<String> {
        let su = Psql { ctx, db };
        su.check_counts(new, d)?;
        let replayed = self.made_by_dump(&su, new, held)?;
        for h in held.owners.iter().chain(&held.acls).filter(|h| !replayed.contains(&h.line)) {
            eprintln!("warning: {}: not replayed, it names an object the dump did not create: {}", d.entry, h.line);
        }
        let mut script = String::from("SET search_path = pg_catalog;\n");
        let lines = |list: &[Held]| -> String {
            list.iter().filter(|h| replayed.contains(&h.line)).map(|h| format!("{}\n", h.line)).collect()
        };
        script.push_str(&lines(&held.owners));
        script.push_str("REASSIGN OWNED BY :\"l\" TO :\"o\";\n");
        script.push_str(&lines(&held.acls));
        script.push_str("DROP OWNED BY :\"l\";\n");
        Ok(script)
    }

    /// In the swap, just before the staged copy replaces its live database: the copy handed to
    /// its owners by the script [`Loader::prepare_handover`] made, then given the owner staging
    /// chose (the archive's, when that role exists), else the live database's owner (the stack's user when there is none;
    /// REASSIGN OWNED moves every copy the role owns).
    pub fn hand_over(&self, ctx: &Ctx, db: &DbRestore, staged: &StagedDb) -> Result<()> {
        let (su, live, new, script) = (Psql { ctx, db }, &staged.live, &staged.new, &staged.handover);
        // `live` is a checked name (no quote): it can stand in a literal.
        let sql = format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{live}'");
        let owner = match &staged.owner {
            Some(recorded) => recorded.clone(),
            None => match su.rows("template1", &sql)?.pop() {
                Some(owner) => owner,
                None => db.login.user_name(ctx.docker()?, &ctx.stack)?.to_string(),
            },
        };
        su.run(new, script, &[("l", &self.role), ("o", &owner)])
            .with_context(|| format!("hand the restored copy of {live} to its owners"))?;
        su.run("template1", "ALTER DATABASE :\"s\" OWNER TO :\"o\";\n", &[("s", new), ("o", &owner)])
            .with_context(|| format!("give the restored copy of {live} to {owner}"))
    }

    /// The held-back lines of `new` to replay: those naming no object (default privileges) and
    /// those whose object belongs to the role, all looked up before any is replayed.
    fn made_by_dump(&self, su: &Psql, new: &str, held: &HeldBack) -> Result<Vec<String>> {
        let all: Vec<&Held> = held.owners.iter().chain(&held.acls).collect();
        // A lookup that fails (a signature this reading got wrong) only leaves its line out.
        let mut script = String::from("\\set ON_ERROR_STOP 0\nSET search_path = pg_catalog;\n");
        for (i, h) in all.iter().enumerate() {
            let check = h.made_by_dump.as_deref().unwrap_or("true");
            script.push_str(&format!("SELECT '{i}|' || coalesce(({check}), false)::text;\n"));
        }
        let rows = su.query_script(new, &script, &[("l", &self.role)]).context("look up what the dump created")?;
        let yes: Vec<usize> =
            rows.iter().filter_map(|r| r.strip_suffix("|true")).filter_map(|i| i.parse().ok()).collect();
        Ok(yes.iter().filter_map(|i| all.get(*i)).map(|h| h.line.clone()).collect())
    }

    /// Drops the role; its staged databases are handed over or dropped by then.
    pub fn drop(self, ctx: &Ctx, db: &DbRestore) -> Result<()> {
        Psql { ctx, db }
            .run("template1", "DROP ROLE IF EXISTS :\"l\";\n", &[("l", &self.role)])
            .with_context(|| format!("drop the role {} staged loads ran as", self.role))
    }
}

/// Step 4: the staged database `new` as a new database is, whatever its owner did to it: not a
/// template, connections allowed and unlimited, no settings of its own (a `search_path` or
/// preloaded library would reach the stack's user's sessions), every grant on it revoked (so no
/// role depends on it), and closed to PUBLIC until the swap gives it the default privileges of
/// a new database (a function the dump gave a superuser is not callable by others meanwhile).
pub fn settle(psql: &Psql, new: &str) -> Result<()> {
    let sql = "ALTER DATABASE :\"s\" WITH IS_TEMPLATE false ALLOW_CONNECTIONS true CONNECTION LIMIT -1;\n\
        ALTER DATABASE :\"s\" RESET ALL;\n\
        SELECT pg_catalog.format('REVOKE ALL ON DATABASE %I FROM %s', :'s', \
          CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END) \
          FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a WHERE d.datname = :'s' \\gexec\n\
        UPDATE pg_catalog.pg_database SET datacl = NULL WHERE datname = :'s';\n\
        REVOKE CONNECT, TEMPORARY ON DATABASE :\"s\" FROM PUBLIC;\n";
    psql.run("template1", sql, &[("s", new)]).with_context(|| format!("settle the staged database {new}"))
}

/// The name of loading roles before the process id.
pub const LOADER_PREFIX: &str = "xtask_load_";

/// Drops loading roles whose process is gone (after their staged copies were dropped).
pub fn drop_stale(psql: &Psql) -> Result<()> {
    let sql = format!("SELECT rolname FROM pg_roles WHERE rolname ~ '^{LOADER_PREFIX}[0-9]+$'");
    for role in psql.rows("template1", &sql)? {
        let pid = role.trim_start_matches(LOADER_PREFIX);
        let gone = !Path::new(&format!("/proc/{pid}")).exists();
        if gone {
            if let Err(e) = psql.run("template1", "ALTER ROLE :\"l\" NOLOGIN;\nDROP ROLE :\"l\";\n", &[("l", &role)]) {
                eprintln!(
                    "warning: the role {role} an interrupted restore loaded as is left (NOLOGIN): {e:#}; \
                     `DROP OWNED BY {role}` in the database named, then `DROP ROLE {role}`"
                );
            }
        }
    }
    Ok(())
}

/// Creates in the staged copy `new`, as the stack's user, the extensions the dump creates that
/// the live database `live` has in `public`: the restricted role could not create an untrusted
/// one, and the live database vouches for it. Others are left to the dump, and so are `dblink`
/// and `postgres_fdw`: with them the role could open sessions to other databases.
fn add_extensions(su: &Psql, live: &str, new: &str, names: &[String]) -> Result<()> {
    if names.is_empty() || !su.exists(live)? {
        return Ok(());
    }
    for name in names.iter().filter(|n| !["plpgsql", "dblink", "postgres_fdw"].contains(&n.as_str())) {
        // Checked names ([A-Za-z0-9_-]): they can stand in a literal.
        let sql = format!(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = '{name}'"
        );
        if su.rows(live, &sql)?.first().map(String::as_str) == Some("public") {
            su.run(new, "CREATE EXTENSION IF NOT EXISTS :\"e\" WITH SCHEMA \"public\";\n", &[("e", name)])
                .with_context(|| format!("create extension {name} in the restored copy of {live}"))?;
        }
    }
    Ok(())
}

/// A load refused for want of privileges, explained: what the role may do and how to go on.
fn explain_denied(e: anyhow::Error, db: &DbRestore, live: &str) -> anyhow::Error {
    let text = format!("{e:#}");
    if !["permission denied", "must be owner", "must be superuser", "must be member"].iter().any(|p| text.contains(p)) {
        return e;
    }
    e.context(format!(
        "the dump asks for more than the owner of a database may do: a restore loads it as a role that owns \
         only its staged copy, so nothing it holds can reach the live server. If it needs an extension only \
         a superuser may create, create it in the live database first (docker compose exec {} psql -U {} -d {live} \
         -c 'CREATE EXTENSION name') and run the restore again; a foreign-data wrapper's server, an event trigger \
         or a tablespace cannot be staged (restore with --in-place, which loads as the stack's user, after a \
         backup)",
        db.login.service, db.login.user
    ))
}

/// 32 hex digits from the kernel's random source.
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

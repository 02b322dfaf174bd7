//! MariaDB/MySQL dumps proven in a throwaway server of the stack's own image (no network, its
//! data directory on an anonymous volume, a random root password in its environment only):
//! every database dump loaded by the same hardened client a restore uses (`--binary-mode
//! --sandbox --local-infile=0`), row counts compared with the metadata, then the users dump
//! (last: it may set root's password to the archived one). The container and its volume are
//! removed afterwards, also on failure. `verify --deep` proves an archive this way, and restore
//! proves its dumps this way before anything live changes: whatever SQL a dump holds, proving it
//! cannot touch the live server.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::My;
use crate::archive::extract::{self, Spooled, Verified};
use crate::archive::DbInfo;
use crate::context::Ctx;
use crate::tasks::engines::throwaway::Throwaway;

/// `verify --deep`: the archive's dumps of `db` spooled, then proven.
pub fn check(my: &My, ctx: &Ctx, verified: &Verified, db: &DbInfo) -> Result<()> {
    let dir = std::env::temp_dir();
    let entries = db.databases.iter().map(|d| d.entry.clone()).chain(db.globals_entry.clone());
    let mut spooled = BTreeMap::new();
    for entry in entries {
        let dump = extract::spool_dump(verified, &entry, &dir)?;
        spooled.insert(entry, dump);
    }
    prove(my, ctx, db, &spooled)
}

/// Loads the dumps of `db` (entry -> its spooled file) into a throwaway server and compares the rows.
pub fn prove(my: &My, ctx: &Ctx, db: &DbInfo, dumps: &BTreeMap<String, Spooled>) -> Result<()> {
    let docker = ctx.docker()?;
    let dump = |entry: &str| dumps.get(entry).with_context(|| format!("{entry} was not spooled"));
    let server = Throwaway::start(ctx, &db.service, &["MARIADB_ROOT_PASSWORD", "MYSQL_ROOT_PASSWORD"], &[])?;
    let (name, password) = (&server.name, &server.password);
    let client = my.client;
    let query = |sql: &str| {
        let c = docker.cmd([
            "exec",
            "-e",
            "MYSQL_PWD",
            name,
            client,
            "-uroot",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ]);
        docker.query(&c.secret_env("MYSQL_PWD", password))
    };
    server.wait(|| query("SELECT 1").is_ok())?;
    let load = |database: Option<&str>| {
        let mut a = vec!["exec", "-i", "-e", "MYSQL_PWD", name.as_str(), client, "-uroot", "--batch", "--binary-mode"];
        a.push("--local-infile=0");
        if my.sandbox {
            a.push("--sandbox");
        }
        a.extend(database);
        docker.cmd(a).secret_env("MYSQL_PWD", password)
    };
    for d in &db.databases {
        // `d.name` passed the grammar: no backquote inside.
        query(&super::client::create_database(d))?;
        extract::pipe_file(docker, dump(&d.entry)?, &load(Some(&d.name)))
            .with_context(|| format!("load {} into a throwaway server", d.entry))?;
    }
    // Counted once every dump is in: a dump that reached into another one shows there.
    for d in &db.databases {
        for (table, rows) in &d.tables {
            let got = query(&format!("SELECT COUNT(*) FROM `{}`.{table}", d.name))?;
            if got.trim() != rows.to_string() {
                bail!(
                    "database {}: table {table} has {} rows after loading, the metadata says {rows}",
                    d.name,
                    got.trim()
                );
            }
        }
    }
    if let Some(entry) = &db.globals_entry {
        extract::pipe_file(docker, dump(entry)?, &load(None))
            .with_context(|| format!("load {entry} into a throwaway server"))?;
    }
    Ok(())
}

//! `verify --deep` for MariaDB/MySQL dumps: a throwaway server of the stack's own image (no
//! network, a random root password in its environment only), every database dump loaded by the
//! same hardened client a restore uses (`--binary-mode --sandbox --local-infile=0`), row counts
//! compared with the metadata, then the users dump (last: it may set root's password to the
//! archived one). The container is removed afterwards, also on failure.

use anyhow::{bail, Context, Result};

use super::Throwaway;
use crate::archive::extract::{self, Verified};
use crate::archive::{DbEngine, DbInfo};
use crate::context::Ctx;

pub(super) fn check(ctx: &Ctx, verified: &Verified, db: &DbInfo) -> Result<()> {
    let docker = ctx.docker()?;
    let server = Throwaway::start(ctx, &db.service, "MYSQL_ROOT_PASSWORD", &[])?;
    let (name, password) = (&server.name, &server.password);
    let client = if db.engine == DbEngine::Mysql { "mysql" } else { "mariadb" };
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
        if db.engine == DbEngine::Mariadb {
            a.push("--sandbox");
        }
        a.extend(database);
        docker.cmd(a).secret_env("MYSQL_PWD", password)
    };
    let dir = std::env::temp_dir();
    for d in &db.databases {
        // `d.name` passed the grammar: no backquote inside.
        query(&format!("CREATE DATABASE `{}`", d.name))?;
        let dump = extract::spool_dump(verified, &d.entry, &dir)?;
        extract::pipe_file(docker, &dump.path, &load(Some(&d.name)))
            .with_context(|| format!("load {} into a throwaway server", d.entry))?;
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
        let users = extract::spool_dump(verified, entry, &dir)?;
        extract::pipe_file(docker, &users.path, &load(None))
            .with_context(|| format!("load {entry} into a throwaway server"))?;
    }
    Ok(())
}

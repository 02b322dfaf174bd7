//! `verify --deep` for MariaDB/MySQL dumps: a throwaway server of the stack's own image (no
//! network, a random root password in its environment only), every database dump loaded by the
//! same hardened client a restore uses (`--binary-mode --sandbox --local-infile=0`), row counts
//! compared with the metadata, then the users dump (last: it may set root's password to the
//! archived one). The container is removed afterwards, also on failure.

use anyhow::{bail, Context, Result};

use super::Scratch;
use crate::archive::extract::{self, Verified};
use crate::archive::{DbEngine, DbInfo};
use crate::context::Ctx;

pub(super) fn check(ctx: &Ctx, verified: &Verified, db: &DbInfo) -> Result<()> {
    let docker = ctx.docker()?;
    let (image, password) = (super::service_image(ctx, &db.service)?, super::throwaway_password()?);
    let name = format!("xtask-verify-{}-{}", std::process::id(), db.service);
    let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", "none"].map(String::from).to_vec();
    args.extend(crate::engine::docker::helper::labels());
    args.extend(["-e", "MYSQL_ROOT_PASSWORD", &image].map(String::from));
    let run = docker.cmd(args).secret_env("MYSQL_ROOT_PASSWORD", &password);
    ctx.ui.step(&format!("load the dumps of service {} into a throwaway server ({image})", db.service));
    docker.change(&run).context("start a throwaway MariaDB/MySQL server")?;
    let _container = Scratch { docker, args: vec!["rm".into(), "-f".into(), "-v".into(), name.clone()] };
    let client = if db.engine == DbEngine::Mysql { "mysql" } else { "mariadb" };
    let query = |sql: &str| {
        let c = docker.cmd([
            "exec",
            "-e",
            "MYSQL_PWD",
            &name,
            client,
            "-uroot",
            "--batch",
            "--skip-column-names",
            "-e",
            sql,
        ]);
        docker.query(&c.secret_env("MYSQL_PWD", &password))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while query("SELECT 1").is_err() {
        if std::time::Instant::now() > deadline {
            bail!("the throwaway server did not become ready in 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let load = |database: Option<&str>| {
        let mut a = vec!["exec", "-i", "-e", "MYSQL_PWD", name.as_str(), client, "-uroot", "--batch", "--binary-mode"];
        a.push("--local-infile=0");
        if db.engine == DbEngine::Mariadb {
            a.push("--sandbox");
        }
        a.extend(database);
        docker.cmd(a).secret_env("MYSQL_PWD", &password)
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

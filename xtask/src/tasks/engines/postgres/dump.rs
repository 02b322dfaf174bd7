//! PostgreSQL's dumps: the roles by `pg_dumpall --globals-only`, then a plain-SQL `pg_dump`
//! per database (all identifiers quoted, no subscriptions), through `docker compose exec`.

use std::path::Path;

use anyhow::{Context, Result};

use super::dbprops;
use crate::context::Ctx;
use crate::model::db::postgres;
use crate::tasks::engines::dump::{choose, dump_globals, dump_one, new_info, ours, DumpCmd, Dumped};
use crate::tasks::engines::DbSource;

/// The roles (`pg_dumpall --globals-only`), then `pg_dump` per database.
pub fn dump(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let template1 = postgres::dbname_arg("template1");
    let query = |sql: &str| {
        docker.query(&login.client(
            docker,
            stack,
            &["psql", "-X", "-q", "-At", "-U", &login.user, &template1, "-c", sql],
        ))
    };
    let version = query("SHOW server_version").context("ask PostgreSQL for its version")?;
    let sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";
    let databases = choose(ours(query(sql)?.lines().map(str::to_string)), &src.databases);
    let mut info = new_info(src, version);
    let globals = login.client(docker, stack, &["pg_dumpall", "-U", &login.user, "--globals-only"]);
    let mut files =
        vec![(info.globals_entry.clone().unwrap_or_default(), dump_globals(ctx, src, dir, &info, &globals)?)];
    for name in &databases {
        let dbname = postgres::dbname_arg(name);
        // Subscriptions are replication settings that connect to other servers, not data: a
        // restore must not start replicating, and the grammar refuses them.
        let args =
            ["pg_dump", "-U", &login.user, "--no-password", "--quote-all-identifiers", "--no-subscriptions", &dbname];
        let how = DumpCmd { exec: login.client(docker, stack, &args), beside: None };
        let (mut dump, file) = dump_one(ctx, src, dir, name, how)?;
        // Its owner, privileges, settings, limit and comment: not in a dump without --create.
        dump.properties = Some(dbprops::read(query, name)?);
        files.push((dump.entry.clone(), file));
        info.databases.push(dump);
    }
    let skipped = match src.databases.is_empty() {
        true => dbprops::not_dumped(query, &login.service)?,
        false => Vec::new(),
    };
    for s in &skipped {
        ctx.ui.step(&format!("skip {}: {}", s.name, s.reason));
    }
    Ok(Dumped { files, info, skipped })
}

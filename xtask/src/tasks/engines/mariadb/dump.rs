//! MariaDB's and MySQL's dumps: users and grants (`--system=users`, MariaDB only; read one
//! account at a time when that fails), then one `--single-transaction --routines --triggers
//! --events` dump per database, through a helper beside the service when it can.

use std::path::Path;

use anyhow::{Context, Result};

use super::My;
use crate::archive::extract::Spooled;
use crate::context::Ctx;
use crate::tasks::engines::dump::{choose, container_of, dump_globals, dump_one, new_info, ours, DumpCmd, Dumped};
use crate::tasks::engines::DbSource;

/// MariaDB's users and grants read one account at a time (`SHOW CREATE USER`, `SHOW GRANTS`),
/// as `CREATE USER IF NOT EXISTS` and `GRANT` statements: every account the server can show is
/// kept, the ones it ignores are named in a warning, and the backup goes on.
fn users_one_by_one(my: &My, ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Spooled> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let accounts = my.query(login, docker, stack, "SELECT CONCAT(QUOTE(user), '@', QUOTE(host)) FROM mysql.user")?;
    let mut sql = String::from("-- users and grants, one account at a time (the users dump failed)\n");
    let mut ignored = Vec::new();
    for account in &accounts {
        let shown = my.query(login, docker, stack, &format!("SHOW CREATE USER {account}"));
        let grants = my.query(login, docker, stack, &format!("SHOW GRANTS FOR {account}"));
        match (shown, grants) {
            (Ok(create), Ok(grants)) => {
                for line in create {
                    sql.push_str(&line.replacen("CREATE USER ", "CREATE USER IF NOT EXISTS ", 1));
                    sql.push_str(";\n");
                }
                for g in grants {
                    sql.push_str(&g);
                    sql.push_str(";\n");
                }
            }
            _ => ignored.push(account.clone()),
        }
    }
    if !ignored.is_empty() {
        eprintln!(
            "warning: service {}: the server ignores these accounts, so they are not in the backup: {} \
             (host names under skip-name-resolve? recreate them with an IP or '%' host)",
            login.service,
            ignored.join(", ")
        );
    }
    let spooled = Spooled::of_text(dir, &sql)?;
    spooled.sync()?;
    Ok(spooled)
}

/// MariaDB's and MySQL's own schemas: never dumped as databases (users and grants come from
/// `--system=users`).
const MY_SYSTEM: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

pub fn dump(my: &My, ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let version =
        my.query(login, docker, stack, "SELECT VERSION()").context("ask the server for its version")?.concat();
    let all = my.query(login, docker, stack, "SELECT schema_name FROM information_schema.schemata ORDER BY 1")?;
    let databases = choose(ours(all.into_iter().filter(|d| !MY_SYSTEM.contains(&d.as_str()))), &src.databases);
    let mut info = new_info(src, version);
    let dump_tool = my.record.dump_tool;
    let user = format!("--user={}", login.user);
    // Users and grants: `CREATE USER IF NOT EXISTS` and `GRANT`, so loading them never fails
    // on the users that exist already (the root the tool logs in as among them).
    // MySQL's mysqldump has no --system=users: its users are not in the archive.
    let mut files = Vec::new();
    if let Some(entry) = info.globals_entry.clone() {
        let args = [dump_tool, &user, "--system=users", "--insert-ignore", "--skip-dump-date"];
        let file = match dump_globals(ctx, src, dir, &info, &login.client(docker, stack, &args)) {
            Ok(file) => file,
            // A user row the server ignores (a host name under skip-name-resolve, as servers set up
            // without the official image's steps have) makes the whole users dump fail.
            Err(e) => users_one_by_one(my, ctx, src, dir).with_context(|| {
                format!("{entry}: the users dump failed ({e:#}), and so did reading them one by one")
            })?,
        };
        files.push((entry, file));
    }
    let beside = container_of(ctx, &login.service)?;
    for name in &databases {
        let mut opts = vec!["--single-transaction", "--routines", "--triggers", "--events", "--skip-dump-date"];
        if my.gtid_purged_off {
            // Not `SET @@GLOBAL.GTID_PURGED`, a server-wide statement the grammar refuses.
            opts.push("--set-gtid-purged=OFF");
        }
        opts.extend(["--", name]);
        let exec: Vec<&str> = [dump_tool, &user].into_iter().chain(opts.iter().copied()).collect();
        let beside = beside.as_ref().map(|(id, image)| my.dump_beside(login, id, image, &opts));
        let how = DumpCmd { exec: login.client(docker, stack, &exec), beside };
        let (mut dump, file) = dump_one(ctx, src, dir, name, how)?;
        // Its default character set and collation: a dump without --databases does not carry them.
        dump.properties = Some(my.charset_of(login, docker, stack, name)?);
        files.push((dump.entry.clone(), file));
        info.databases.push(dump);
    }
    Ok(Dumped { files, info, skipped: Vec::new() })
}

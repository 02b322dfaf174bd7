//! Dumping the stack's database services, one engine at a time, each into private temporary
//! files (0600) beside the archive, read as they stream by the engine's dump checker so the
//! metadata can record row counts and a dump cut short fails the backup:
//! PostgreSQL (`pg_dumpall --globals-only`, then `pg_dump` per database), MariaDB/MySQL
//! (`--system=users`, then one `--single-transaction --routines --triggers --events` dump per
//! database) and hooks (the service's `xtask.dump` command). Entries go under
//! `databases/<service>/`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::DbSource;
use crate::archive::extract::Spooled;
use crate::archive::{dumpstats::DumpStats, grammar, DbDump, DbEngine, DbInfo};
use crate::context::Ctx;
use crate::engine::docker::{Docker, DockerCmd, Helper, VolumeTar};
use crate::model::db::postgres;
use crate::ui::{human_bytes, Progress};

/// One service's dumps: (entry, file) in archive order, and what the metadata says of them.
pub struct Dumped {
    pub files: Vec<(String, Spooled)>,
    pub info: DbInfo,
}

/// Streams a dump into a new private file with no name (on the filesystem of `dir`), feeding
/// the engine's dump checker.
fn dump_to_file(child: VolumeTar, engine: DbEngine, dir: &Path, progress: &Progress) -> Result<(Spooled, DumpStats)> {
    dump_counted(child, engine, dir, progress, &mut 0)
}

/// [`dump_to_file`], adding to `got` the bytes read, also when it fails.
fn dump_counted(
    mut child: VolumeTar,
    engine: DbEngine,
    dir: &Path,
    progress: &Progress,
    got: &mut u64,
) -> Result<(Spooled, DumpStats)> {
    let temp = Spooled::create(dir)?;
    let mut file = temp.writer();
    let mut stats = crate::archive::dumpstats::new(engine);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        crate::signals::check()?;
        let n = child.read(&mut buf).context("read the dump")?;
        if n == 0 {
            break;
        }
        *got += n as u64;
        stats.feed(&buf[..n]);
        file.write_all(&buf[..n]).context("write the dump to a private file")?;
        progress.inc(n as u64);
    }
    child.finish()?;
    temp.sync()?;
    Ok((temp, stats))
}

/// Dumps one database service (its server already running).
pub fn dump_service(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
    let mut src = src.clone();
    src.login.resolve_user(ctx.docker()?, &ctx.stack)?;
    let what = format!("dump the databases of service {}", src.login.service);
    match src.login.engine {
        DbEngine::Postgres => dump_postgres(ctx, &src, dir),
        DbEngine::Mariadb | DbEngine::Mysql => dump_mariadb(ctx, &src, dir),
        DbEngine::Hook => dump_hook(ctx, &src, dir),
    }
    .context(what)
}

fn new_info(src: &DbSource, version: String) -> DbInfo {
    let prefix = format!("databases/{}/", src.login.service);
    DbInfo {
        service: src.login.service.clone(),
        engine: src.login.engine,
        volume: src.volume.clone(),
        server_version: version.trim().chars().take(128).collect(),
        user: src.login.user.clone(),
        globals_entry: src.login.engine.globals_file().map(|f| format!("{prefix}{f}")),
        databases: Vec::new(),
    }
}

/// The databases to dump: `wanted` (those of them the server has) or all it lists.
fn choose(all: Vec<String>, wanted: &[String]) -> Vec<String> {
    if wanted.is_empty() {
        all
    } else {
        all.into_iter().filter(|d| wanted.contains(d)).collect()
    }
}

/// `cmd`'s output as a stream (through the daemon's attach stream).
fn exec_stream(docker: &Docker, cmd: &DockerCmd) -> Result<VolumeTar> {
    Ok(VolumeTar::Stream(docker.stream(cmd)?))
}

/// How a database's dump is read: `docker compose exec` in the service, or first a helper
/// beside it whose output comes through a FIFO (falling back to the exec when that helper fails
/// before writing a byte, e.g. when the server refuses TCP logins).
struct DumpCmd {
    exec: DockerCmd,
    beside: Option<Helper>,
}

/// The dump through the helper beside the service, if there is one and it wrote anything.
fn dump_beside(
    ctx: &Ctx,
    helper: Helper,
    engine: DbEngine,
    dir: &Path,
    progress: &Progress,
) -> Result<Option<(Spooled, DumpStats)>> {
    let mut got = 0;
    let direct = ctx.docker()?.helper_output(helper).and_then(|stream| match stream {
        Some(s) => dump_counted(s, engine, dir, progress, &mut got).map(Some),
        None => Ok(None),
    });
    match direct {
        // Failed before its first byte (e.g. the server refuses TCP logins): the exec may work.
        // Once bytes came, a failure is the dump's own and fails the backup.
        Err(e) if got == 0 => {
            if ctx.docker()?.verbose() {
                ctx.ui
                    .step(&format!("the direct dump reader failed ({e:#}); dump through docker compose exec instead"));
            }
            Ok(None)
        }
        other => other,
    }
}

/// One database's dump, checked complete: its entry, file and row counts.
fn dump_one(ctx: &Ctx, src: &DbSource, dir: &Path, name: &str, how: DumpCmd) -> Result<(DbDump, Spooled)> {
    if !grammar::is_db_name(name) {
        bail!(
            "database {name:?} of service {} has a name outside [A-Za-z0-9_.-] (at most 63 bytes), which \
             archives do not hold (docs/archive-format.md); rename it, or leave it out with --database NAME \
             for each database to keep",
            src.login.service
        );
    }
    let service = &src.login.service;
    let progress = ctx.ui.progress(&format!("dump database {name} of {service}"));
    let engine = src.login.engine;
    let direct = match how.beside {
        Some(helper) => {
            dump_beside(ctx, helper, engine, dir, &progress).with_context(|| format!("dump database {name}"))?
        }
        None => None,
    };
    let (file, stats) = match direct {
        Some(done) => done,
        None => dump_to_file(exec_stream(ctx.docker()?, &how.exec)?, engine, dir, &progress)
            .with_context(|| format!("dump database {name}"))?,
    };
    if stats.bytes == 0 || !stats.complete() {
        bail!("the dump of database {name} is empty or lacks its completion trailer (the server stopped?): the backup failed");
    }
    if let Some(v) = stats.violation() {
        bail!("the dump of database {name}: {v}; it would not restore, so the backup failed");
    }
    if let Some(why) = stats.out_of_bounds(false) {
        bail!("the dump of database {name}: {why}; a restore would refuse it, so the backup failed");
    }
    progress.finish(&format!("{service}/{name}: {} tables, {}", stats.tables().len(), human_bytes(stats.bytes)));
    let entry = format!("databases/{service}/{name}.sql");
    Ok((DbDump { name: name.to_string(), entry, tables: stats.tables().clone() }, file))
}

/// MariaDB's users and grants read one account at a time (`SHOW CREATE USER`, `SHOW GRANTS`),
/// as `CREATE USER IF NOT EXISTS` and `GRANT` statements: every account the server can show is
/// kept, the ones it ignores are named in a warning, and the backup goes on.
fn users_one_by_one(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Spooled> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let accounts = login.my_query(docker, stack, "SELECT CONCAT(QUOTE(user), '@', QUOTE(host)) FROM mysql.user")?;
    let mut sql = String::from("-- users and grants, one account at a time (the users dump failed)\n");
    let mut ignored = Vec::new();
    for account in &accounts {
        let shown = login.my_query(docker, stack, &format!("SHOW CREATE USER {account}"));
        let grants = login.my_query(docker, stack, &format!("SHOW GRANTS FOR {account}"));
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

/// The cluster-wide dump (roles; users and grants) into the globals entry.
fn dump_globals(ctx: &Ctx, src: &DbSource, dir: &Path, info: &DbInfo, cmd: &DockerCmd) -> Result<Spooled> {
    let entry = info.globals_entry.clone().unwrap_or_default();
    let progress = ctx.ui.progress(&format!("dump {entry}"));
    let stream = exec_stream(ctx.docker()?, cmd)?;
    let (file, stats) =
        dump_to_file(stream, src.login.engine, dir, &progress).with_context(|| format!("dump {entry}"))?;
    progress.finish(&format!("{entry}: {}", human_bytes(stats.bytes)));
    if stats.bytes == 0 {
        bail!("{entry}: the dump printed nothing: the backup is not valid");
    }
    if let Some(why) = stats.out_of_bounds(true) {
        bail!("{entry}: {why}; a restore would refuse it, so the backup failed");
    }
    Ok(file)
}

fn dump_postgres(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
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
        let (dump, file) = dump_one(ctx, src, dir, name, how)?;
        files.push((dump.entry.clone(), file));
        info.databases.push(dump);
    }
    Ok(Dumped { files, info })
}

/// The service's running container and its image, for a helper beside it.
fn container_of(ctx: &Ctx, service: &str) -> Result<Option<(String, String)>> {
    let docker = ctx.docker()?;
    let id = docker.query(&docker.compose(&ctx.stack, ["ps", "--quiet", service]))?;
    let Some(id) = id.lines().next().map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    let image = docker.query(&docker.cmd(["inspect", "--format", "{{.Image}}", id]))?;
    Ok(Some((id.to_string(), image.trim().to_string())))
}

/// The databases of a server minus the tool's own scratch copies (`xtask_new_PID_N`,
/// `xtask_old_PID_N`, left by a restore that runs or died): never backed up.
fn ours(names: impl Iterator<Item = String>) -> Vec<String> {
    let scratch = |n: &str| {
        let rest = n.strip_prefix("xtask_new_").or_else(|| n.strip_prefix("xtask_old_"));
        rest.is_some_and(|r| r.split('_').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    };
    names.filter(|n| !scratch(n)).collect()
}

/// MariaDB's and MySQL's own schemas: never dumped as databases (users and grants come from
/// `--system=users`).
const MY_SYSTEM: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

fn dump_mariadb(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let version = login.my_query(docker, stack, "SELECT VERSION()").context("ask the server for its version")?.concat();
    let all = login.my_query(docker, stack, "SELECT schema_name FROM information_schema.schemata ORDER BY 1")?;
    let databases = choose(ours(all.into_iter().filter(|d| !MY_SYSTEM.contains(&d.as_str()))), &src.databases);
    let mut info = new_info(src, version);
    let (dump_tool, _) = login.my_tools();
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
            Err(e) => users_one_by_one(ctx, src, dir).with_context(|| {
                format!("{entry}: the users dump failed ({e:#}), and so did reading them one by one")
            })?,
        };
        files.push((entry, file));
    }
    let beside = container_of(ctx, &login.service)?;
    for name in &databases {
        let mut opts = vec!["--single-transaction", "--routines", "--triggers", "--events", "--skip-dump-date"];
        if login.engine == DbEngine::Mysql {
            // Not `SET @@GLOBAL.GTID_PURGED`, a server-wide statement the grammar refuses.
            opts.push("--set-gtid-purged=OFF");
        }
        opts.extend(["--", name]);
        let exec: Vec<&str> = [dump_tool, &user].into_iter().chain(opts.iter().copied()).collect();
        let beside = beside.as_ref().map(|(id, image)| login.my_dump_beside(id, image, &opts));
        let how = DumpCmd { exec: login.client(docker, stack, &exec), beside };
        let (dump, file) = dump_one(ctx, src, dir, name, how)?;
        files.push((dump.entry.clone(), file));
        info.databases.push(dump);
    }
    Ok(Dumped { files, info })
}

fn dump_hook(ctx: &Ctx, src: &DbSource, dir: &Path) -> Result<Dumped> {
    let (docker, stack, login) = (ctx.docker()?, &ctx.stack, &src.login);
    let command = login.dump_cmd.as_deref().context("no xtask.dump label")?;
    let mut info = new_info(src, "hook".into());
    info.user = "hook".into();
    let progress = ctx.ui.progress(&format!("dump service {} (xtask.dump)", login.service));
    let stream = exec_stream(docker, &login.exec(docker, stack, None, &["sh", "-c", command]))?;
    let (file, stats) = dump_to_file(stream, DbEngine::Hook, dir, &progress)
        .with_context(|| format!("run the xtask.dump command of service {}", login.service))?;
    if stats.bytes == 0 {
        bail!("the xtask.dump command of service {} printed nothing: the backup failed", login.service);
    }
    progress.finish(&format!("{}: {}", login.service, human_bytes(stats.bytes)));
    let entry = format!("databases/{}/dump", login.service);
    info.databases.push(DbDump { name: "dump".into(), entry: entry.clone(), tables: BTreeMap::new() });
    Ok(Dumped { files: vec![(entry, file)], info })
}

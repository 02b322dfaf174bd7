//! Dumping the stack's database services, each by its engine's driver ([`super::Driver::dump`]),
//! with what every driver's dumps share: each into a private temporary file (0600) beside the
//! archive, read as it streams by the engine's dump checker so the metadata can record row
//! counts and a dump cut short fails the backup. Entries go under `databases/<service>/`.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::DbSource;
use crate::archive::extract::Spooled;
use crate::archive::{dumpstats::DumpStats, grammar, DbDump, DbEngine, DbInfo};
use crate::context::Ctx;
use crate::engine::docker::{Docker, DockerCmd, Helper, VolumeTar};
use crate::ui::{human_bytes, Progress};

/// One service's dumps: (entry, file) in archive order, and what the metadata says of them.
pub struct Dumped {
    pub files: Vec<(String, Spooled)>,
    pub info: DbInfo,
    /// What of the server is not in them, and why (the backup names it with the rest).
    pub skipped: Vec<crate::archive::Skipped>,
}

/// Streams a dump into a new private file with no name (on the filesystem of `dir`), feeding
/// the engine's dump checker.
pub fn dump_to_file(
    child: VolumeTar,
    engine: DbEngine,
    dir: &Path,
    progress: &Progress,
) -> Result<(Spooled, DumpStats)> {
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
    super::of(src.login.engine).dump(ctx, &src, dir).context(what)
}

pub fn new_info(src: &DbSource, version: String) -> DbInfo {
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
pub fn choose(all: Vec<String>, wanted: &[String]) -> Vec<String> {
    if wanted.is_empty() {
        all
    } else {
        all.into_iter().filter(|d| wanted.contains(d)).collect()
    }
}

/// `cmd`'s output as a stream (through the daemon's attach stream).
pub fn exec_stream(docker: &Docker, cmd: &DockerCmd) -> Result<VolumeTar> {
    Ok(VolumeTar::Stream(docker.stream(cmd)?))
}

/// How a database's dump is read: `docker compose exec` in the service, or first a helper
/// beside it whose output comes through a FIFO (falling back to the exec when that helper fails
/// before writing a byte, e.g. when the server refuses TCP logins).
pub struct DumpCmd {
    pub exec: DockerCmd,
    pub beside: Option<Helper>,
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
pub fn dump_one(ctx: &Ctx, src: &DbSource, dir: &Path, name: &str, how: DumpCmd) -> Result<(DbDump, Spooled)> {
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
    let entry = format!("databases/{service}/{}", engine.record().dump_file(name));
    Ok((DbDump { name: name.to_string(), entry, tables: stats.tables().clone(), properties: None }, file))
}

/// The cluster-wide dump (roles; users and grants) into the globals entry.
pub fn dump_globals(ctx: &Ctx, src: &DbSource, dir: &Path, info: &DbInfo, cmd: &DockerCmd) -> Result<Spooled> {
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

/// The service's running container and its image, for a helper beside it.
pub fn container_of(ctx: &Ctx, service: &str) -> Result<Option<(String, String)>> {
    let docker = ctx.docker()?;
    let id = docker.query(&docker.compose(&ctx.stack, ["ps", "--quiet", service]))?;
    let Some(id) = id.lines().next().map(str::trim).filter(|s| !s.is_empty()) else { return Ok(None) };
    let image = docker.query(&docker.cmd(["inspect", "--format", "{{.Image}}", id]))?;
    Ok(Some((id.to_string(), image.trim().to_string())))
}

/// The databases of a server minus the tool's own scratch copies (`xtask_new_PID_N`,
/// `xtask_old_PID_N`, left by a restore that runs or died): never backed up.
pub fn ours(names: impl Iterator<Item = String>) -> Vec<String> {
    let scratch = |n: &str| {
        let rest = n.strip_prefix("xtask_new_").or_else(|| n.strip_prefix("xtask_old_"));
        rest.is_some_and(|r| r.split('_').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    };
    names.filter(|n| !scratch(n)).collect()
}

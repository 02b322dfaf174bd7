//! Doing a backup plan: sources checked, databases dumped and Redis saved, services stopped
//! where the plan says, one pass writing the archive (temporary file, fsync, rename), signed,
//! pushed when asked.

use super::plan::*;
use super::{Options, Summary};
use crate::archive::{self, grammar, ArchiveWriter, DbInfo, Metadata, Skipped, VolumeInfo};
use crate::context::Ctx;
use crate::engine::db::{self};
use crate::engine::docker::{Docker, DockerCmd};
use crate::engine::services::ServiceGuard;
use crate::lock::Lock;
use crate::model::compose::Stack;
use crate::model::offsite::VaultSpec;
use crate::store::local::prepare_dir;
use crate::store::local::{archive_name_at, remove_stale_temporaries};
use crate::tasks::engines::dump;
use crate::tasks::offsite::vault::{Started, Starting};
use crate::ui::human_bytes;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `--no-keep-local`: the archive is complete in the remote (its upload, or the push that
/// replaced it, succeeded, else the backup failed before this): the local file and its
/// signature go.
fn remove_local_copy(ctx: &Ctx, path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("remove {} after its upload", path.display()))?;
    let _ = std::fs::remove_file(crate::store::trust::signature_path(path));
    ctx.ui.step(&format!("removed the local copy {} (--no-keep-local)", path.display()));
    Ok(())
}

/// `docker compose exec -T [-e SECRET] SERVICE CMD...`, the secret's value in docker's
/// environment only.
fn exec(docker: &Docker, stack: &Stack, service: &str, secret: Option<(&str, &str)>, cmd: &[&str]) -> DockerCmd {
    let mut args = vec!["exec", "-T"];
    if let Some((name, _)) = secret {
        args.extend(["-e", name]);
    }
    args.push(service);
    args.extend(cmd);
    let c = docker.compose(stack, args);
    match secret {
        Some((name, value)) => c.secret_env(name, value),
        None => c,
    }
}

/// Makes every Redis whose data is copied save it first; an error names the service, where its
/// password came from and the label to set.
fn save_redis(ctx: &Ctx, redis: &[&RedisSource]) -> Result<()> {
    for r in redis {
        ctx.ui.step(&format!("ask Redis ({}) to save its data", r.service));
        redis_save(ctx.docker()?, &ctx.stack, r).with_context(|| {
            format!(
                "make Redis in service {} save its data (login: {}); if it needs a password from another \
                 variable, name that variable with the service label {}",
                r.service,
                r.auth.source(),
                db::REDIS_PASSWORD_LABEL
            )
        })?;
    }
    Ok(())
}

/// `redis-cli ARGS` in the Redis service, logged in as its compose file says: the password in
/// `REDISCLI_AUTH` (docker's environment, never argv), or read there from its `_FILE`.
fn redis_cli(docker: &Docker, stack: &Stack, r: &RedisSource, args: &[&str]) -> DockerCmd {
    match &r.auth {
        db::RedisAuth::None => exec(docker, stack, &r.service, None, &[&["redis-cli"], args].concat()),
        db::RedisAuth::Value { value, .. } => {
            exec(docker, stack, &r.service, Some(("REDISCLI_AUTH", value)), &[&["redis-cli"], args].concat())
        }
        db::RedisAuth::File { path, .. } => {
            let script = "REDISCLI_AUTH=\"$(cat \"$0\")\" && export REDISCLI_AUTH && exec redis-cli \"$@\"";
            exec(docker, stack, &r.service, None, &[&["sh", "-c", script, path.as_str()], args].concat())
        }
        db::RedisAuth::Config { path } => {
            // The last `requirepass` line, its value unquoted; none: no password.
            let script = "p=$(sed -n 's/^[[:space:]]*requirepass[[:space:]][[:space:]]*//p' \"$0\" | tail -n 1 \
                          | sed 's/^\"\\(.*\\)\"$/\\1/'); if [ -n \"$p\" ]; then REDISCLI_AUTH=\"$p\"; \
                          export REDISCLI_AUTH; fi; exec redis-cli \"$@\"";
            exec(docker, stack, &r.service, None, &[&["sh", "-c", script, path.as_str()], args].concat())
        }
    }
}

/// Asks Redis to write a fresh snapshot (an AOF rewrite when append-only is on, else BGSAVE)
/// and waits until it is on disk, so the volume copy that follows is consistent.
fn redis_save(docker: &Docker, stack: &Stack, r: &RedisSource) -> Result<()> {
    let cli = |args: &[&str]| redis_cli(docker, stack, r, args);
    let info = || -> Result<BTreeMap<String, String>> {
        let out = docker.query(&cli(&["INFO", "persistence"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    };
    let aof = info()?.get("aof_enabled").map(String::as_str) == Some("1");
    let command = if aof { "BGREWRITEAOF" } else { "BGSAVE" };
    docker.apply(&cli(&[command]))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let i = info()?;
        let busy = ["aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress"]
            .iter()
            .any(|k| i.get(*k).map(String::as_str) == Some("1"));
        if !busy {
            let status = if aof { "aof_last_bgrewrite_status" } else { "rdb_last_bgsave_status" };
            if i.get(status).map(String::as_str) != Some("ok") {
                bail!("Redis reported {status}:{} after {command}", i.get(status).cloned().unwrap_or_default());
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Redis did not finish {command} within 5 minutes");
        }
    }
}

/// What a backup found to copy: the volumes that exist, and the databases unless left out.
struct Sources<'a> {
    dbs: Vec<&'a DbSource>,
    volumes: Vec<&'a VolumeChoice>,
    skipped: Vec<Skipped>,
    /// Sizes on disk, measured before the copy: the progress bars' totals.
    sizes: BTreeMap<String, u64>,
    /// The volumes and binds restic reads as file trees (by name: the host path), not copied
    /// into the stream ([`super::trees`]).
    trees: BTreeMap<String, String>,
}

/// Writes the archive `plan` describes into the locked directory.
pub fn execute(ctx: &Ctx, plan: &BackupPlan, opts: &Options, lock: &Lock) -> Result<Summary> {
    // SIGINT/SIGTERM from here on stop the backup at its next file or dump chunk, the way a
    // failure does: no archive, services put back, a restic push stopped before its stream
    // ends; a second one ends the tool at once.
    let caught = crate::signals::Caught::begin()?;
    let result = take_caught(ctx, plan, opts, lock);
    caught.end(result, |s| format!("the backup was complete: {}", s.place()))
}

/// [`execute`] while signals are caught.
fn take_caught(ctx: &Ctx, plan: &BackupPlan, opts: &Options, lock: &Lock) -> Result<Summary> {
    let started = Instant::now();
    let docker = ctx.docker()?;
    let dir = prepare_dir(&opts.output_dir)?;
    lock.covers(&dir, &plan.project)?;
    let target = Target::decide(plan, opts, &dir)?;
    // Started first: restic's own start (its key derived from the password twice, the index
    // read: over a second) overlaps the checks below; it reads nothing until the archive is
    // written, and is ready (or has failed) before anything is.
    let vault = start_vault(ctx, plan, opts, &target.file_name)?;
    let mut sources = gather(ctx, plan, opts, &dir)?;
    let vault = vault.map(Starting::ready).transpose()?;
    let mut guard = ServiceGuard::new(docker, &ctx.stack);
    let result = (|| -> Result<Summary> {
        let redis = start_needed(&mut guard, ctx, plan, &sources)?;
        let dumps = sources.dbs.iter().map(|d| dump::dump_service(ctx, d, &dir)).collect::<Result<Vec<_>>>()?;
        // What a server holds that its dumps leave out (a database closed to connections).
        sources.skipped.extend(dumps.iter().flat_map(|d| d.skipped.iter().cloned()));
        check_requested_databases(opts, &dumps)?;
        save_redis(ctx, &redis)?;
        stop_for_copy(&mut guard, ctx, plan, &sources)?;
        let databases = dumped_names(&dumps);
        let written = write_archive(ctx, plan, opts, target, vault, dumps, &sources)?;
        if !plan.keep_local && written.local {
            remove_local_copy(ctx, &written.path)?;
        }
        Ok(Summary {
            path: written.path,
            local: written.local && plan.keep_local,
            remote: plan.push.clone(),
            kind: plan.kind,
            compression: plan.compression.to_string(),
            bytes: written.bytes,
            sha256: archive::hex(&written.sha256),
            data_bytes: written.stats.bytes,
            duration_seconds: started.elapsed().as_secs_f64(),
            entries: written.stats.entries + 1,
            files: written.stats.files,
            databases,
            volumes: sources.volumes.iter().map(|v| v.name.clone()).collect(),
            unprotected: unprotected(&sources.skipped),
            skipped: sources.skipped.clone(),
        })
    })();
    // Services go back to how they were, whether the backup worked or not.
    let restored = guard.restore(&ctx.ui);
    let summary = result?;
    restored?;
    Ok(summary)
}

/// What the archive will hold, checked: leftovers of interrupted runs cleared, the sources that
/// exist (half-done restore swaps in them finished), the room for them.
fn gather<'a>(ctx: &Ctx, plan: &'a BackupPlan, opts: &Options, dir: &Path) -> Result<Sources<'a>> {
    let docker = ctx.docker()?;
    remove_stale_temporaries(dir, ctx);
    if docker.remove_orphan_helpers()? > 0 {
        ctx.ui.step("removed helper containers left by an interrupted run");
    }
    let mut sources = sources(docker, plan, opts)?;
    for s in &sources.skipped {
        ctx.ui.step(&format!("skip {}: {}", s.name, s.reason));
    }
    warn_unrestorable_binds(&sources);
    // A push into restic with --no-keep-local writes no archive here.
    let local = plan.keep_local || !plan.push_vault;
    // A restore that died may have left a half-done swap beside a volume's `_data` (settled
    // first: a mount would fail) or inside a volume, finished before copying. Then two helper
    // containers at once (a third of a second each): the leftovers inside, and the sizes,
    // measured again when such a leftover was settled meanwhile.
    let names: Vec<&str> = sources.volumes.iter().map(|v| v.source()).collect();
    let ui = &ctx.ui;
    let beside = crate::engine::staging::recover_beside(docker, ui, &names)?;
    let (recovered, sizes) = std::thread::scope(|scope| {
        let recovering = scope.spawn(|| crate::engine::staging::recover(docker, ui, &names));
        let sizes = check_space(docker, dir, &sources, local);
        (recovering.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the recovery thread panicked"))), sizes)
    });
    sources.sizes = match (recovered? + beside, sizes) {
        (0, sizes) => sizes?,
        (_, _) => check_space(docker, dir, &sources, local)?,
    };
    sources.trees = super::trees::decide(ctx, plan, &sources.volumes)?;
    Ok(sources)
}

/// Says at backup time which copied bind a restore would refuse as it is laid out now: one that
/// is, or lies below, a symbolic link, or holds a bind reached through one (a restore writes
/// only through real directories). Checked on this machine when the engine is local.
fn warn_unrestorable_binds(sources: &Sources) {
    if !crate::engine::docker::helper::engine_is_local() {
        return;
    }
    for v in sources.volumes.iter().filter(|v| v.bind.is_some()) {
        let paths = std::iter::once(v.source()).chain(v.holds.iter().map(String::as_str));
        for e in paths.filter_map(|p| crate::files::refuse_symlinks(Path::new(p)).err()) {
            eprintln!("warning: {e:#}; it is copied, but a restore of {} refuses it as long as this is so", v.source());
        }
    }
}

/// The planned volumes that exist in the engine; with `only_existing`, the database only when
/// its volume exists (a service started on a missing volume would only create an empty one).
fn sources<'a>(docker: &Docker, plan: &'a BackupPlan, opts: &Options) -> Result<Sources<'a>> {
    let existing = docker.volume_names()?;
    let mut skipped: Vec<Skipped> =
        plan.skipped.iter().map(|(n, r)| Skipped { name: n.clone(), reason: r.clone() }).collect();
    let mut to_copy = Vec::new();
    for v in &plan.volumes {
        let present = match v.bind.as_deref() {
            Some(path) => docker.host_dir_exists(path)?,
            None => existing.contains(&v.name),
        };
        if present {
            to_copy.push(v);
        } else {
            skipped.push(Skipped { name: v.source().into(), reason: "does not exist (never created)".into() });
        }
    }
    let mut dbs = Vec::new();
    for d in &plan.dbs {
        match d.volume.as_ref().filter(|v| opts.only_existing && !existing.contains(v)) {
            Some(missing) => skipped.push(Skipped {
                name: missing.clone(),
                reason: format!("does not exist: no database of service {} to dump", d.login.service),
            }),
            None => dbs.push(d),
        }
    }
    Ok(Sources { dbs, volumes: to_copy, skipped, sizes: BTreeMap::new(), trees: BTreeMap::new() })
}

/// Space: the archive can be as large as the data when nothing compresses, and the database
/// dumps are written beside it first; without a local archive (`--no-keep-local` into restic)
/// only the dumps need room here. Returns every source's size (the metadata records them for
/// restore's own space check; the progress bars' totals).
fn check_space(docker: &Docker, dir: &Path, sources: &Sources, local: bool) -> Result<BTreeMap<String, u64>> {
    let dumped: Vec<&str> = sources.dbs.iter().filter_map(|d| d.volume.as_deref()).collect();
    let copied: Vec<&str> = sources.volumes.iter().map(|v| v.source()).collect();
    let existing = docker.volume_names()?;
    // Binds were checked by `sources`: they are there. A database's volume may also be copied.
    let names: std::collections::BTreeSet<&str> = [&copied[..], &dumped[..]]
        .concat()
        .into_iter()
        .filter(|n| n.starts_with('/') || existing.iter().any(|e| e == n))
        .collect();
    let sizes = docker.volume_sizes(&names.iter().copied().collect::<Vec<_>>())?;
    let needs_room: std::collections::BTreeSet<&str> = if local { names } else { dumped.into_iter().collect() };
    let needed: u64 = needs_room.iter().filter_map(|n| sizes.get(*n)).sum();
    let free = crate::files::free_space(dir)?;
    if free < needed {
        bail!(
            "not enough free space in {}: the data to back up is {} and only {} is free; free some space or pass --output-dir on a larger disk",
            dir.display(),
            human_bytes(needed),
            human_bytes(free)
        );
    }
    Ok(sizes)
}

/// The services the backup talks to (database servers to dump, Redis to save) started where
/// they are not running; returns the Redis services whose data is copied.
fn start_needed<'a>(
    guard: &mut ServiceGuard,
    ctx: &Ctx,
    plan: &'a BackupPlan,
    sources: &Sources,
) -> Result<Vec<&'a RedisSource>> {
    let redis: Vec<&RedisSource> =
        plan.redis.iter().filter(|r| sources.volumes.iter().any(|v| r.volumes.contains(&v.name))).collect();
    let services = sources.dbs.iter().map(|d| d.login.service.clone()).chain(redis.iter().map(|r| r.service.clone()));
    for svc in services {
        if guard.ensure_running(&svc, &ctx.ui).with_context(|| format!("start service {svc} for the backup"))? {
            ctx.ui.step(&format!("started {svc} for the backup; it will be stopped again afterwards"));
        }
    }
    Ok(redis)
}

/// The services stopped for the copy: with --stop, those using the copied volumes; always, the
/// servers of databases no engine can dump, while the archive takes their volume.
fn stop_for_copy(guard: &mut ServiceGuard, ctx: &Ctx, plan: &BackupPlan, sources: &Sources) -> Result<()> {
    if plan.stop {
        stop_users(guard, ctx, sources)?;
    }
    let mut servers: Vec<String> = sources.volumes.iter().flat_map(|v| v.stop_for_copy.clone()).collect();
    servers.sort();
    servers.dedup();
    guard.stop_for(&servers, "for a consistent copy of their data (a store that is copied stopped)", &ctx.ui)
}

/// With --stop, the services using the copied volumes stop (and start again later).
fn stop_users(guard: &mut ServiceGuard, ctx: &Ctx, sources: &Sources) -> Result<()> {
    let mut svcs: Vec<String> = sources.volumes.iter().flat_map(|v| v.services.clone()).collect();
    svcs.sort();
    svcs.dedup();
    svcs.retain(|s| !sources.dbs.iter().any(|d| &d.login.service == s));
    guard.stop_for(&svcs, "for a consistent copy (--stop)", &ctx.ui)
}

/// The archive's name, decided before anything is written (the lock is held, so it stays free):
/// the backup's start time, and `-N` when that name is taken.
struct Target {
    /// The backup's start: the name's stamp and the metadata's `created_at`, the same moment
    /// however long the dumps take (so a long backup is never "date in doubt").
    started: time::OffsetDateTime,
    final_path: PathBuf,
    file_name: String,
}

impl Target {
    fn decide(plan: &BackupPlan, opts: &Options, dir: &Path) -> Result<Target> {
        let extension = plan.compression.codec.extension();
        let suffix = if plan.seal.is_some() { format!("{extension}.age") } else { extension.to_string() };
        let started = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let name = archive_name_at(plan.kind, opts.tag.as_deref(), started, plan.compression.codec)?
            .replace(extension, &suffix);
        let mut final_path = dir.join(&name);
        let mut n = 1;
        while final_path.exists() {
            final_path = dir.join(name.replace(&suffix, &format!("-{n}{suffix}")));
            n += 1;
        }
        let file_name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Target { started, final_path, file_name })
    }
}

/// The archive itself: metadata, dumps, then each volume streamed from a read-only helper.
/// Returns its path, size and what it holds. With a restic push in the tree form and a local
/// archive kept, two streams: the local archive whole, then the repository's record (the
/// metadata naming the trees, the dumps, the volumes in the stream form: [`write_record`]).
fn write_archive(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    target: Target,
    vault: Option<Started>,
    dumps: Vec<dump::Dumped>,
    sources: &Sources,
) -> Result<Written> {
    if crate::store::trust::Policy::of(ctx)?.signing.is_some() {
        // Asked before anything is written: an archive that cannot be signed would be untrusted.
        crate::engine::sign::key_file()?;
    }
    let Target { started, final_path, file_name } = target;
    let mut delivery = start_delivery(ctx, plan, vault, &file_name)?;
    let local = plan.keep_local || delivery.tap.is_none();
    // The tree form beside a local archive: the local one holds every volume, the record not.
    let split = local && delivery.tap.is_some() && !sources.trees.is_empty();
    let tap = if split { None } else { delivery.tap.take() };
    let out = archive::Outputs { local, seal: plan.seal.as_ref(), mirror: delivery.mirror.take(), tap };
    let mut writer = ArchiveWriter::create_with(&final_path, plan.compression, threads(), out)?;
    let created_at = started.format(&time::format_description::well_known::Rfc3339)?;
    let trees = if split { BTreeMap::new() } else { sources.trees.clone() };
    write_head(
        ctx,
        plan,
        opts,
        &mut writer,
        &Content { dumps: &dumps, sources, trees: &trees, created_at: &created_at },
    )?;
    // The dumps' files go before the volumes are read, unless the record needs them again.
    let dumps = if split { dumps } else { Vec::new() };
    write_volumes(ctx, &mut writer, sources, &trees)?;
    let stats = writer.stats;
    let mut committed = writer.commit_all()?;
    let (bytes, sha256) = (committed.size, committed.sha256);
    // Written by this host: a push of exactly these bytes counts as its own in the remote.
    if let Err(e) = crate::store::pushed::record_written(&file_name, &sha256) {
        eprintln!("warning: {file_name} is not in this host's record of backups ({e:#}); a push of it will not count as this host's");
    }
    if local {
        crate::store::trust::sign_local(ctx, &final_path, committed.size, committed.sha256, committed.index_sha256)
            .with_context(|| format!("the archive {} was written but not signed", final_path.display()))?;
    }
    if split {
        let content = Content { dumps: &dumps, sources, trees: &sources.trees, created_at: &created_at };
        committed.tapped = write_record(ctx, plan, opts, &final_path, delivery.tap.take(), &content)?;
    }
    drop(dumps);
    let trees: Vec<String> = sources.trees.values().cloned().collect();
    deliver(ctx, opts, delivery, (&final_path, &trees), committed, local)?;
    Ok(Written { path: final_path, bytes, stats, sha256, local })
}

fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// What goes into an archive's stream: the dumps, the volumes (those in `trees` left to
/// restic), the metadata made of them.
#[derive(Clone, Copy)]
struct Content<'a> {
    dumps: &'a [dump::Dumped],
    sources: &'a Sources<'a>,
    trees: &'a BTreeMap<String, String>,
    created_at: &'a str,
}

/// The repository's record beside a kept local archive, into the restic push's `tap`: tar only
/// (restic compresses), the dumps read again from their files, the volumes in the stream form
/// copied again (on a local engine these are few: volumes with mount options, unreadable binds).
/// The trees are read by restic once this is written, the services still as for the copy.
fn write_record(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    final_path: &Path,
    tap: Option<crate::engine::process::ToolWriter>,
    content: &Content,
) -> Result<Option<archive::tap::Tapped>> {
    let out = archive::Outputs { local: false, seal: None, mirror: None, tap };
    let mut writer = ArchiveWriter::create_with(final_path, plan.compression, threads(), out)?;
    (|| {
        write_head(ctx, plan, opts, &mut writer, content)?;
        write_volumes(ctx, &mut writer, content.sources, content.trees)
    })()
    .context("write the archive's record for the restic push")?;
    let committed = writer.commit_all().context("write the archive's record for the restic push")?;
    Ok(committed.tapped)
}

/// Writes the head of `content` into `writer`: the metadata (checked by the grammar verify and
/// restore will apply), then each dump.
fn write_head(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    writer: &mut ArchiveWriter,
    content: &Content,
) -> Result<()> {
    let config = ctx.model()?.1.clone().unwrap_or_default();
    let infos: Vec<DbInfo> = content.dumps.iter().map(|d| d.info.clone()).collect();
    let meta = metadata(ctx, plan, opts, &config, infos, content)?;
    // What verify and restore will demand of the archive, demanded of it before it is written.
    grammar::check_metadata(&meta)
        .context("this backup cannot be archived as it is (rename what the message names)")?;
    archive::write_metadata(writer, &meta)?;
    for (entry, file) in content.dumps.iter().flat_map(|d| &d.files) {
        // Read through the descriptor it was written and checked through: it has no name.
        writer.add_file(entry, file.len()?, file.reader()).with_context(|| format!("add {entry}"))?;
    }
    Ok(())
}

/// Writes each volume of `sources` not in `trees` into `writer`, streamed from a read-only helper.
fn write_volumes(
    ctx: &Ctx,
    writer: &mut ArchiveWriter,
    sources: &Sources,
    trees: &BTreeMap<String, String>,
) -> Result<()> {
    let docker = ctx.docker()?;
    for v in sources.volumes.iter().filter(|v| !trees.contains_key(&v.name)) {
        crate::signals::check()?;
        let total = sources.sizes.get(v.source()).copied().unwrap_or(0);
        let progress = ctx.ui.progress_to(&format!("copy volume {}", v.source()), total);
        let mut child = docker.volume_tar(v.source()).with_context(|| format!("read volume {}", v.source()))?;
        let stats = writer
            .add_volume_tar(&v.name, &mut child, &mut |n| {
                progress.inc(n);
                crate::signals::check()
            })
            .with_context(|| format!("back up volume {}", v.name))?;
        child.finish().with_context(|| format!("back up volume {}", v.name))?;
        progress.finish(&format!("volume {}: {} files, {}", v.name, stats.files, human_bytes(stats.bytes)));
    }
    Ok(())
}

/// What [`write_archive`] made: the archive's path (not there when `local` is false: the tar
/// stream went only into a restic repository), its size and SHA-256 as stored (of the tar
/// stream, without a file) and what it holds.
struct Written {
    path: PathBuf,
    bytes: u64,
    stats: archive::StreamStats,
    sha256: [u8; 32],
    local: bool,
}

/// What the metadata says of one copied volume or bind.
/// Where a new archive goes besides the local file.
#[derive(Default)]
struct Delivery {
    /// An rclone remote, uploaded to while the archive is written (through `mirror`).
    upload: Option<crate::tasks::offsite::Upload>,
    mirror: Option<archive::sink::Mirror>,
    /// A restic repository, opened before anything is written: it takes the tar stream as it
    /// is written (through `tap`).
    vault: Option<(VaultSpec, std::sync::Arc<crate::engine::restic::Restic>)>,
    tap: Option<crate::engine::process::ToolWriter>,
    /// The repository's snapshots of the project, listed while the push started.
    listed: Option<Vec<crate::engine::restic::Snapshot>>,
}

/// `--push` to a restic repository: the push started on a thread (restic's start overlaps the
/// caller's checks; [`Starting::ready`] before anything is written); None for other remotes
/// and without `--push`.
fn start_vault(ctx: &Ctx, plan: &BackupPlan, opts: &Options, file_name: &str) -> Result<Option<Starting>> {
    let Some(remote) = &plan.push else { return Ok(None) };
    let Some(spec) = crate::store::vault::lookup(ctx, remote)? else { return Ok(None) };
    Ok(Some(Starting::begin(&ctx.stack.name, &spec, opts.create_remote, file_name)))
}

/// Where the archive goes besides the local file: the restic push already started, or an
/// rclone upload begun now.
fn start_delivery(ctx: &Ctx, plan: &BackupPlan, vault: Option<Started>, file_name: &str) -> Result<Delivery> {
    if let Some(Started { spec, restic, writer, listed }) = vault {
        return Ok(Delivery { vault: Some((spec, restic)), tap: Some(writer), listed, ..Delivery::default() });
    }
    let Some(remote) = &plan.push else { return Ok(Delivery::default()) };
    let (upload, mirror) = crate::tasks::offsite::Upload::begin(ctx, remote, file_name)?;
    Ok(Delivery { upload: Some(upload), mirror: Some(mirror), ..Delivery::default() })
}

/// After the local commit: the upload completed (or pushed again), or the snapshot the tar
/// stream went into completed (or the local archive pushed again when there is one); on
/// failure the local archive is kept and named.
fn deliver(
    ctx: &Ctx,
    opts: &Options,
    to: Delivery,
    (path, trees): (&Path, &[String]),
    mut done: archive::Committed,
    local: bool,
) -> Result<()> {
    let kept = |e: anyhow::Error| {
        e.context(format!("the archive was written but not pushed; it is kept at {}", path.display()))
    };
    if let Some(u) = to.upload {
        return u.complete(ctx, path, done).map_err(kept);
    }
    let Some((spec, restic)) = &to.vault else { return Ok(()) };
    let tapped = done.tapped.take().context("the push to the restic repository did not start")?;
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let streamed = match tapped.writer {
        Ok(writer) => {
            let stream = (&tapped.sha256, tapped.bytes);
            crate::tasks::offsite::vault::complete_stream(ctx, restic, (&file, trees, to.listed), writer, stream)
        }
        Err(e) => Err(e.into()),
    };
    match streamed {
        Ok(snapshot) => {
            let short = &snapshot[..8.min(snapshot.len())];
            ctx.ui.step(&format!("pushed {file} to {} as snapshot {short} while it was written", spec.name));
            Ok(())
        }
        Err(e) if local => {
            eprintln!(
                "warning: the push to {} while the archive was written failed ({e:#}); pushing it again",
                spec.name
            );
            let files = [crate::store::local::LocalFile::open(path).map_err(kept)?];
            crate::tasks::offsite::vault::push(ctx, spec, &files, false, opts.create_remote).map(drop).map_err(kept)
        }
        Err(e) => Err(e.context(format!(
            "the push to {} failed and no local copy was written (--no-keep-local); nothing of this backup was kept",
            spec.name
        ))),
    }
}

fn volume_info(plan: &BackupPlan, v: &VolumeChoice, content: &Content) -> VolumeInfo {
    let sizes = &content.sources.sizes;
    let consistency = if plan.redis.iter().any(|r| r.volumes.contains(&v.name)) {
        "redis-save"
    } else if plan.stop || !v.stop_for_copy.is_empty() {
        "stopped"
    } else {
        "live"
    };
    VolumeInfo {
        key: v.key.clone(),
        name: v.name.clone(),
        role: v.role.as_str().into(),
        priority: v.priority.as_str().into(),
        driver: v.driver.clone(),
        labels: v.labels.clone(),
        entry: archive::volume_prefix(&v.name),
        consistency: consistency.into(),
        size_bytes: sizes.get(v.source()).copied(),
        bind: v.bind.clone(),
        bind_mounts: v
            .bind_mounts
            .iter()
            .map(|(service, target)| archive::BindMount { service: service.clone(), target: target.clone() })
            .collect(),
        tree: content.trees.get(&v.name).cloned(),
    }
}

fn metadata(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    config_json: &str,
    databases: Vec<DbInfo>,
    content: &Content,
) -> Result<Metadata> {
    let (volumes, skipped) = (&content.sources.volumes, &content.sources.skipped);
    let mut entries =
        vec![archive::EntryInfo { path: archive::METADATA.into(), what: "this description of the archive".into() }];
    for db in &databases {
        entries.extend(dump_entries(db));
    }
    let infos: Vec<VolumeInfo> = volumes
        .iter()
        .map(|v| {
            entries.push(archive::EntryInfo {
                path: archive::volume_prefix(&v.name),
                what: match &v.bind {
                    Some(path) => format!("the files of the bind mount {path} (role {})", v.role.as_str()),
                    None => format!("the files of volume {} (role {})", v.name, v.role.as_str()),
                },
            });
            volume_info(plan, v, content)
        })
        .collect();
    entries.push(archive::EntryInfo {
        path: archive::CHECKSUMS.into(),
        what: "SHA-256 of every file (sha256sum -c)".into(),
    });
    Ok(Metadata {
        format: archive::FORMAT.into(),
        format_version: archive::FORMAT_VERSION,
        kind: plan.kind.as_str().into(),
        project: plan.project.clone(),
        compose_files: ctx.stack.files.iter().map(|f| f.display().to_string()).collect(),
        model_sha256: archive::hex(&Sha256::digest(config_json.as_bytes())),
        environment: opts.environment.clone(),
        created_at: content.created_at.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        tag: opts.tag.clone(),
        entries,
        postgres: None,
        databases,
        volumes: infos,
        skipped: skipped.to_vec(),
        project_dir: Some(ctx.stack.project_dir.display().to_string()),
    })
}

/// What each dump entry of a service is, for the metadata's `entries`.
fn dump_entries(db: &DbInfo) -> Vec<archive::EntryInfo> {
    let record = db.engine.record();
    let (globals, each) = (record.globals_what, record.each_what);
    let mut out: Vec<archive::EntryInfo> = db
        .globals_entry
        .iter()
        .map(|g| archive::EntryInfo { path: g.clone(), what: format!("{globals} of service {}", db.service) })
        .collect();
    for d in &db.databases {
        let what = match record.single_dump {
            Some(_) => format!("{each} of service {}", db.service),
            None => format!("{each} of database {} of service {}", d.name, db.service),
        };
        out.push(archive::EntryInfo { path: d.entry.clone(), what });
    }
    out
}

fn unprotected(skipped: &[Skipped]) -> Vec<String> {
    skipped.iter().filter(|s| s.reason.starts_with(UNPROTECTED)).map(|s| s.name.clone()).collect()
}

/// `SERVICE/DATABASE` for each dumped database (a hook's: `SERVICE/dump`).
fn dumped_names(dumps: &[dump::Dumped]) -> Vec<String> {
    dumps.iter().flat_map(|d| d.info.databases.iter().map(|x| format!("{}/{}", d.info.service, x.name))).collect()
}

/// Every database named with `--database` was found in some server.
fn check_requested_databases(opts: &Options, dumps: &[dump::Dumped]) -> Result<()> {
    for want in &opts.databases {
        if !dumps.iter().any(|d| d.info.databases.iter().any(|x| &x.name == want)) {
            bail!("--database {want}: no database server of the stack has a database of that name");
        }
    }
    Ok(())
}

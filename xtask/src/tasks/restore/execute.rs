//! Doing a restore: the survey and space check, the one pass that stages volumes and dumps
//! beside the live data, the safety backup, the swap by renames while only the users are
//! stopped, and the way back after any failure or signal.

use super::database;
use super::plan::*;
use super::*;
use crate::archive::extract::{self, Verified};
use crate::archive::{Rules, Source};
use crate::context::Ctx;
use crate::engine::docker::Docker;
use crate::engine::services::{self, ServiceGuard};
use crate::engine::staging;
use crate::lock::Lock;
use crate::signals;
use crate::store::binds::StackBinds;
use crate::tasks::backup;
use crate::ui::human_bytes;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Now, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// Carries out a prepared restore under the project's lock: free space checked, a safety
/// backup of what is replaced, then the replacement; on failure or SIGINT/SIGTERM the way back
/// (the safety backup restored, services put back) before the error is returned.
pub fn execute(ctx: &Ctx, p: &Prepared, opts: &Options, lock: &Lock) -> Result<Outcome> {
    let docker = ctx.docker()?;
    lock.covers(&p.dir, &p.plan.project)?;
    if docker.remove_orphan_helpers()? > 0 {
        ctx.ui.step("removed helper containers left by an interrupted run");
    }
    let survey = staging::Survey::take(ctx.docker()?, &ctx.ui, &p.present())?;
    check_space(docker, &survey, p)?;
    let mut guard = ServiceGuard::new(docker, &ctx.stack);
    guard.remember()?;
    let mut created = Vec::new();
    let mut layout = staging::Staging::of(std::process::id(), &survey);
    let (safety, staged) = match &p.verified {
        Some(_) => match take_safety(ctx, p, opts, lock, &mut guard) {
            Ok(safety) => {
                signals::install()?;
                (safety.safety, None)
            }
            Err(e) => {
                let e = e.context("nothing was replaced");
                return Err(match guard.restore(&ctx.ui) {
                    Ok(()) => e,
                    Err(r) => e.context(format!("and putting the services back failed: {r:#}")),
                });
            }
        },
        None => {
            // A signal from here on does not kill the tool mid-way: it takes the way back.
            signals::install()?;
            match stage(ctx, p, opts, lock, &layout, &mut created, &mut guard) {
                Ok((safety, staged)) => (safety, Some(staged)),
                Err(e) => return Err(not_replaced(ctx, p, &layout, &created, None, guard, e)),
            }
        }
    };
    if let Some(s) = &safety {
        ctx.ui.step(&format!(
            "should this restore be cut off (kill -9), undo it with: {}",
            undo_command(ctx, &s.path, &undo_only(&p.plan))
        ));
    }
    let mut old_dbs = Vec::new();
    let mut moments =
        Downtime { stop_began: unix_now(), swap_began: 0.0, swap_ended: 0.0, running_again: 0.0, healthy_again: 0.0 };
    let replaced = match (&p.verified, &staged) {
        (Some(v), _) => replace(ctx, v, &p.plan, &p.dir, &mut guard, &mut created),
        (None, Some(st)) => swap_all(ctx, p, &mut layout, &mut guard, st, &mut old_dbs, &mut moments),
        (None, None) => unreachable!("staged above"),
    };
    if let Err(e) = replaced {
        if let (Some(NothingSwapped), Some(st)) = (e.downcast_ref::<NothingSwapped>(), &staged) {
            // Stopped while its services stopped: nothing replaced, so no way back, only tidying.
            return Err(not_replaced(ctx, p, &layout, &created, Some(st), guard, e));
        }
        // A swap beside a volume cut off between its two renames left no `_data`: the way back
        // needs one to mount (a swap that never began is left alone).
        if let Err(s) = staging::settle_own(docker, &layout) {
            eprintln!("warning: {s:#}");
        }
        return Err(take_the_way_back(ctx, &p.plan.dbs, e, safety.as_ref(), &created, &p.dir, guard));
    }
    // Services that do not come back (or not healthy) with the restored data: the way back too.
    let running = match guard.start_stopped(&ctx.ui).and_then(|r| fault_after("start").map(|()| r)) {
        Ok(running) => running,
        Err(e) => return Err(take_the_way_back(ctx, &p.plan.dbs, e, safety.as_ref(), &created, &p.dir, guard)),
    };
    moments.running_again = unix_now();
    if let Err(e) = services::wait_until_up(ctx.docker()?, &running, &ctx.ui).and_then(|()| fault_after("health")) {
        let e = e.context("the services did not come back healthy with the restored data");
        return Err(take_the_way_back(ctx, &p.plan.dbs, e, safety.as_ref(), &created, &p.dir, guard));
    }
    moments.healthy_again = unix_now();
    let downtime = (!running.is_empty()).then_some(moments);
    let downtime_seconds = downtime.map(|d| d.running_again - d.stop_began);
    let healthy_seconds = downtime.map(|d| d.healthy_again - d.stop_began);
    // The services are healthy again: the old database copies can go (the database service is
    // still up, also when this restore had to start it). The restore is done either way.
    if let Err(e) = database::drop_old(ctx, &p.plan.dbs, &old_dbs) {
        eprintln!("warning: the old database copies were not dropped ({e:#}); the next restore drops them");
    }
    let targets: Vec<&str> = p.plan.volumes.iter().map(|v| v.target.as_str()).collect();
    if let Err(e) = staging::empty_trash(ctx.docker()?, &targets, &layout) {
        eprintln!("warning: the old content the swap moved aside was not removed ({e:#}); the next restore removes it");
    }
    let services = guard.restore_checked(&ctx.ui).context("the restore is done (the data are in place), but")?;
    ctx.ui.step(&services);
    let undo = safety.map(|s| s.path);
    let undo_only = undo_only(&p.plan);
    Ok(Outcome {
        project: p.plan.project.clone(),
        archive: p.path.clone(),
        undo,
        undo_only,
        downtime_seconds,
        healthy_seconds,
        downtime,
    })
}

/// After a failure once the swap began: the safety backup restored (or what the restore created
/// removed) and the services put back; the error says what happened and, if that failed too,
/// where the state before the restore is.
fn take_the_way_back(
    ctx: &Ctx,
    dbs: &[DbRestore],
    e: anyhow::Error,
    safety: Option<&Safety>,
    created: &[String],
    dir: &Path,
    mut guard: ServiceGuard,
) -> anyhow::Error {
    let back = way_back(ctx, safety, created, dir, &mut guard);
    // The safety backup is back in place: this restore's staged and old database copies are
    // garbage. Without one (or if it failed) the old copies are what is left: they stay.
    if back.is_ok() && safety.is_some() {
        if let Err(d) = database::drop_own(ctx, dbs) {
            eprintln!("warning: this restore's database copies were not dropped ({d:#}); the next restore drops them");
        }
    }
    let restarted = guard.restore_checked(&ctx.ui);
    match (back, restarted) {
        (Ok(msg), Ok(services)) => e.context(format!("the restore failed; {msg}; {services}")),
        (Err(b), _) | (_, Err(b)) => e.context(format!(
            "the restore failed and so did the way back ({b:#}); the state before it is in {}",
            safety
                .map(|s| format!("{}: {}", s.path.display(), undo_command(ctx, &s.path, &s.only)))
                .unwrap_or_else(|| "no safety backup".into())
        )),
    }
}

/// The safety backup, opened once right after it was written and checked against the digest
/// its writing computed: the way back reads it through this descriptor (pinned to that digest),
/// never by its name, which anyone who can write the backup directory could replace.
pub(super) struct Safety {
    pub(super) path: PathBuf,
    src: Source,
    /// What its undo names with `--only` ([`undo_only`]).
    only: Vec<String>,
}

/// The safety backup taken (if any), and when services were stopped for it (a store copied
/// stopped: its users stay stopped until the swap).
pub(super) struct SafetyTaken {
    pub(super) safety: Option<Safety>,
    pub(super) stopped_at: Option<f64>,
}

fn take_safety(ctx: &Ctx, p: &Prepared, opts: &Options, lock: &Lock, guard: &mut ServiceGuard) -> Result<SafetyTaken> {
    if opts.no_safety_backup {
        ctx.ui.step("no safety backup (--no-safety-backup): this restore cannot be undone");
        return Ok(SafetyTaken { safety: None, stopped_at: None });
    }
    safety_backup(ctx, p, lock, guard)
}

/// What the one pass left ready to swap in: the staged databases and the dumps it spooled
/// (MariaDB and hooks load them in the swap).
struct Staged {
    dbs: database::Staged,
    dumps: BTreeMap<String, extract::Spooled>,
    /// When the users of a store copied stopped were stopped for the safety backup (they stay
    /// stopped until the swap): the downtime's start for them.
    stopped_at: Option<f64>,
}

/// The one pass: every target volume staged and every dump spooled from the same bytes that
/// are verified; then (the live state still untouched) the safety backup, then the databases
/// staged beside the live ones. Returns the safety backup and what was staged.
fn stage(
    ctx: &Ctx,
    p: &Prepared,
    opts: &Options,
    lock: &Lock,
    layout: &staging::Staging,
    created: &mut Vec<String>,
    guard: &mut ServiceGuard,
) -> Result<(Option<Safety>, Staged)> {
    let docker = ctx.docker()?;
    refuse_linked_binds(&p.plan)?;
    let existing = docker.volume_names()?;
    for v in &p.plan.volumes {
        if !target_exists(docker, &existing, &v.target)? {
            create_target(ctx, docker, v, &p.plan.project)?;
            if !is_bind(&v.target) {
                created.push(v.target.clone());
            }
        }
    }
    let targets: BTreeMap<String, String> =
        p.plan.volumes.iter().map(|v| (v.archived.clone(), v.target.clone())).collect();
    let under = format!("{}/", layout.names.staging);
    let places = |target: &str| layout.place(target).to_string();
    let pass = extract::OnePass {
        docker,
        ui: &ctx.ui,
        targets: &targets,
        places: &places,
        under: under.as_bytes(),
        dir: &p.dir,
    };
    ctx.ui.step(&format!("read, verify and stage {} in one pass", p.path.display()));
    let (report, dumps) = pass.run(&p.src, Rules { allow_special: opts.allow_special })?;
    if report.metadata.as_ref() != Some(&p.meta) {
        bail!("{} changed since its metadata was read: nothing was replaced", p.path.display());
    }
    signals::check()?;
    let SafetyTaken { safety, stopped_at } = take_safety(ctx, p, opts, lock, guard)?;
    for db in &p.plan.dbs {
        signals::check()?;
        guard.ensure_running(&db.login.service, &ctx.ui)?;
    }
    database::recover(ctx, &p.plan.dbs)?;
    let dbs = database::stage(ctx, &p.plan.dbs, &dumps)?;
    Ok((safety, Staged { dbs, dumps, stopped_at }))
}

/// Stopped before anything was replaced (a staging that failed or was interrupted, a signal
/// while the services stopped for the swap): the staged copies go, the services are put back,
/// and the error says the volumes and databases are as they were.
fn not_replaced(
    ctx: &Ctx,
    p: &Prepared,
    layout: &staging::Staging,
    created: &[String],
    staged: Option<&Staged>,
    guard: ServiceGuard,
    e: anyhow::Error,
) -> anyhow::Error {
    unstage_all(ctx, p, layout, created);
    if let Some(st) = staged {
        database::unstage(ctx, &p.plan.dbs, &st.dbs);
    }
    let e = e.context(
        "the restore failed or was interrupted before anything was replaced: the volumes and databases are as they were",
    );
    match guard.restore(&ctx.ui) {
        Ok(()) => e,
        Err(r) => e.context(format!("and putting the services back failed: {r:#}")),
    }
}

/// After a failed staging: the staged copies go, and volumes the restore created.
fn unstage_all(ctx: &Ctx, p: &Prepared, layout: &staging::Staging, created: &[String]) {
    let Ok(docker) = ctx.docker() else { return };
    let _calm = signals::Suspended::begin();
    for v in &p.plan.volumes {
        if created.contains(&v.target) {
            let _ = docker.apply(&docker.cmd(["volume", "rm", "--force", &v.target]));
        } else if let Err(e) = staging::discard(docker, &v.target, layout) {
            eprintln!("warning: {e:#}; the next restore removes it");
        }
    }
}

/// A restore interrupted by SIGINT/SIGTERM after its services stopped, before the swap.
#[derive(Debug)]
struct NothingSwapped;

impl std::fmt::Display for NothingSwapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by SIGINT or SIGTERM before the swap")
    }
}

impl std::error::Error for NothingSwapped {}

/// The short destructive part: the services using the volumes stop, every staged volume is
/// swapped into place by renames, then the staged databases.
fn swap_all(
    ctx: &Ctx,
    p: &Prepared,
    layout: &mut staging::Staging,
    guard: &mut ServiceGuard,
    staged: &Staged,
    old_dbs: &mut Vec<Vec<String>>,
    moments: &mut Downtime,
) -> Result<()> {
    let docker = ctx.docker()?;
    let mut users: Vec<String> = p.plan.volumes.iter().flat_map(|v| v.services.clone()).collect();
    users.sort();
    users.dedup();
    refuse_linked_binds(&p.plan)?;
    moments.stop_began = staged.stopped_at.unwrap_or_else(unix_now);
    guard.stop_for(&users, "for the swap", &ctx.ui)?;
    // A signal while the services stopped (up to their grace period): the last moment to stop
    // with nothing replaced.
    if signals::interrupted() {
        return Err(NothingSwapped.into());
    }
    // The swaps are short and must not be cut off half-way.
    let _calm = signals::Suspended::begin();
    moments.swap_began = unix_now();
    // A container this restore did not stop (outside the stack, through `volumes_from`, paused)
    // still mounts a volume staged beside its `_data`: swapped inside it instead, so that the
    // container sees the restored content rather than a removed directory.
    let beside: Vec<String> = layout.beside().into_iter().map(str::to_string).collect();
    let busy = docker.volumes_in_use(&beside)?;
    if !busy.is_empty() {
        ctx.ui.step(&format!("{} still mounted by containers not stopped: swapped inside", busy.join(", ")));
        layout.keep_inside(&busy);
    }
    let targets: Vec<&str> = p.plan.volumes.iter().map(|v| v.target.as_str()).collect();
    if !targets.is_empty() {
        ctx.ui.step(&format!("swap the restored content into {}", targets.join(", ")));
        staging::swap(docker, &targets, layout)?;
    }
    refuse_linked_inner_binds(&p.plan)?;
    fault_after("volume-swap")?;
    // A database server that mounts a restored volume stopped with its other users: its dumps
    // load into it next, so it runs again first.
    let servers: Vec<String> = p.plan.dbs.iter().map(|db| db.login.service.clone()).collect();
    guard.start_again(&servers, &ctx.ui)?;
    *old_dbs = database::swap(ctx, &p.plan.dbs, &staged.dbs, &staged.dumps)?;
    fault_after("database-swap")?;
    moments.swap_ended = unix_now();
    Ok(())
}

/// A test hook, in debug builds only (those `cargo test` builds and the end-to-end tests run):
/// `XTASK_FAULT_AFTER=STEP` makes the restore fail right after that step of the swap
/// (`volume-swap`, `database-swap`, `start`, `health`; `path-swap` for `restore --path`), so the end-to-end tests prove the way
/// back from each. The failure is the same one any error there causes: recoverable.
#[cfg(debug_assertions)]
pub(super) fn fault_after(step: &str) -> Result<()> {
    match std::env::var("XTASK_FAULT_AFTER") {
        Ok(wanted) if wanted == step => bail!("fault injected after the {step} step (XTASK_FAULT_AFTER)"),
        _ => Ok(()),
    }
}

/// A release build has no test hook: the variable is not read.
#[cfg(not(debug_assertions))]
pub(super) fn fault_after(_step: &str) -> Result<()> {
    Ok(())
}

/// The safety backup: exactly what will be overwritten, the present target volumes, and the
/// databases if their volume exists; None when nothing that would be replaced exists. As
/// consistent as a backup: a store no engine dumps (MongoDB, Kafka, MinIO…) is copied with its
/// users stopped, and since they are about to stop for the swap anyway, they are stopped here
/// by the restore's own guard and stay stopped until the swap (stop, safety copy, swap).
pub(super) fn safety_backup(ctx: &Ctx, p: &Prepared, lock: &Lock, guard: &mut ServiceGuard) -> Result<SafetyTaken> {
    let present = p.present.clone();
    let kind = if present.is_empty() { backup::Kind::Db } else { backup::Kind::Full };
    let none = SafetyTaken { safety: None, stopped_at: None };
    if p.plan.dbs.is_empty() && present.is_empty() {
        ctx.ui.step("nothing that would be replaced exists: no safety backup needed");
        return Ok(none);
    }
    let bopts = backup::Options {
        volumes: present,
        tag: Some(SAFETY_TAG.into()),
        level: Some(1),
        dump_database: !p.plan.dbs.is_empty(),
        services: p.plan.dbs.iter().map(|d| d.login.service.clone()).collect(),
        only_existing: true,
        no_encrypt: way_back_in_clear(ctx, "the safety backup"),
        ..backup::Options::new(kind, p.dir.clone())
    };
    let plan = backup::prepare(ctx, &bopts).context("plan the safety backup (nothing was restored)")?;
    let mut stopped: Vec<String> = plan.volumes.iter().flat_map(|v| v.stop_for_copy.clone()).collect();
    stopped.sort();
    stopped.dedup();
    let stopped_at = (!stopped.is_empty()).then(unix_now);
    if !stopped.is_empty() {
        guard.stop_for(
            &stopped,
            "now, for the swap, so that the safety backup copies their stores stopped",
            &ctx.ui,
        )?;
    }
    ctx.ui.step("safety backup of what will be replaced");
    let s = backup::execute(ctx, &plan, &bopts, lock).context("take the safety backup (nothing was restored)")?;
    if s.volumes.is_empty() && s.databases.is_empty() {
        let _ = std::fs::remove_file(&s.path);
        ctx.ui.step("nothing that would be replaced exists: no safety backup needed");
        return Ok(SafetyTaken { stopped_at, ..none });
    }
    let written = crate::engine::remote::parse_hex32(&s.sha256).context("the safety backup's digest")?;
    let src = Source::open(&s.path)?;
    super::check_own(&src, written).context("the safety backup (nothing was restored)")?;
    Ok(SafetyTaken { safety: Some(Safety { path: s.path, src, only: undo_only(&p.plan) }), stopped_at })
}

/// The destructive part: volumes emptied and refilled, databases dropped and reloaded.
/// Volumes it had to create are recorded in `created` for the way back.
fn replace(
    ctx: &Ctx,
    verified: &Verified,
    plan: &RestorePlan,
    dir: &Path,
    guard: &mut ServiceGuard,
    created: &mut Vec<String>,
) -> Result<()> {
    let docker = ctx.docker()?;
    refuse_linked_binds(plan)?;
    let mut users: Vec<String> = plan.volumes.iter().flat_map(|v| v.services.clone()).collect();
    users.sort();
    users.dedup();
    guard.stop_for(&users, "to replace their data in place (--in-place)", &ctx.ui)?;
    let existing = docker.volume_names()?;
    for v in &plan.volumes {
        signals::check()?;
        let exists = target_exists(docker, &existing, &v.target)?;
        if !exists && !is_bind(&v.target) {
            created.push(v.target.clone());
        }
        restore_volume(ctx, docker, verified, v, exists, &plan.project)
            .with_context(|| format!("restore volume {}", v.target))?;
    }
    refuse_linked_inner_binds(plan)?;
    for db in &plan.dbs {
        signals::check()?;
        guard.ensure_running(&db.login.service, &ctx.ui)?;
    }
    database::in_place(ctx, verified, &plan.dbs, dir)?;
    signals::check()
}

/// After a failure or a signal: volumes the restore created are removed, and the safety backup
/// (if any) is restored the same way. Returns what it did.
fn way_back(
    ctx: &Ctx,
    safety: Option<&Safety>,
    created: &[String],
    dir: &Path,
    guard: &mut ServiceGuard,
) -> Result<String> {
    let docker = ctx.docker()?;
    eprintln!("the restore failed or was interrupted: taking the way back");
    for v in created {
        docker.apply(&docker.cmd(["volume", "rm", "--force", v])).with_context(|| format!("remove volume {v}"))?;
    }
    let Some(safety) = safety else {
        return Ok("no safety backup existed, so only volumes it had created were removed".into());
    };
    let verified = Verified::check(safety.src.duplicate()?, Rules::default())?;
    // Everything in it is named: it holds exactly what this restore replaced, binds the user
    // named (held ones too) among it.
    let meta = verified.meta();
    let dbs = (!meta.databases.is_empty()).then(|| "db".to_string());
    let every: Vec<String> =
        meta.volumes.iter().map(|v| v.bind.clone().unwrap_or_else(|| v.name.clone())).chain(dbs).collect();
    let plan = plan(&ctx.model()?.0, &StackBinds::of(ctx, dir)?, meta, &every, false)?;
    plan.check_refused(&safety.path, false)?;
    let mut again = Vec::new();
    // A second signal must not cut the way back off.
    let _calm = signals::Suspended::begin();
    replace(ctx, &verified, &plan, dir, guard, &mut again)
        .with_context(|| format!("restore the safety backup {}", safety.path.display()))?;
    Ok(format!("the state before it was restored from the safety backup {}", safety.path.display()))
}

/// Refuses when a target volume's filesystem cannot hold what the archive puts there: in its
/// place with `--in-place` (sizes from the verification), beside the current content when
/// staging (sizes from the metadata, which archives record since this release; without them a
/// short disk makes the staging fail, which changes nothing).
fn check_space(docker: &Docker, survey: &staging::Survey, p: &Prepared) -> Result<()> {
    // In place, the current content's room counts too.
    let sizes = if p.verified.is_some() { staging::sizes(docker, &p.present())? } else { BTreeMap::new() };
    for v in &p.plan.volumes {
        let needed = match &p.verified {
            Some(verified) => verified.report.volume_bytes.get(&v.archived).copied(),
            None => p.meta.volumes.iter().find(|m| m.name == v.archived).and_then(|m| m.size_bytes),
        };
        let Some(needed) = needed else { continue };
        let now = p.present.contains(&v.target).then(|| sizes.get(&v.target).copied().unwrap_or(0));
        let free = survey.free(now.map(|_| v.target.as_str()));
        let in_place = p.verified.is_some();
        let room = if in_place { free + now.unwrap_or(0) } else { free };
        if room < needed {
            let hint = if in_place {
                "free space on the Docker host and retry".to_string()
            } else {
                format!(
                    "the new copy is staged beside the current one; free {} more, or pass --in-place to empty the \
                     volume first (the safety backup is then the only way back)",
                    human_bytes(needed - room)
                )
            };
            bail!(
                "not enough space for volume {}: the archive holds {} for it and only {} is available; {hint} \
                 (nothing was changed)",
                v.target,
                human_bytes(needed),
                human_bytes(room)
            );
        }
    }
    Ok(())
}

fn restore_volume(
    ctx: &Ctx,
    docker: &Docker,
    verified: &Verified,
    v: &VolumeRestore,
    exists: bool,
    project: &str,
) -> Result<()> {
    if exists {
        ctx.ui.step(&format!("empty volume {}", v.target));
        let empty = docker.helper_writer(
            &v.target,
            &["find", "/v/0", "-mindepth", "1", "-maxdepth", "1", "-exec", "rm", "-rf", "{}", "+"],
        );
        docker.apply(&empty)?;
    } else {
        create_target(ctx, docker, v, project)?;
    }
    let total = verified.report.volume_bytes.get(&v.archived).copied().unwrap_or(0);
    let progress = ctx.ui.progress_to(&format!("fill volume {}", v.target), total);
    let files = extract::fill_volume(docker, verified, &v.archived, &v.target, &mut |n| progress.inc(n))?;
    progress.finish(&format!("volume {}: {files} files", v.target));
    Ok(())
}

/// Whether a restore target exists: the volume, or the bind's directory on the Docker host.
pub(super) fn target_exists(docker: &Docker, volumes: &[String], target: &str) -> Result<bool> {
    if is_bind(target) {
        docker.host_dir_exists(target)
    } else {
        Ok(volumes.iter().any(|v| v == target))
    }
}

/// Creates a missing target: a volume with its labels, or a bind's directory (0755, as Docker
/// would create it; left in place by the way back, like the directory Compose would make).
fn create_target(ctx: &Ctx, docker: &Docker, v: &VolumeRestore, project: &str) -> Result<()> {
    if !is_bind(&v.target) {
        return create_volume(ctx, docker, v, project);
    }
    ctx.ui.step(&format!("create directory {} for the bind mount", v.target));
    if docker.dry_run() {
        return Ok(());
    }
    if !crate::engine::docker::helper::engine_is_local() {
        bail!(
            "{} does not exist on the Docker host (DOCKER_HOST); create it there and run the restore again",
            v.target
        );
    }
    crate::files::create_dir_no_follow(Path::new(&v.target))
        .with_context(|| format!("create {} for the bind mount (as the user running the tool)", v.target))
}

/// Refuses the plan's bind targets when one of them, or a directory above it, is a symbolic link
/// (checked on this machine, without following links): Docker would follow it to wherever it
/// points. Checked when the plan is made, before staging and again right before the swap.
pub(super) fn refuse_linked_binds(plan: &RestorePlan) -> Result<()> {
    for v in plan.volumes.iter().filter(|v| is_bind(&v.target)) {
        crate::files::refuse_symlinks(Path::new(&v.target)).context("restore refused: nothing was changed")?;
    }
    Ok(())
}

/// Once a bind's new tree is in place, and before the services start: nothing on the way to a
/// bind of this stack inside it (mailcow's `./data/conf/dovecot/auth/x.php` inside
/// `./data/conf/dovecot`) may be a symbolic link, which the restored content could have put
/// there and Docker would follow when it mounts the inner bind. A link fails the restore, which
/// then takes the way back.
fn refuse_linked_inner_binds(plan: &RestorePlan) -> Result<()> {
    for v in plan.volumes.iter().filter(|v| is_bind(&v.target)) {
        for inner in &v.inner {
            crate::files::refuse_symlinks(Path::new(inner)).with_context(|| {
                format!("the restored tree of bind {} holds a symbolic link on the way to the bind {inner}", v.target)
            })?;
        }
    }
    Ok(())
}

fn create_volume(ctx: &Ctx, docker: &Docker, v: &VolumeRestore, project: &str) -> Result<()> {
    ctx.ui.step(&format!("recreate volume {} (driver {}, with its labels)", v.target, v.driver));
    let mut args = vec!["volume".to_string(), "create".into(), "--driver".into(), v.driver.clone()];
    let mut labels = v.labels.clone();
    labels.insert("com.docker.compose.project".into(), project.to_string());
    labels.insert("com.docker.compose.volume".into(), v.key.clone());
    for (k, val) in labels {
        args.push("--label".into());
        args.push(format!("{k}={val}"));
    }
    args.push(v.target.clone());
    docker.apply(&docker.cmd(args))
}

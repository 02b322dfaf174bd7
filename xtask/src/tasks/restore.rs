//! The `restore` task. Safe by construction: the archive is verified completely before anything
//! is touched (a bad one is refused), the user confirms what will be replaced, a safety backup
//! of exactly that is taken first (and its undo command printed at the end), only the services
//! using what is restored are stopped, and they are started again and waited for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::archive::extract::{self, Verified};
use crate::archive::{self, Metadata, Rules, Source};
use crate::context::Ctx;
use crate::engine::db::{self as dbengine, Detected};
use crate::engine::docker::Docker;
use crate::engine::services::{self, ServiceGuard};
use crate::engine::staging;
use crate::lock::Lock;
use crate::model::compose::Project;
use crate::signals;
use crate::store::binds::StackBinds;
use crate::tasks::backup;
use crate::ui::human_bytes;

mod database;

pub use database::DbRestore;

/// The tag of the safety backups restore takes; `--latest` passes over them.
pub const SAFETY_TAG: &str = "pre-restore";

pub struct Options {
    /// The archive; None: the newest of the project that is not a safety backup.
    pub archive: Option<PathBuf>,
    /// `db` (every database service), `db:SERVICE`, and/or volume names or keys; empty:
    /// everything in the archive.
    pub only: Vec<String>,
    pub yes: bool,
    pub force: bool,
    pub no_safety_backup: bool,
    /// Accept device nodes and FIFOs in volumes.
    pub allow_special: bool,
    /// Empty each volume and fill it in place (needs no room for a second copy, but the safety
    /// backup is then the only way back) instead of staging beside the current content.
    pub in_place: bool,
    pub dir: PathBuf,
    /// Stream the archive from this remote instead: (remote, file; None: its newest complete one).
    pub remote: Option<(String, Option<String>)>,
    /// The archive must be exactly the one this process wrote with this SHA-256 (migrate's
    /// rollback): checked through the open descriptor, and refused when it differs. Such an
    /// archive needs no signature: the tool itself vouches for it.
    pub expect_sha256: Option<[u8; 32]>,
}

impl Options {
    /// A restore of everything in `archive`, confirmed already (`yes`), with a safety backup.
    pub fn new(archive: PathBuf, dir: PathBuf) -> Options {
        Options {
            archive: Some(archive),
            only: Vec::new(),
            yes: true,
            force: false,
            no_safety_backup: false,
            allow_special: false,
            in_place: false,
            dir,
            remote: None,
            expect_sha256: None,
        }
    }
}

/// The command that undoes a restore from the safety backup `safety` (with the flag a clear
/// archive needs when `x-xtask.encrypt` is set).
pub fn undo_command(ctx: &Ctx, safety: &Path) -> String {
    let encrypts = ctx.offsite().is_ok_and(|s| s.encryption.enabled());
    let flag = if encrypts && !archive::is_sealed(safety) { " --allow-unencrypted" } else { "" };
    format!("cargo xtask restore {} --yes{flag}", safety.display())
}

/// Whether the tool's own way-back archives (safety backup, pre-migration) are written clear:
/// when `x-xtask.encrypt` is set but no identity to read them back is at hand, an encrypted one
/// could not be read by the way back that needs it. Says so when it happens.
pub fn way_back_in_clear(ctx: &Ctx, what: &str) -> bool {
    let encrypts = ctx.offsite().is_ok_and(|s| s.encryption.enabled());
    let clear = encrypts && crate::engine::crypt::identity(what).is_err();
    if clear {
        ctx.ui.step(&format!(
            "{what} is written unencrypted: {} is not set, and the way back must be able to read it",
            crate::engine::crypt::IDENTITY_VAR
        ));
    }
    clear
}

#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRestore {
    /// The volume's name inside the archive (`volumes/<archived>/`).
    pub archived: String,
    /// The volume it goes into now (same compose key, this stack's name for it).
    pub target: String,
    pub key: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    /// Services of this stack that mount it: stopped while it is replaced.
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan {
    pub project: String,
    pub dbs: Vec<DbRestore>,
    pub volumes: Vec<VolumeRestore>,
}

/// Decides what the archive restores into this stack. Pure: no engine access.
pub fn plan(
    project: &Project,
    binds: &StackBinds,
    meta: &Metadata,
    only: &[String],
    force: bool,
) -> Result<RestorePlan> {
    if meta.project != project.name && !force {
        bail!(
            "the archive belongs to project {:?}, this stack is {:?}; pass --force to restore it into this stack anyway",
            meta.project,
            project.name
        );
    }
    for o in only.iter().filter(|o| *o != "db" && !o.starts_with("db:")) {
        if !meta.volumes.iter().any(|v| &v.name == o || &v.key == o || project.volume_name(&v.key) == Some(o.as_str()))
        {
            let have: Vec<&str> = meta.volumes.iter().map(|v| v.name.as_str()).collect();
            bail!("--only {o}: the archive holds no such volume (it holds: db, {})", have.join(", "));
        }
    }
    let dbs = plan_databases(project, meta, only)?;
    let mut volumes = Vec::new();
    for v in &meta.volumes {
        if let Some(path) = &v.bind {
            let chosen = only.is_empty() || only.iter().any(|o| o == &v.name || o == path);
            if chosen {
                volumes.push(plan_bind(binds, meta, v, path)?);
            }
            continue;
        }
        // Only into a volume of this stack, by compose key: never a name the archive chose.
        let decl = project.volumes.iter().find(|d| d.key == v.key);
        let chosen =
            only.is_empty() || only.iter().any(|o| o == &v.name || o == &v.key || decl.is_some_and(|d| &d.name == o));
        if !chosen {
            continue;
        }
        let decl = decl.with_context(|| {
            format!(
                "the archive's volume {} (compose key {:?}) is not a volume of this stack: refused; \
                 leave it out with --only",
                v.name, v.key
            )
        })?;
        let target = decl.name.clone();
        volumes.push(VolumeRestore {
            archived: v.name.clone(),
            target,
            key: v.key.clone(),
            driver: decl.driver.clone().unwrap_or_else(|| "local".into()),
            labels: decl.labels.clone(),
            services: project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect(),
        });
    }
    if dbs.is_empty() && volumes.is_empty() {
        bail!("nothing to restore: the archive holds nothing that --only selects");
    }
    Ok(RestorePlan { project: project.name.clone(), dbs, volumes })
}

/// A bind goes back only into the bind this stack's compose file declares for its recorded
/// mounts (never a place the archive's path text chooses), never one holding the project or the
/// backup directory.
fn plan_bind(binds: &StackBinds, meta: &Metadata, v: &archive::VolumeInfo, path: &str) -> Result<VolumeRestore> {
    let bind = binds
        .target_of(meta, v, path)
        .with_context(|| format!("the archive's {}: refused (leave it out with --only)", v.name))?;
    Ok(VolumeRestore {
        archived: v.name.clone(),
        target: bind.host_path.clone(),
        key: bind.host_path.clone(),
        driver: "bind".into(),
        labels: BTreeMap::new(),
        services: bind.uses.iter().map(|u| u.service.clone()).collect(),
    })
}

/// The archive's database services `--only` selects (`db`: all; `db:SERVICE`: that one), each
/// into the service of this stack with the same name and engine, logging in as this stack's
/// compose file says (never as the archive says).
fn plan_databases(project: &Project, meta: &Metadata, only: &[String]) -> Result<Vec<DbRestore>> {
    let all = only.is_empty() || only.iter().any(|o| o == "db");
    for o in only.iter().filter_map(|o| o.strip_prefix("db:")) {
        if meta.database(o).is_none() {
            let have: Vec<String> = meta.databases.iter().map(|d| format!("db:{}", d.service)).collect();
            bail!("--only db:{o}: the archive holds no dump of service {o} (it holds: {})", have.join(", "));
        }
    }
    let mut dbs = Vec::new();
    for info in &meta.databases {
        if !all && !only.iter().any(|o| o.strip_prefix("db:") == Some(info.service.as_str())) {
            continue;
        }
        let svc = project.services.iter().find(|s| s.name == info.service).with_context(|| {
            format!(
                "the archive's databases came from service {:?}, which this stack does not have; leave them out \
                 with --only",
                info.service
            )
        })?;
        if dbengine::detect(svc)? != Detected::Dump(info.engine) {
            bail!(
                "the archive holds {} dumps of service {}, which is not a {} service in this stack: refused",
                info.engine.as_str(),
                svc.name,
                info.engine.as_str()
            );
        }
        dbs.push(DbRestore { login: dbengine::login(svc, info.engine)?, info: info.clone() });
    }
    if dbs.is_empty() && only.iter().any(|o| o == "db") {
        bail!("--only db: the archive holds no database dump");
    }
    Ok(dbs)
}

impl RestorePlan {
    /// What will be replaced, for the confirmation.
    pub fn describe(&self, archive: &Path, meta: &Metadata, sizes: &BTreeMap<String, u64>) -> String {
        let mut out = format!(
            "\nRestore into stack {} from {}\n  archive of project {}, made {}{}\n\nThis REPLACES:\n",
            self.project,
            archive.display(),
            meta.project,
            meta.created_at,
            meta.tag.as_ref().map(|t| format!(", tag {t}")).unwrap_or_default()
        );
        for db in &self.dbs {
            let names: Vec<&str> = db.info.databases.iter().map(|d| d.name.as_str()).collect();
            out.push_str(&match db.login.engine {
                archive::DbEngine::Hook => {
                    format!(
                        "  - the data of service {} (its dump piped into its xtask.load command)\n",
                        db.login.service
                    )
                }
                _ => format!("  - databases {} in service {} (replaced)\n", names.join(", "), db.login.service),
            });
        }
        for v in &self.volumes {
            match sizes.get(&v.target) {
                Some(s) => {
                    out.push_str(&format!("  - volume {} (now {}) emptied and refilled\n", v.target, human_bytes(*s)))
                }
                None => out.push_str(&format!("  - volume {} (does not exist now) created and filled\n", v.target)),
            }
        }
        out
    }
}

/// A restore decided from an archive's metadata, before anything is touched: what `--dry-run`
/// and the confirmation show, and what [`execute`] carries out from the same open file.
pub struct Prepared {
    pub path: PathBuf,
    pub meta: Metadata,
    pub plan: RestorePlan,
    /// The target volumes (and binds) that exist now: what is replaced, and what the safety
    /// backup holds.
    pub present: Vec<String>,
    src: Source,
    /// `--in-place` only: the archive verified whole before anything is touched.
    verified: Option<Verified>,
    dir: PathBuf,
}

impl Prepared {
    /// What will be replaced, with the present volumes' sizes (measured now: only for the
    /// confirmation and `--dry-run`).
    pub fn describe(&self, ctx: &Ctx) -> Result<String> {
        let sizes = ctx.docker()?.volume_sizes(&self.present())?;
        Ok(self.plan.describe(&self.path, &self.meta, &sizes))
    }

    fn present(&self) -> Vec<&str> {
        self.present.iter().map(String::as_str).collect()
    }
}

/// What a finished restore reports (`--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub project: String,
    pub archive: PathBuf,
    /// The safety backup: restoring it undoes this restore.
    pub undo: Option<PathBuf>,
    /// How long the services using the restored volumes were stopped (None: none was): from
    /// the stop until their containers run again; the wait for their health comes after.
    pub downtime_seconds: Option<f64>,
    /// When each step of the short destructive part happened (None: no service was stopped).
    pub downtime: Option<Downtime>,
}

/// The moments of the short destructive part, in seconds since the Unix epoch: the stop of
/// the users was asked for, the first rename, the last rename (volumes and databases), the
/// users run again.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Downtime {
    pub stop_began: f64,
    pub swap_began: f64,
    pub swap_ended: f64,
    pub running_again: f64,
}

/// Now, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}

/// Opens the archive (the one descriptor every later read uses), reads its metadata by the
/// grammar and decides what it restores into this stack. Touches nothing. With `--in-place` the
/// whole archive is verified here; otherwise the restore's one pass verifies it while staging.
pub fn prepare(ctx: &Ctx, opts: &Options) -> Result<Prepared> {
    let docker = ctx.docker()?;
    let dir = crate::store::local::prepare_dir(&opts.dir)?;
    let src = match (&opts.remote, &opts.archive) {
        (Some((remote, file)), _) => crate::store::remote::pick(ctx, remote, file.as_deref())?,
        (None, Some(p)) => {
            let src = Source::open(p)?;
            match opts.expect_sha256 {
                Some(expected) => check_own(&src, expected)?,
                None => crate::store::trust::Policy::of(ctx)?.check_local(&src)?,
            }
            src
        }
        (None, None) => crate::store::local::latest_trusted(ctx, &dir, |a| a.tag.as_deref() != Some(SAFETY_TAG))?,
    };
    let path = src.path.clone();
    let rules = Rules { allow_special: opts.allow_special };
    let (meta, verified) = if opts.in_place {
        ctx.ui.step(&format!("verify {}", path.display()));
        let v = Verified::check(src.duplicate()?, rules)?;
        (v.meta().clone(), Some(v))
    } else {
        (archive::read_metadata_from(&src).with_context(|| format!("read {}", path.display()))?, None)
    };
    let plan = plan(&ctx.model()?.0, &StackBinds::of(ctx, &opts.dir)?, &meta, &opts.only, opts.force)?;
    refuse_linked_binds(&plan)?;
    let existing = docker.volume_names()?;
    let mut present = Vec::new();
    for v in &plan.volumes {
        if target_exists(docker, &existing, &v.target)? {
            present.push(v.target.clone());
        }
    }
    let staged_live = plan.dbs.iter().any(|d| d.login.engine == archive::DbEngine::Postgres);
    let signed = crate::store::trust::Policy::of(ctx)?.signing.is_some();
    if staged_live && !signed && opts.expect_sha256.is_none() {
        eprintln!(
            "note: x-xtask.sign is not set, so nothing tells whether this archive was made here; its PostgreSQL \
             dumps are staged on the live server as the database user (docs/restore-and-clean.md)"
        );
    }
    Ok(Prepared { path, meta, plan, present, src, verified, dir })
}

/// Refuses `src` unless its bytes hash to `expected` (read through the descriptor every later
/// read of this restore uses).
fn check_own(src: &Source, expected: [u8; 32]) -> Result<()> {
    let (_, actual) = src.stored_digest()?.context("not a local archive")?;
    if actual != expected {
        bail!(
            "{} is not the archive this run wrote (its SHA-256 is {}, it was written as {}): it was changed or \
             replaced since; refused",
            src.path.display(),
            archive::hex(&actual),
            archive::hex(&expected)
        );
    }
    Ok(())
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
    let mut created = Vec::new();
    let names = staging::Names::of(std::process::id());
    let (safety, staged) = match &p.verified {
        Some(_) => {
            let safety = take_safety(ctx, p, opts, lock)?;
            signals::install();
            (safety, None)
        }
        None => {
            // A signal from here on does not kill the tool mid-way: it takes the way back.
            signals::install();
            match stage(ctx, p, opts, lock, &names, &mut created, &mut guard) {
                Ok((safety, staged)) => (safety, Some(staged)),
                Err(e) => {
                    unstage_all(ctx, p, &names, &created);
                    let e = e.context("the restore failed or was interrupted before anything was replaced: the volumes and databases are as they were");
                    return Err(match guard.restore(&ctx.ui) {
                        Ok(()) => e,
                        Err(r) => e.context(format!("and putting the services back failed: {r:#}")),
                    });
                }
            }
        }
    };
    if let Some(s) = &safety {
        ctx.ui.step(&format!("should this restore be cut off (kill -9), undo it with: {}", undo_command(ctx, s)));
    }
    let mut old_dbs = Vec::new();
    let mut moments = Downtime { stop_began: unix_now(), swap_began: 0.0, swap_ended: 0.0, running_again: 0.0 };
    let replaced = match (&p.verified, &staged) {
        (Some(v), _) => replace(ctx, v, &p.plan, &p.dir, &mut guard, &mut created),
        (None, Some(st)) => swap_all(ctx, p, &names, &mut guard, st, &mut old_dbs, &mut moments),
        (None, None) => unreachable!("staged above"),
    };
    if let Err(e) = replaced {
        return Err(take_the_way_back(ctx, e, safety.as_deref(), &created, &p.dir, guard));
    }
    // Services that do not come back (or not healthy) with the restored data: the way back too.
    let running = match guard.start_stopped(&ctx.ui) {
        Ok(running) => running,
        Err(e) => return Err(take_the_way_back(ctx, e, safety.as_deref(), &created, &p.dir, guard)),
    };
    moments.running_again = unix_now();
    let downtime = (!running.is_empty()).then_some(moments);
    let downtime_seconds = downtime.map(|d| d.running_again - d.stop_began);
    if let Err(e) = services::wait_until_up(ctx.docker()?, &running, &ctx.ui) {
        let e = e.context("the services did not come back healthy with the restored data");
        return Err(take_the_way_back(ctx, e, safety.as_deref(), &created, &p.dir, guard));
    }
    // The services are healthy again: the old database copies can go (the database service is
    // still up, also when this restore had to start it). The restore is done either way.
    if let Err(e) = database::drop_old(ctx, &p.plan.dbs, &old_dbs) {
        eprintln!("warning: the old database copies were not dropped ({e:#}); the next restore drops them");
    }
    guard.restore(&ctx.ui)?;
    Ok(Outcome { project: p.plan.project.clone(), archive: p.path.clone(), undo: safety, downtime_seconds, downtime })
}

/// After a failure once the swap began: the safety backup restored (or what the restore created
/// removed) and the services put back; the error says what happened and, if that failed too,
/// where the state before the restore is.
fn take_the_way_back(
    ctx: &Ctx,
    e: anyhow::Error,
    safety: Option<&Path>,
    created: &[String],
    dir: &Path,
    mut guard: ServiceGuard,
) -> anyhow::Error {
    let back = way_back(ctx, safety, created, dir, &mut guard);
    let restarted = guard.restore(&ctx.ui);
    match (back, restarted) {
        (Ok(msg), Ok(())) => e.context(format!("the restore failed; {msg}")),
        (Err(b), _) | (_, Err(b)) => e.context(format!(
            "the restore failed and so did the way back ({b:#}); the state before it is in {}",
            safety
                .map(|s| format!("{}: {}", s.display(), undo_command(ctx, s)))
                .unwrap_or_else(|| "no safety backup".into())
        )),
    }
}

fn take_safety(ctx: &Ctx, p: &Prepared, opts: &Options, lock: &Lock) -> Result<Option<PathBuf>> {
    if opts.no_safety_backup {
        ctx.ui.step("no safety backup (--no-safety-backup): this restore cannot be undone");
        return Ok(None);
    }
    safety_backup(ctx, p, lock)
}

/// What the one pass left ready to swap in: the staged databases and the dumps it spooled
/// (MariaDB and hooks load them in the swap).
struct Staged {
    dbs: database::Staged,
    dumps: BTreeMap<String, extract::Spooled>,
}

/// The one pass: every target volume staged and every dump spooled from the same bytes that
/// are verified; then (the live state still untouched) the safety backup, then the databases
/// staged beside the live ones. Returns the safety backup and what was staged.
fn stage(
    ctx: &Ctx,
    p: &Prepared,
    opts: &Options,
    lock: &Lock,
    names: &staging::Names,
    created: &mut Vec<String>,
    guard: &mut ServiceGuard,
) -> Result<(Option<PathBuf>, Staged)> {
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
    let under = format!("{}/", names.staging);
    let pass = extract::OnePass { docker, ui: &ctx.ui, targets: &targets, under: under.as_bytes(), dir: &p.dir };
    ctx.ui.step(&format!("read, verify and stage {} in one pass", p.path.display()));
    let (report, dumps) = pass.run(&p.src, Rules { allow_special: opts.allow_special })?;
    if report.metadata.as_ref() != Some(&p.meta) {
        bail!("{} changed since its metadata was read: nothing was replaced", p.path.display());
    }
    signals::check()?;
    let safety = take_safety(ctx, p, opts, lock)?;
    for db in &p.plan.dbs {
        signals::check()?;
        guard.ensure_running(&db.login.service, &ctx.ui)?;
    }
    database::recover(ctx, &p.plan.dbs)?;
    let dbs = database::stage(ctx, &p.plan.dbs, &dumps)?;
    Ok((safety, Staged { dbs, dumps }))
}

/// After a failed staging: the staged copies go, and volumes the restore created.
fn unstage_all(ctx: &Ctx, p: &Prepared, names: &staging::Names, created: &[String]) {
    let Ok(docker) = ctx.docker() else { return };
    let _calm = signals::Suspended::begin();
    for v in &p.plan.volumes {
        if created.contains(&v.target) {
            let _ = docker.apply(&docker.cmd(["volume", "rm", "--force", &v.target]));
        } else if let Err(e) = staging::discard(docker, &v.target, names) {
            eprintln!("warning: {e:#}; the next restore removes it");
        }
    }
}

/// The short destructive part: the services using the volumes stop, every staged volume is
/// swapped into place by renames, then the staged databases.
fn swap_all(
    ctx: &Ctx,
    p: &Prepared,
    names: &staging::Names,
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
    moments.stop_began = unix_now();
    guard.stop_for_copy(&users, &ctx.ui)?;
    // The swaps are short and must not be cut off half-way.
    let _calm = signals::Suspended::begin();
    moments.swap_began = unix_now();
    let targets: Vec<&str> = p.plan.volumes.iter().map(|v| v.target.as_str()).collect();
    if !targets.is_empty() {
        ctx.ui.step(&format!("swap the restored content into {}", targets.join(", ")));
        staging::swap(docker, &targets, names)?;
    }
    *old_dbs = database::swap(ctx, &p.plan.dbs, &staged.dbs, &staged.dumps)?;
    moments.swap_ended = unix_now();
    Ok(())
}

/// The safety backup: exactly what will be overwritten, the present target volumes, and the
/// databases if their volume exists. None when nothing that would be replaced exists.
fn safety_backup(ctx: &Ctx, p: &Prepared, lock: &Lock) -> Result<Option<PathBuf>> {
    let present = p.present.clone();
    let kind = if present.is_empty() { backup::Kind::Db } else { backup::Kind::Full };
    if p.plan.dbs.is_empty() && present.is_empty() {
        ctx.ui.step("nothing that would be replaced exists: no safety backup needed");
        return Ok(None);
    }
    let bopts = backup::Options {
        volumes: present,
        tag: Some(SAFETY_TAG.into()),
        level: 1,
        dump_database: !p.plan.dbs.is_empty(),
        services: p.plan.dbs.iter().map(|d| d.login.service.clone()).collect(),
        only_existing: true,
        no_encrypt: way_back_in_clear(ctx, "the safety backup"),
        ..backup::Options::new(kind, p.dir.clone())
    };
    ctx.ui.step("safety backup of what will be replaced");
    let s = backup::take(ctx, &bopts, lock).context("take the safety backup (nothing was restored)")?;
    if s.volumes.is_empty() && s.databases.is_empty() {
        let _ = std::fs::remove_file(&s.path);
        ctx.ui.step("nothing that would be replaced exists: no safety backup needed");
        return Ok(None);
    }
    Ok(Some(s.path))
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
    guard.stop_for_copy(&users, &ctx.ui)?;
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
    safety: Option<&Path>,
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
    let verified = Verified::check(Source::open(safety)?, Rules::default())?;
    let plan = plan(&ctx.model()?.0, &StackBinds::of(ctx, dir)?, verified.meta(), &[], false)?;
    let mut again = Vec::new();
    // A second signal must not cut the way back off.
    let _calm = signals::Suspended::begin();
    replace(ctx, &verified, &plan, dir, guard, &mut again)
        .with_context(|| format!("restore the safety backup {}", safety.display()))?;
    Ok(format!("the state before it was restored from the safety backup {}", safety.display()))
}

/// Refuses when a target volume's filesystem cannot hold what the archive puts there: in its
/// place with `--in-place` (sizes from the verification), beside the current content when
/// staging (sizes from the metadata, which archives record since this release; without them a
/// short disk makes the staging fail, which changes nothing).
fn check_space(docker: &Docker, survey: &staging::Survey, p: &Prepared) -> Result<()> {
    // In place, the current content's room counts too.
    let sizes = if p.verified.is_some() { docker.volume_sizes(&p.present())? } else { BTreeMap::new() };
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

/// Creates a missing target volume with the name, driver and labels the compose file gives it.
/// A restore target is a volume name, or a bind's host path (absolute: volume names never start
/// with `/`).
fn is_bind(target: &str) -> bool {
    target.starts_with('/')
}

fn target_exists(docker: &Docker, volumes: &[String], target: &str) -> Result<bool> {
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
fn refuse_linked_binds(plan: &RestorePlan) -> Result<()> {
    for v in plan.volumes.iter().filter(|v| is_bind(&v.target)) {
        crate::files::refuse_symlinks(Path::new(&v.target)).context("restore refused: nothing was changed")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive;
    use crate::model::compose::Selection;

    fn no_binds() -> StackBinds {
        StackBinds {
            project_dir: "/nonexistent-project".into(),
            backup_dir: "/nonexistent-backups".into(),
            binds: Vec::new(),
        }
    }

    fn sample() -> Project {
        Selection::default().resolve(&BTreeMap::new()).unwrap().parse_offline().unwrap()
    }

    fn meta(project: &str, volumes: &[(&str, &str)]) -> Metadata {
        let mut m = archive::Metadata::sample(project, volumes);
        m.databases = vec![archive::DbInfo {
            service: "db".into(),
            engine: archive::DbEngine::Postgres,
            volume: None,
            server_version: "15".into(),
            user: "app".into(),
            globals_entry: Some("databases/db/globals.sql".into()),
            databases: vec![],
        }];
        m
    }

    #[test]
    fn maps_archived_volumes_by_key_and_stops_their_users() {
        // Archived from the test environment, restored into the default one: same keys, new names.
        let m =
            meta("app", &[("app-backend-media", "app-test-backend-media"), ("app-redis-data", "app-test-redis-data")]);
        let p = plan(&sample(), &no_binds(), &m, &[], false).unwrap();
        assert_eq!(p.volumes[0].target, "app-backend-media");
        assert_eq!(p.volumes[0].archived, "app-test-backend-media");
        assert_eq!(p.volumes[0].services, ["backend"]);
        assert_eq!(p.volumes[1].services, ["redis"]);
        assert_eq!(p.dbs[0].login.service, "db");
        let text = p.describe(Path::new("a.tar.gz"), &m, &BTreeMap::from([("app-backend-media".to_string(), 2048)]));
        assert!(
            text.contains("app-backend-media (now 2.0 KiB)") && text.contains("app-redis-data (does not exist now)"),
            "{text}"
        );
    }

    #[test]
    fn only_selects_and_other_projects_need_force() {
        let m = meta("app", &[("app-backend-media", "app-backend-media"), ("app-redis-data", "app-redis-data")]);
        let only_db = plan(&sample(), &no_binds(), &m, &["db".into()], false).unwrap();
        assert!(only_db.volumes.is_empty() && only_db.dbs.len() == 1);
        let only_vol = plan(&sample(), &no_binds(), &m, &["app-redis-data".into()], false).unwrap();
        assert!(only_vol.dbs.is_empty());
        assert_eq!(only_vol.volumes.len(), 1);
        let err = plan(&sample(), &no_binds(), &m, &["nope".into()], false).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("app-redis-data"), "{err}");
        let other = meta("elsewhere", &[]);
        let err = plan(&sample(), &no_binds(), &other, &[], false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        assert!(plan(&sample(), &no_binds(), &other, &[], true).is_ok());
    }

    #[test]
    fn a_volume_outside_the_stack_is_refused() {
        // Archived under a key this stack does not have: never restored, never created.
        let m = meta("app", &[("app-backend-media", "app-backend-media"), ("intruder", "some-other-volume")]);
        let err = plan(&sample(), &no_binds(), &m, &[], false).unwrap_err().to_string();
        assert!(err.contains("some-other-volume") && err.contains("not a volume of this stack"), "{err}");
        // Left out with --only, the rest restores; the target is always the stack's own name.
        let p = plan(&sample(), &no_binds(), &m, &["app-backend-media".into()], false).unwrap();
        assert_eq!(p.volumes.len(), 1);
        assert_eq!(p.volumes[0].target, "app-backend-media");
    }
}

//! The `restore` task. Safe by construction: the archive is verified completely before anything
//! is touched (a bad one is refused), the user confirms what will be replaced, a safety backup
//! of exactly that is taken first (and its undo command printed at the end), only the services
//! using what is restored are stopped, and they are started again and waited for. [`plan`]
//! (plan.rs) decides from the metadata and the compose file; [`execute`] (execute.rs) stages,
//! swaps and takes the way back; [`database`] loads dumps.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::archive::extract::Verified;
use crate::archive::{self, Metadata, Rules, Source};
use crate::context::Ctx;
use crate::lock::Lock;
use crate::store::binds::StackBinds;
use crate::store::local::prepare_dir;
use crate::ui;

mod database;
mod execute;
pub mod paths;
mod plan;

pub use execute::execute;
use execute::{refuse_linked_binds, target_exists};
pub use plan::{plan, RestorePlan, VolumeRestore};

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
    /// Leave out what a restore into this stack refuses (named) and restore the rest
    /// (`--skip-refused`); without it any refused item stops the restore, all of them named.
    pub skip_refused: bool,
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
            skip_refused: false,
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
pub fn undo_command(ctx: &Ctx, safety: &Path, only: &[String]) -> String {
    let encrypts = ctx.offsite().is_ok_and(|s| s.encryption.enabled());
    let flag = if encrypts && !archive::is_sealed(safety) { " --allow-unencrypted" } else { "" };
    let plain = |o: &str| o.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./:-".contains(&b));
    let quoted = |o: &str| if plain(o) { o.to_string() } else { format!("'{}'", o.replace('\'', "'\\''")) };
    // The same stack as this run, whatever the shell's directory or environment then.
    let files: String = ctx.stack.files.iter().map(|f| format!(" -f {}", quoted(&f.display().to_string()))).collect();
    let only: String = only.iter().map(|o| format!(" --only {}", quoted(o))).collect();
    format!(
        "cargo xtask -p {}{files} restore {} --yes{flag}{only}",
        quoted(&ctx.stack.name),
        quoted(&safety.display().to_string())
    )
}

/// The `--only` list that undoes `plan` with its safety backup: when the plan writes a bind,
/// every volume and bind it replaced (by compose key or host path) and `db`; else none.
pub fn undo_only(plan: &RestorePlan) -> Vec<String> {
    if !plan.volumes.iter().any(|v| v.driver == "bind") {
        return Vec::new();
    }
    let dbs = (!plan.dbs.is_empty()).then(|| "db".to_string());
    plan.volumes.iter().map(|v| v.key.clone()).chain(dbs).collect()
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
        let sizes = crate::engine::staging::sizes(ctx.docker()?, &self.present())?;
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
    /// What the undo must name with `--only` (a bind a restore writes only when named): every
    /// volume and bind this restore replaced, and `db`; empty when it holds no bind.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undo_only: Vec<String>,
    /// How long the services using the restored volumes were stopped (None: none was): from
    /// the stop until their containers run again; the wait for their health comes after.
    pub downtime_seconds: Option<f64>,
    /// From the stop until every restarted service was healthy (or running, without a health
    /// check) again: what a user of the application waited.
    pub healthy_seconds: Option<f64>,
    /// When each step of the short destructive part happened (None: no service was stopped).
    pub downtime: Option<Downtime>,
}

/// The moments of the short destructive part, in seconds since the Unix epoch: the stop of
/// the users was asked for, the first rename, the last rename (volumes and databases), the
/// users run again, the users are healthy again.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Downtime {
    pub stop_began: f64,
    pub swap_began: f64,
    pub swap_ended: f64,
    pub running_again: f64,
    pub healthy_again: f64,
}

/// Opens the archive (the one descriptor every later read uses), reads its metadata by the
/// grammar and decides what it restores into this stack. Touches nothing. With `--in-place` the
/// whole archive is verified here; otherwise the restore's one pass verifies it while staging.
pub fn prepare(ctx: &Ctx, opts: &Options) -> Result<Prepared> {
    let docker = ctx.docker()?;
    let dir = crate::store::local::prepare_dir(&opts.dir)?;
    let mut src = open_source(ctx, opts, &dir)?;
    let path = src.path.clone();
    let rules = Rules { allow_special: opts.allow_special };
    // Read twice: the metadata now, then (once the plan chose the volumes: a tree-form archive
    // then reads only their trees) the one pass, or `--in-place`'s verification (through a
    // handle of its own, which a read started ahead on this one would not serve).
    if !opts.in_place {
        src.read_again_soon();
    }
    let meta = archive::read_metadata_from(&src).with_context(|| format!("read {}", path.display()))?;
    // A remote object's name is whatever its writer chose: it must fit the date it carries.
    let disagrees = || crate::store::local::name_disagrees(&path.display().to_string(), &meta.created_at);
    if let Some(why) = opts.remote.as_ref().and_then(|_| disagrees()) {
        bail!("{} is refused: {why}; restore it under its own name if it is genuine", path.display());
    }
    let plan = plan(&ctx.model()?.0, &StackBinds::of(ctx, &opts.dir)?, &meta, &opts.only, opts.force)?;
    plan.check_refused(&path, opts.skip_refused)?;
    refuse_linked_binds(&plan)?;
    // A tree-form archive in restic: only the trees of the volumes restored are restored by restic.
    src.only_volumes(plan.volumes.iter().map(|v| v.archived.clone()).collect());
    let meta = src.as_read(meta);
    let verified = if opts.in_place { Some(verify_whole(ctx, &src, rules, &meta)?) } else { None };
    let existing = docker.volume_names()?;
    let mut present = Vec::new();
    for v in &plan.volumes {
        if target_exists(docker, &existing, &v.target)? {
            present.push(v.target.clone());
        }
    }
    let signed = crate::store::trust::Policy::of(ctx)?.signing.is_some();
    if !plan.dbs.is_empty() && !signed && opts.expect_sha256.is_none() {
        eprintln!(
            "note: x-xtask.sign is not set, so nothing tells whether this archive was made here; what its dumps \
             hold becomes the live databases (docs/restore-and-clean.md)"
        );
    }
    Ok(Prepared { path, meta, plan, present, src, verified, dir })
}

/// `--in-place`: the archive (for the tree form, the view of the volumes restored) verified
/// whole before anything is touched; its metadata must be the one the plan was made from.
fn verify_whole(ctx: &Ctx, src: &Source, rules: Rules, meta: &archive::Metadata) -> Result<Verified> {
    ctx.ui.step(&format!("verify {}", src.path.display()));
    let v = Verified::check(src.duplicate()?, rules)?;
    if v.meta() != meta {
        bail!("{} changed since its metadata was read: nothing was changed", src.path.display());
    }
    Ok(v)
}

/// The archive `opts` names, opened once and checked by the reading policy (or, for an archive
/// this process wrote, against its digest); None: the newest that is not a safety backup.
fn open_source(ctx: &Ctx, opts: &Options, dir: &Path) -> Result<Source> {
    Ok(match (&opts.remote, &opts.archive) {
        (Some((remote, file)), _) => crate::store::remote::pick(ctx, remote, file.as_deref())?,
        (None, Some(p)) => {
            let src = Source::open(p)?;
            match opts.expect_sha256 {
                Some(expected) => check_own(&src, expected)?,
                None => crate::store::trust::Policy::of(ctx)?.check_local(&src)?,
            }
            src
        }
        (None, None) => crate::store::local::latest_trusted(ctx, dir, |a| a.tag.as_deref() != Some(SAFETY_TAG))?,
    })
}

/// Refuses `src` unless its bytes hash to `expected` (read through the descriptor every later
/// read of this restore uses).
pub(super) fn check_own(src: &Source, expected: [u8; 32]) -> Result<()> {
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

/// The `restore` command: verify and decide, show what is replaced (all of it under `dry_run`,
/// which stops there) and confirm, then restore under the lock and print the outcome (`json`:
/// as JSON) with the undo command. None under `dry_run`.
pub fn run(ctx: &Ctx, opts: &Options, dry_run: bool, json: bool) -> Result<Option<Outcome>> {
    let prepared = prepare(ctx, opts)?;
    if dry_run {
        print!("{}", prepared.describe(ctx)?);
        return Ok(None);
    }
    // What is replaced is shown (and its sizes measured) only where it is asked about.
    let text = if opts.yes { String::new() } else { prepared.describe(ctx)? };
    ui::confirm(&text, ui::Confirm::YesNo { yes_flag: opts.yes })?;
    let lock = Lock::acquire(&prepare_dir(&opts.dir)?, &prepared.plan.project, "restore")?;
    let outcome = execute(ctx, &prepared, opts, &lock)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(Some(outcome));
    }
    println!("restored {} from {}", outcome.project, outcome.archive.display());
    if let (Some(d), Some(h)) = (outcome.downtime_seconds, outcome.healthy_seconds) {
        println!(
            "the services using the restored volumes were stopped for {d:.1} s (healthy again {h:.1} s after the stop)"
        );
    }
    match &outcome.undo {
        Some(s) => println!("to undo this restore: {}", undo_command(ctx, s, &outcome.undo_only)),
        None if !opts.no_safety_backup => println!("nothing existed before that this restore replaced"),
        None => {}
    }
    Ok(Some(outcome))
}

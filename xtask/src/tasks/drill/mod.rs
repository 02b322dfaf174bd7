//! The `drill` task: proof that an archive brings the application back, without touching the
//! live stack. A throwaway copy of the stack is generated ([`throwaway`], pure: own project
//! name, scratch volumes and binds, no published ports), the archive is restored into it by the
//! tool's own restore, every service is started and waited for, the optional
//! `x-xtask.drill.check` command runs in its service, and the time to recover (restore start
//! to every service healthy) is printed and recorded for `check`. The copy is always removed
//! ([`execute::Cleanup`], on success, failure and Ctrl-C) unless `--keep`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::context::Ctx;
use crate::lock::Lock;
use crate::model::alerts::DrillCheck;
use crate::model::compose::Selection;
use crate::model::notify::Event;
use crate::store::local::{self, DrillRecord};
use crate::tasks::restore;

mod execute;
pub mod throwaway;

pub struct Options {
    /// The archive; None: the newest of the project (or of `remote`) that is not a safety backup.
    pub archive: Option<PathBuf>,
    /// Drill an archive of this remote (downloaded into the drill's scratch directory first).
    pub remote: Option<String>,
    /// The backup directory: where local archives are and the record `check` reads is kept.
    pub dir: PathBuf,
    /// Leave the throwaway stack in place (and say how to remove it).
    pub keep: bool,
    pub json: bool,
}

/// What a drill reports (`--json`), success or failure.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub project: String,
    /// The throwaway stack's project name.
    pub drill_project: String,
    pub archive: String,
    pub ok: bool,
    /// Time to recover: from the start of the restore until every service was healthy (and the
    /// check passed). None when it never got there.
    pub seconds: Option<f64>,
    /// The restore's part of it.
    pub restore_seconds: Option<f64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// The services' logs of a failed drill, kept.
    pub logs: Option<PathBuf>,
    /// `--keep`: the command that removes the throwaway stack.
    pub remove_with: Option<String>,
}

/// The `drill` command: runs the drill between notifications, records its outcome for `check`
/// and prints it (`json`: as JSON, also when it failed). A failed drill is an error (exit 1).
pub fn run(ctx: &Ctx, opts: &Options, dry_run: bool) -> Result<Outcome> {
    if dry_run {
        return execute::dry_run(ctx, opts);
    }
    let end = |o: &Outcome| {
        let text = format!("drill of {}: recovered in {:.1} s", o.archive, o.seconds.unwrap_or_default());
        (Event::Success, text, serde_json::to_value(o).unwrap_or_default())
    };
    ctx.notified("drill", dry_run, || drill(ctx, opts), end)
}

/// One drill: pick the archive, build the throwaway stack, restore, start, check, record.
fn drill(ctx: &Ctx, opts: &Options) -> Result<Outcome> {
    crate::signals::install()?;
    let project = ctx.stack.name.clone();
    let dir = local::prepare_dir(&opts.dir)?;
    let drill_project = format!("{project}-drill-{}", std::process::id());
    let scratch = crate::files::private_temp_dir(&format!("xtask-drill-{project}"))?;
    let check = ctx.offsite().context("read x-xtask.drill")?.operations.drill;
    let archive = match pick(ctx, opts, &dir, &scratch.path) {
        Ok(archive) => archive,
        Err(e) => {
            let named = opts.archive.as_ref().map(|a| a.display().to_string()).unwrap_or_else(|| "--latest".into());
            record(&dir, &project, &named, false, None, Some(format!("{e:#}")));
            return Err(e.context("the restore drill has no archive to restore"));
        }
    };
    let shown = archive.display().to_string();
    let mut cleanup = execute::Cleanup::new(ctx.docker()?, scratch, opts.keep);
    let result = attempt(ctx, &mut cleanup, &drill_project, &archive, check.as_ref());
    let (ok, reason) = match &result {
        Ok(_) => (true, None),
        Err(e) => (false, Some(format!("{e:#}"))),
    };
    let logs = if ok { None } else { cleanup.keep_logs(&dir, &project) };
    let timing = result.as_ref().ok();
    let outcome = Outcome {
        project: project.clone(),
        drill_project,
        archive: shown.clone(),
        ok,
        seconds: timing.map(|t| t.0),
        restore_seconds: timing.map(|t| t.1),
        reason: reason.clone(),
        logs,
        remove_with: cleanup.remove_command(),
    };
    record(&dir, &project, &shown, ok, outcome.seconds, reason);
    drop(cleanup);
    report(&outcome, opts.json)?;
    match result {
        Ok(_) => Ok(outcome),
        Err(e) => Err(e.context(format!("the restore drill of {} failed", outcome.archive))),
    }
}

/// Records a drill's outcome for `check` (its reason cut to 2000 characters); a failure to
/// write is a warning: the drill's own result stands.
fn record(dir: &Path, project: &str, archive: &str, ok: bool, seconds: Option<f64>, reason: Option<String>) {
    let reason = reason.map(|r| r.chars().take(2000).collect());
    let drill = DrillRecord { at: local::now_rfc3339(), archive: archive.to_string(), ok, seconds, reason };
    if let Err(e) = local::record_drill(dir, project, drill) {
        eprintln!("warning: the drill's outcome was not recorded for `check`: {e:#}");
    }
}

/// The archive drilled: a given file, the newest trusted one of the backup directory, or one
/// of `--remote` downloaded (checked against its SHA-256) into the scratch directory.
fn pick(ctx: &Ctx, opts: &Options, dir: &Path, scratch: &Path) -> Result<PathBuf> {
    if let Some(remote) = &opts.remote {
        let file = opts.archive.as_ref().map(|a| a.display().to_string());
        let into = scratch.join("archive");
        std::fs::create_dir(&into).with_context(|| format!("create {}", into.display()))?;
        return super::offsite::pull(ctx, remote, file.as_deref(), &into, false);
    }
    match &opts.archive {
        Some(path) => Ok(path.clone()),
        None => {
            let src = local::latest_trusted(ctx, dir, |a| a.tag.as_deref() != Some(restore::SAFETY_TAG))?;
            Ok(src.path.clone())
        }
    }
}

/// Builds the throwaway stack, restores `archive` into it, starts it and runs the check.
/// Returns (time to recover, the restore's part), both in seconds.
fn attempt(
    ctx: &Ctx,
    cleanup: &mut execute::Cleanup,
    drill_project: &str,
    archive: &Path,
    check: Option<&DrillCheck>,
) -> Result<(f64, f64)> {
    let scratch = cleanup.scratch().to_path_buf();
    let (file, throwaway) = execute::write_throwaway(ctx, drill_project, &scratch)?;
    let selection = Selection {
        files: vec![file.clone()],
        project_name: Some(drill_project.to_string()),
        project_dir: Some(throwaway::project_dir(&scratch)),
        ..Selection::default()
    };
    let mut drill_ctx = ctx.for_selection(&selection)?;
    drill_ctx.bind_moves =
        throwaway.binds.iter().map(|r| (r.live.clone(), r.scratch.to_string_lossy().into_owned())).collect();
    cleanup.arm(&drill_ctx, &throwaway);
    execute::settle_escaping(&drill_ctx, &throwaway, &file)?;
    crate::signals::check()?;
    ctx.ui.step(&format!("restore {} into the throwaway stack {drill_project}", archive.display()));
    let started = Instant::now();
    let backups = scratch.join("backups");
    let mut opts = restore::Options::new(archive.to_path_buf(), backups.clone());
    (opts.force, opts.no_safety_backup) = (true, true);
    let prepared = restore::prepare(&drill_ctx, &opts)?;
    let lock = Lock::acquire(&local::prepare_dir(&backups)?, drill_project, "drill")?;
    restore::execute(&drill_ctx, &prepared, &opts, &lock)?;
    let restored = started.elapsed().as_secs_f64();
    crate::signals::check()?;
    execute::start_and_wait(&drill_ctx)?;
    if let Some(check) = check {
        execute::run_check(&drill_ctx, check)?;
    }
    Ok((started.elapsed().as_secs_f64(), restored))
}

/// Prints the outcome: as JSON, or a line (the removal command under `--keep`).
fn report(o: &Outcome, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(o)?);
    } else if let (true, Some(s), Some(r)) = (o.ok, o.seconds, o.restore_seconds) {
        println!("drill of {}: recovered in {s:.1} s (restore {r:.1} s, then every service healthy)", o.archive);
    }
    if let Some(logs) = &o.logs {
        eprintln!("the services' logs of the failed drill: {}", logs.display());
    }
    if let Some(cmd) = &o.remove_with {
        eprintln!("the throwaway stack {} is kept; remove it with:\n  {cmd}", o.drill_project);
    }
    Ok(())
}

//! The `backup` and `backup-db` tasks. Decide, then do: [`plan`] (plan.rs) turns the stack's
//! model and the options into a `BackupPlan` (plain data: the database services to dump, the
//! volumes to copy and why the others are skipped, loudly when they hold data nothing protects);
//! [`execute`] (execute.rs) carries it out: lock, space check, services started only where needed (and returned to how
//! they were, also on failure), every database dumped inside its container ([`dump`]), Redis
//! saved, volumes streamed from read-only helper containers into one archive written atomically.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::archive::Skipped;
use crate::context::Ctx;
use crate::lock::Lock;
use crate::model::notify::Event;
use crate::ui::human_bytes;

mod execute;
mod plan;
mod trees;

pub use execute::execute;
pub use plan::{plan, BackupPlan, DbSource, RedisSource, VolumeChoice, UNPROTECTED};

pub use crate::store::local::{prepare_dir, Kind};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    pub output_dir: PathBuf,
    /// Volumes by name or compose key; empty: by priority.
    pub volumes: Vec<String>,
    pub all: bool,
    pub exclude: Vec<String>,
    /// Databases to dump; empty: every database of each server.
    pub databases: Vec<String>,
    /// Database services to dump; empty: all of them.
    pub services: Vec<String>,
    pub tag: Option<String>,
    pub stop: bool,
    /// Never stop a database service to copy a volume its engine cannot dump (`--no-stop`): such
    /// a volume is then NOT PROTECTED instead.
    pub no_stop: bool,
    /// `--compression` (None: `x-xtask.compression`, else zstd).
    pub compression: Option<crate::archive::Compression>,
    /// `--level`: the level of whichever compression is chosen (None: its own default).
    pub level: Option<i32>,
    pub environment: Option<String>,
    /// Back up only what exists now: never start a database on a missing volume (safety backups).
    pub only_existing: bool,
    /// Dump the databases (false: leave them out, e.g. a safety backup of volumes only).
    pub dump_database: bool,
    /// Write a clear archive although `x-xtask.encrypt` is set (`--no-encrypt`). Every archive
    /// the tool writes, composites' included, is otherwise encrypted when `encrypt` is set.
    pub no_encrypt: bool,
    /// Upload the archive to this remote while it is written (`--push`).
    pub push: Option<String>,
    /// With `push`: keep the local copy once the upload is complete (`--no-keep-local`: false).
    pub keep_local: bool,
    /// With `push` to a restic repository that does not exist yet: create it (`--yes`).
    pub create_remote: bool,
}

impl Options {
    /// A backup of `kind` into `output_dir` chosen by priority: every database, no tag, the
    /// stack's compression.
    pub fn new(kind: Kind, output_dir: PathBuf) -> Options {
        Options {
            kind,
            output_dir,
            volumes: Vec::new(),
            all: false,
            exclude: Vec::new(),
            databases: Vec::new(),
            services: Vec::new(),
            tag: None,
            stop: false,
            no_stop: false,
            compression: None,
            level: None,
            environment: None,
            only_existing: false,
            dump_database: true,
            no_encrypt: false,
            push: None,
            keep_local: true,
            create_remote: false,
        }
    }
}

/// What a finished backup reports (`--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Where the archive is, or would be had it been kept (`local` false).
    pub path: PathBuf,
    /// A local file is there (not with `--no-keep-local`).
    pub local: bool,
    /// The remote it was pushed to (`--push`).
    pub remote: Option<String>,
    pub kind: Kind,
    /// The codec and level of the archive's stream (`zstd:3`).
    pub compression: String,
    pub bytes: u64,
    /// The SHA-256 of the archive's bytes as stored (hex): what a later read of exactly this
    /// archive (migrate's rollback) compares.
    pub sha256: String,
    pub data_bytes: u64,
    pub duration_seconds: f64,
    pub entries: u64,
    pub files: u64,
    pub databases: Vec<String>,
    pub volumes: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Data that no copy protects (database volumes of engines the tool cannot dump): the
    /// skipped entries whose reason starts with [`UNPROTECTED`].
    pub unprotected: Vec<String>,
}

impl Summary {
    /// Where the archive is: its path, or its name in the remote when no local copy is kept.
    pub fn place(&self) -> String {
        match (&self.remote, self.local) {
            (Some(remote), false) => format!(
                "{} in remote {remote}, no local copy",
                self.path.file_name().unwrap_or_default().to_string_lossy()
            ),
            _ => self.path.display().to_string(),
        }
    }
}

/// Decides what a backup with `opts` takes, from the stack's model (read once per context).
/// [`plan`] for this stack, encrypted as `x-xtask.encrypt` says unless `--no-encrypt`, compressed
/// as `--compression`, else `x-xtask.compression`, else zstd, says.
pub fn prepare(ctx: &Ctx, opts: &Options) -> Result<BackupPlan> {
    let mut plan = plan(&ctx.model()?.0, &ctx.binds()?, opts)?;
    plan.seal = crate::store::trust::seal(ctx, opts.no_encrypt)?;
    let configured = ctx.offsite()?.compression;
    plan.compression = crate::archive::Compression::choose(opts.compression, opts.level, configured)?;
    if let Some(remote) = &plan.push {
        plan.push_vault = crate::store::vault::lookup(ctx, remote)?.is_some();
    }
    Ok(plan)
}

/// Takes a backup: decides it and writes the archive. `lock` proves the caller holds the
/// project's lock on `opts.output_dir`; composites (restore's safety backup, `clean-all
/// --backup-first`, `migrate`) take the lock once and pass it on.
pub fn take(ctx: &Ctx, opts: &Options, lock: &Lock) -> Result<Summary> {
    let plan = prepare(ctx, opts)?;
    execute(ctx, &plan, opts, lock)
}

/// The `backup` / `backup-db` command: decide, show the plan under `dry_run`, else take the lock
/// and write (and push when asked); then say what is not in the archive (loudly what nothing
/// protects) and print the summary (`json`: as JSON); the notifiers of `x-xtask.notify` are told
/// (start, then success or failure). None under `dry_run`.
pub fn run(ctx: &Ctx, opts: &Options, dry_run: bool, json: bool) -> Result<Option<Summary>> {
    ctx.notified("backup", dry_run, || run_now(ctx, opts, dry_run, json), notice)
}

/// What the notifiers hear of a finished backup: its place, size, and what nothing protects.
fn notice(summary: &Option<Summary>) -> (Event, String, serde_json::Value) {
    let Some(s) = summary else { return (Event::Success, "nothing done (dry run)".into(), serde_json::Value::Null) };
    let mut message = format!("{} ({}, {:.1} s)", s.place(), human_bytes(s.bytes), s.duration_seconds);
    if !s.unprotected.is_empty() {
        message.push_str(&format!("; {UNPROTECTED}: {}", s.unprotected.join(", ")));
    }
    (Event::Success, message, serde_json::to_value(s).unwrap_or_default())
}

fn run_now(ctx: &Ctx, opts: &Options, dry_run: bool, json: bool) -> Result<Option<Summary>> {
    let plan = prepare(ctx, opts)?;
    if dry_run {
        print!("{}", plan.describe());
        return Ok(None);
    }
    let dir = prepare_dir(&opts.output_dir)?;
    let lock = Lock::acquire(&dir, &plan.project, &format!("backup ({})", plan.kind.as_str()))?;
    let summary = execute(ctx, &plan, opts, &lock)?;
    drop(lock);
    report(ctx, &summary, json)?;
    Ok(Some(summary))
}

fn report(ctx: &Ctx, summary: &Summary, json: bool) -> Result<()> {
    let (unprotected, skipped): (Vec<&Skipped>, Vec<&Skipped>) =
        summary.skipped.iter().partition(|s| s.reason.starts_with(UNPROTECTED));
    if !ctx.ui.quiet && !skipped.is_empty() {
        eprintln!("not in this archive:");
        skipped.iter().for_each(|s| eprintln!("  {}: {}", s.name, s.reason));
    }
    unprotected.iter().for_each(|s| eprintln!("warning: {}: {}", s.name, s.reason));
    let place = summary.place();
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else if !ctx.ui.quiet {
        println!(
            "{place} ({}, {} files, {} of data in {:.1} s)",
            human_bytes(summary.bytes),
            summary.files,
            human_bytes(summary.data_bytes),
            summary.duration_seconds
        );
    } else {
        println!("{place}");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! The `backups` (list), `verify` and `prune` tasks over the backup directory (its names,
//! listing and markers are `store::local`; retention is `store::retention`). An encrypted
//! archive is read with the identity `XTASK_AGE_IDENTITY` names; without it, it is listed by its
//! name alone.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use time::OffsetDateTime;

use crate::archive::extract::Verified;
use crate::archive::{self};
use crate::context::Ctx;
use crate::model::notify::Event;
use crate::store::binds::StackBinds;
use crate::store::local::{latest_trusted, marker_confirmed, marker_path, record_verification, scan, ArchiveFile};
use crate::store::retention::{decide, Retention};
use crate::ui::{human_bytes, table};

fn age(created: OffsetDateTime) -> String {
    let secs = (OffsetDateTime::now_utc() - created).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

pub fn list(dir: &Path, project: &str, json: bool) -> Result<()> {
    let archives = scan(dir, project)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&archives)?);
        return Ok(());
    }
    if archives.is_empty() {
        println!("No archives of project {project} in {}", dir.display());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = archives
        .iter()
        .map(|a| {
            let mut what = a.databases.iter().map(|d| format!("db:{d}")).collect::<Vec<_>>();
            what.extend(a.volumes.iter().cloned());
            vec![
                a.file.clone(),
                // To the second: the time in the file's name (the metadata's has nanoseconds).
                if a.problem.as_deref().is_some_and(|p| p.starts_with("damaged")) {
                    "-".into()
                } else {
                    a.created.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
                },
                age(a.created),
                human_bytes(a.size_bytes),
                a.kind.clone(),
                a.tag.clone().unwrap_or_else(|| "-".into()),
                a.problem
                    .as_ref()
                    .map(|p| p.split(':').next().unwrap_or_default().to_string())
                    .unwrap_or_else(|| a.checksums.clone()),
                what.join(", "),
            ]
        })
        .collect();
    println!("Archives of project {project} in {}\n", dir.display());
    print!("{}", table(&["FILE", "CREATED", "AGE", "SIZE", "KIND", "TAG", "CHECKSUMS", "CONTENTS"], &rows));
    Ok(())
}

/// Which archives `verify` reads.
pub enum Which {
    One(PathBuf),
    Latest,
    All,
    /// One archive of a remote (None: its newest complete one), streamed without a local copy.
    Remote {
        remote: String,
        file: Option<String>,
    },
}

/// How much of a restic repository's data `verify --remote` reads back (`--read-data-subset`).
const RESTIC_CHECK_PERCENT: u32 = 5;

pub fn verify(ctx: &Ctx, dir: &Path, which: Which, deep: bool, rules: archive::Rules, json: bool) -> Result<()> {
    let project = ctx.stack.name.as_str();
    let local = |p: PathBuf| {
        let src = archive::Source::open(&p);
        (p, src, true)
    };
    let targets: Vec<(PathBuf, Result<archive::Source>, bool)> = match which {
        Which::One(p) => vec![local(p)],
        Which::Latest => {
            let src = latest_trusted(ctx, dir, |_| true)?;
            vec![(src.path.clone(), Ok(src), true)]
        }
        Which::All => scan(dir, project)?.into_iter().map(|a| local(a.path)).collect(),
        Which::Remote { remote, file } => {
            if let Some(spec) = crate::store::vault::lookup(ctx, &remote)? {
                // The repository's own structure first, reading back a sample of its data.
                ctx.ui.step(&format!("check the restic repository of remote {remote} (restic check, 5% of the data)"));
                crate::store::vault::open(&spec, false)?.check(RESTIC_CHECK_PERCENT)?;
            }
            let src = crate::store::remote::pick(ctx, &remote, file.as_deref())?;
            vec![(src.path.clone(), Ok(src), false)]
        }
    };
    let mut reports = Vec::new();
    for (path, src, is_local) in targets {
        let progress = ctx.ui.progress(&format!("verify {}", path.display()));
        let report = verify_one(ctx, dir, &path, src, deep, rules);
        progress.inc(report.bytes);
        if is_local {
            record_verification(&path, report.ok());
        }
        if deep && report.ok() && !ctx.online().is_some_and(|d| d.dry_run()) {
            // Beside a local archive (where `check` looks when that is the backup directory),
            // a remote one's in the backup directory.
            let at = if is_local { path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(dir) } else { dir };
            crate::store::local::record_deep(at, project, &path.display().to_string());
        }
        if report.ok() {
            progress.finish(&format!("OK: {} entries, {} files, checksums match", report.entries, report.files));
            for r in &report.refused {
                eprintln!("    refused: {}", crate::ui::printable(r));
            }
        } else {
            progress.finish(&format!("FAILED: {} problem(s)", report.problems.len()));
            for p in &report.problems {
                eprintln!("    problem: {}", crate::ui::printable(p));
            }
        }
        reports.push(report);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    let failed: Vec<String> = reports.iter().filter(|r| !r.ok()).map(|r| r.path.display().to_string()).collect();
    if !failed.is_empty() {
        bail!("verification failed for {}: do not restore from it", failed.join(", "));
    }
    let refusing: Vec<String> = reports
        .iter()
        .filter(|r| !r.refused.is_empty())
        .map(|r| format!("{} ({} item(s))", r.path.display(), r.refused.len()))
        .collect();
    if !refusing.is_empty() {
        bail!(
            "{}: the archive is sound, but a restore into this stack refuses the items listed above; the rest is \
             restored with `cargo xtask restore ARCHIVE --skip-refused`",
            refusing.join(", ")
        );
    }
    Ok(())
}

/// Verifies one archive from one descriptor (or one download); with `deep`, loads what passed
/// into throwaway targets.
fn verify_one(
    ctx: &Ctx,
    dir: &Path,
    path: &Path,
    src: Result<archive::Source>,
    deep: bool,
    rules: archive::Rules,
) -> archive::Report {
    let trusted = src.and_then(|s| crate::store::trust::Policy::of(ctx)?.check_local(&s).map(|_| s));
    let src = match trusted {
        Ok(s) => s,
        Err(e) => {
            return archive::Report { path: path.to_path_buf(), problems: vec![format!("{e:#}")], ..Default::default() }
        }
    };
    let mut report =
        if deep { archive::verify_source_for_reading(&src, rules) } else { archive::verify_source(&src, rules) };
    match check_binds(ctx, dir, &report) {
        Ok(refused) => report.refused = refused,
        Err(e) => report.problems.push(format!("{e:#}")),
    }
    if !deep || !report.ok() {
        return report;
    }
    let verified = Verified { src, report, rules };
    let problem = crate::tasks::deep::check(ctx, &verified).err();
    let mut report = verified.report;
    if let Some(e) = problem {
        report.problems.push(format!("--deep: {e:#}"));
    }
    report
}

/// Every bind the archive holds must be one a restore into this stack would write: a bind this
/// stack's compose file declares for its recorded mounts, never a system path, never one holding
/// the project or the backup directory. Returns every bind it would refuse, each with why (all
/// of them, not the first): the rest of the archive is judged on its own.
fn check_binds(ctx: &Ctx, dir: &Path, report: &archive::Report) -> Result<Vec<String>> {
    let Some(meta) = &report.metadata else { return Ok(Vec::new()) };
    if meta.volumes.iter().all(|v| v.bind.is_none()) {
        return Ok(Vec::new());
    }
    let stack = StackBinds::of(ctx, dir)?;
    let mut refused = Vec::new();
    for v in &meta.volumes {
        let Some(path) = v.bind.as_deref() else { continue };
        // As if named: a held bind is restorable when the user names it.
        if let Err(e) = stack.target_of(meta, v, path, true) {
            refused.push(format!("{}: a restore into this stack would refuse it: {e:#}", v.name));
        }
    }
    Ok(refused)
}

/// `prune` of the backup directory, the notifiers of `x-xtask.notify` told.
pub fn prune(ctx: &Ctx, dir: &Path, r: &Retention, dry_run: bool) -> Result<()> {
    let end = |_: &()| (Event::Success, format!("pruned {}", dir.display()), serde_json::Value::Null);
    ctx.notified("prune", dry_run, || prune_local(ctx, dir, r, dry_run), end)
}

fn prune_local(ctx: &Ctx, dir: &Path, r: &Retention, dry_run: bool) -> Result<()> {
    let (project, ui) = (ctx.stack.name.as_str(), &ctx.ui);
    // Not while a backup or restore of the project runs (it may be reading an archive).
    let _lock = if dry_run || !dir.exists() { None } else { Some(crate::lock::Lock::acquire(dir, project, "prune")?) };
    let mut archives = scan(dir, project)?;
    // What the reading policy does not trust never takes a retention slot, and is never removed.
    let policy = crate::store::trust::Policy::of(ctx)?;
    for a in archives.iter_mut().filter(|a| a.problem.is_none()) {
        let size = std::fs::symlink_metadata(&a.path).map(|m| m.len()).unwrap_or_default();
        a.problem = policy.uncounted(&a.path, size).map(|why| format!("not counted: {why}"));
    }
    let mut removed = 0;
    for a in archives.iter().filter(|a| a.problem.is_some()) {
        println!("keep {} ({}; never pruned)", a.file, a.problem.as_deref().unwrap_or_default());
    }
    for kind in ["full", "db"] {
        let group: Vec<&ArchiveFile> = archives.iter().filter(|a| a.kind == kind && a.problem.is_none()).collect();
        // Only the newest archive whose marker its bytes confirm is "the newest verified" one.
        let newest_ok = group.iter().position(|a| a.checksums == "ok" && marker_confirmed(&a.path));
        let facts: Vec<(OffsetDateTime, bool)> =
            group.iter().enumerate().map(|(i, a)| (a.created, Some(i) == newest_ok)).collect();
        for (a, why) in group.iter().zip(decide(&facts, r)) {
            if why.is_empty() {
                if dry_run {
                    println!("would remove {}", a.file);
                } else {
                    std::fs::remove_file(&a.path).with_context(|| format!("remove {}", a.path.display()))?;
                    let _ = std::fs::remove_file(marker_path(&a.path));
                    let _ = std::fs::remove_file(crate::store::trust::signature_path(&a.path));
                    println!("removed {}", a.file);
                }
                removed += 1;
            } else {
                println!("keep {} ({})", a.file, why.join(", "));
            }
        }
    }
    ui.step(&format!(
        "{} {removed} of {} archives (keep-last {}, keep-daily {}, keep-weekly {}, keep-monthly {})",
        if dry_run { "would remove" } else { "removed" },
        archives.len(),
        r.last,
        r.daily,
        r.weekly,
        r.monthly
    ));
    Ok(())
}

//! The `check` task: one pass over what a person on call wants to know, with the exit code a
//! monitor understands (0 ok, 1 warning, 2 critical). Decide, then do: [`gather`] collects the
//! facts (one read-only helper container measures the volumes' and binds' filesystems and
//! sizes; the host measures the backup directory; the backup directory and the remotes are
//! listed), [`assess::assess`] decides from them alone (pure, unit-tested), and `run` prints
//! the report, writes the Prometheus textfile ([`prom`]) and notifies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::context::Ctx;
use crate::files::Usage;
use crate::model::notify::Event;
use crate::model::offsite::Offsite;
use crate::store::local;
use crate::tasks::backup;

pub mod assess;
pub mod prom;

pub use assess::{Facts, Level, Report};

/// What `check` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// The backup directory.
    pub dir: PathBuf,
    pub json: bool,
    /// Write a node_exporter textfile here (atomically).
    pub prometheus: Option<PathBuf>,
}

/// `check`: gathers, assesses, prints (`json`: the report as JSON), writes the textfile, and
/// returns the report (its `exit_code` is what the command exits with); the notifiers of
/// `x-xtask.notify` hear success when it is ok, failure otherwise.
pub fn run(ctx: &Ctx, opts: &Options) -> Result<Report> {
    let end = |r: &Report| {
        let event = if r.level == Level::Ok { Event::Success } else { Event::Failure };
        let worst: Vec<&str> = r
            .findings
            .iter()
            .filter(|f| f.level == r.level && f.level != Level::Ok)
            .map(|f| f.message.as_str())
            .collect();
        let message = format!(
            "{}: {}",
            r.level.as_str(),
            if worst.is_empty() { "all checks ok".into() } else { worst.join("; ") }
        );
        (event, message, serde_json::to_value(r).unwrap_or_default())
    };
    let result = ctx.notified("check", false, || check_now(ctx, opts), end);
    if let (Err(e), Some(file)) = (&result, &opts.prometheus) {
        // A check that could not run still says so to the collector, not a stale ok.
        if let Err(w) = crate::files::write_atomic(file, prom::render_failed(&ctx.stack.name).as_bytes(), 0o644) {
            eprintln!("warning: {e:#}; and the textfile {} could not say so: {w:#}", file.display());
        }
    }
    result
}

fn check_now(ctx: &Ctx, opts: &Options) -> Result<Report> {
    let settings = ctx.offsite()?;
    let facts = gather(ctx, &opts.dir, &settings)?;
    let report = assess::assess(&facts, &settings.operations.alerts);
    if let Some(file) = &opts.prometheus {
        crate::files::write_atomic(file, prom::render(&report).as_bytes(), 0o644)
            .with_context(|| format!("write the Prometheus textfile {}", file.display()))?;
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report)
}

/// The report for people: one line per finding, worst first, then the verdict.
pub fn render(r: &Report) -> String {
    let mut findings: Vec<&assess::Finding> = r.findings.iter().collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.level));
    let mut out = format!("Check of project {} at {}\n\n", r.project, r.checked_at);
    for f in findings {
        out.push_str(&format!("{:<9} {:<16} {}\n", f.level.as_str().to_uppercase(), f.check, f.message));
    }
    out.push_str(&format!("\n{} (exit {})\n", r.level.as_str().to_uppercase(), r.exit_code));
    out
}

/// The time the ages are measured at: now; in debug builds (the end-to-end tests), a test hook
/// `XTASK_CHECK_NOW=RFC3339` moves it, so an old backup is proven by a fixed clock. A release
/// build does not read the variable.
#[cfg(debug_assertions)]
fn now() -> OffsetDateTime {
    let fixed = std::env::var("XTASK_CHECK_NOW").ok();
    fixed
        .and_then(|t| OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
}

#[cfg(not(debug_assertions))]
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Collects the facts `assess` decides from. A part that cannot be read becomes a problem (a
/// warning), never an abort: a check that fails to look must still say so with its exit code.
pub fn gather(ctx: &Ctx, dir: &Path, settings: &Offsite) -> Result<Facts> {
    let project = ctx.stack.name.clone();
    let mut facts = Facts {
        project: project.clone(),
        now: now(),
        disks: Vec::new(),
        volumes: Vec::new(),
        newest_backup: None,
        newest_deep_verify: local::last_deep(dir, &project).map(|(t, r)| (t, r.archive)),
        failed_drill: local::read_deep(dir, &project).and_then(|r| r.failed_drill()),
        remotes: Vec::new(),
        unprotected: Vec::new(),
        not_in_newest: Vec::new(),
        problems: Vec::new(),
    };
    match crate::files::usage(dir) {
        Ok(usage) => facts.disks.push(assess::Disk { what: "backup_dir", path: dir.display().to_string(), usage }),
        Err(e) => facts.problems.push(format!("the backup directory {}: {e:#}", dir.display())),
    }
    let newest = local::scan(dir, &project)?.into_iter().find(|a| a.problem.is_none() && a.kind == "full");
    let meta = newest.as_ref().and_then(|a| local::read_metadata(&a.path).ok());
    facts.newest_backup = newest.map(|a| (a.created, a.file));
    let plan = backup::prepare(ctx, &backup::Options::new(backup::Kind::Full, dir.to_path_buf()));
    match &plan {
        Ok(p) => protection(p, meta.as_ref(), &mut facts),
        Err(e) => facts.problems.push(format!("what a backup copies could not be decided: {e:#}")),
    }
    if ctx.online().is_some() {
        if let Err(e) = measure(ctx, meta.as_ref(), &mut facts) {
            facts.problems.push(format!("the volumes' filesystems could not be measured: {e:#}"));
        }
    }
    facts.remotes = remotes(ctx, settings);
    Ok(facts)
}

/// Data no copy protects (the plan's NOT PROTECTED), and data a backup copies that the newest
/// backup lacks.
fn protection(plan: &backup::BackupPlan, meta: Option<&crate::archive::Metadata>, facts: &mut Facts) {
    facts.unprotected = plan.skipped.iter().filter(|(_, why)| why.starts_with(backup::UNPROTECTED)).cloned().collect();
    let Some(meta) = meta else { return };
    for v in &plan.volumes {
        let held = meta.volumes.iter().any(|m| match &v.bind {
            Some(path) => m.bind.as_deref() == Some(path.as_str()),
            None => m.bind.is_none() && m.name == v.name,
        });
        if !held {
            facts.not_in_newest.push(v.source().to_string());
        }
    }
    for d in &plan.dbs {
        if !meta.databases.iter().any(|m| m.service == d.login.service) {
            facts.not_in_newest.push(format!("databases of service {}", d.login.service));
        }
    }
}

/// Run with the mount points as arguments. Fixed: nothing from outside is in it.
const MEASURE: &str = "df -P -k \"$@\" || exit 1; echo ---; du -s -k \"$@\" 2>/dev/null; exit 0";

/// One read-only helper: `df` and `du` over every existing volume of the stack and every data
/// bind that exists, in that order.
fn measure(ctx: &Ctx, meta: Option<&crate::archive::Metadata>, facts: &mut Facts) -> Result<()> {
    let docker = ctx.docker()?;
    let existing = docker.volume_names()?;
    let project = ctx.project()?;
    let mut targets: Vec<(String, bool)> =
        project.volumes.iter().filter(|v| existing.contains(&v.name)).map(|v| (v.name.clone(), false)).collect();
    for b in ctx.binds()?.into_iter().filter(|b| b.never.is_none() && Path::new(&b.host_path).is_dir()) {
        targets.push((b.host_path, true));
    }
    if targets.is_empty() {
        return Ok(());
    }
    let sources: Vec<&str> = targets.iter().map(|(s, _)| s.as_str()).collect();
    let mounts: Vec<String> = (0..sources.len()).map(|i| format!("/v/{i}")).collect();
    let mut command = vec!["sh", "-c", MEASURE, "sh"];
    command.extend(mounts.iter().map(String::as_str));
    let out =
        docker.query(&docker.helper_read_only(&sources, &command)).context("run df and du in a helper container")?;
    let measured = parse_measure(&out, sources.len())?;
    let mut volume_disks: BTreeMap<String, (Usage, Vec<String>)> = BTreeMap::new();
    for ((source, is_bind), (filesystem, usage, size)) in targets.iter().zip(measured) {
        if *is_bind {
            facts.disks.push(assess::Disk { what: "bind", path: source.clone(), usage });
        } else {
            volume_disks.entry(filesystem).or_insert((usage, Vec::new())).1.push(source.clone());
        }
        let at_backup = meta.and_then(|m| {
            m.volumes.iter().find(|v| if *is_bind { v.bind.as_deref() == Some(source) } else { &v.name == source })
        });
        facts.volumes.push(assess::VolumeFact {
            name: source.clone(),
            size_now: size,
            size_at_backup: at_backup.and_then(|v| v.size_bytes),
            available: Some(usage.available),
        });
    }
    for (filesystem, (usage, names)) in volume_disks {
        let path = format!("{filesystem} ({})", names.join(", "));
        facts.disks.insert(1.min(facts.disks.len()), assess::Disk { what: "volumes", path, usage });
    }
    Ok(())
}

/// Each mount's (filesystem, use, size in bytes) from the output of [`MEASURE`] over `n` mounts
/// `/v/0…`: `df -P -k` lines in order, then `du -s -k` lines.
pub fn parse_measure(out: &str, n: usize) -> Result<Vec<(String, Usage, Option<u64>)>> {
    let (df, du) = out.split_once("\n---").with_context(|| format!("unexpected output of df and du: {out:?}"))?;
    let rows: Vec<&str> = df.lines().filter(|l| !l.trim().is_empty()).skip(1).collect();
    let mut sizes = BTreeMap::new();
    for line in du.lines() {
        let mut parts = line.split_whitespace();
        let (Some(kib), Some(path)) = (parts.next(), parts.next()) else { continue };
        if let (Ok(kib), Some(i)) = (kib.parse::<u64>(), path.strip_prefix("/v/").and_then(|i| i.parse::<usize>().ok()))
        {
            sizes.insert(i, kib * 1024);
        }
    }
    let mut measured = Vec::new();
    for i in 0..n {
        let row = rows.get(i).with_context(|| format!("df printed no line for mount {i}: {df:?}"))?;
        let cols: Vec<&str> = row.split_whitespace().collect();
        let kib = |c: usize| cols.get(c).and_then(|v| v.parse::<u64>().ok()).map(|k| k * 1024);
        let (Some(size), Some(used), Some(available)) = (kib(1), kib(2), kib(3)) else {
            anyhow::bail!("unexpected df line {row:?}");
        };
        measured.push((cols[0].to_string(), Usage { size, used, available }, sizes.get(&i).copied()));
    }
    Ok(measured)
}

/// Each configured remote's newest complete archive the reading policy counts, or why it could
/// not be listed.
fn remotes(ctx: &Ctx, settings: &Offsite) -> Vec<assess::RemoteFact> {
    let mut out = Vec::new();
    for name in settings.remotes.keys() {
        let newest = crate::store::remote::open(ctx, name)
            .and_then(|r| crate::store::remote::scan(&r))
            .map(|(list, _)| list.into_iter().find(|a| a.complete && a.sidecar_refused.is_none()).map(|a| a.created));
        out.push(assess::RemoteFact { name: name.clone(), newest: newest.map_err(|e| format!("{e:#}")) });
    }
    for (name, spec) in &settings.vaults {
        let newest = crate::store::vault::open(spec, false)
            .and_then(|r| crate::store::vault::scan_judged(ctx, &r))
            .map(|list| list.into_iter().find(|a| a.complete && a.problem.is_none()).map(|a| a.created));
        out.push(assess::RemoteFact { name: name.clone(), newest: newest.map_err(|e| format!("{e:#}")) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_and_du_are_read_per_mount_in_order() {
        let out = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                   /dev/vda1 1000 800 200 80% /v/0\n\
                   /dev/vda1 1000 800 200 80% /v/1\n\
                   /dev/vdb 50 1 49 3% /v/2\n\
                   ---\n\
                   12\t/v/0\n\
                   3\t/v/2\n";
        let m = parse_measure(out, 3).unwrap();
        assert_eq!(
            m[0],
            ("/dev/vda1".into(), Usage { size: 1000 * 1024, used: 800 * 1024, available: 200 * 1024 }, Some(12 * 1024))
        );
        assert_eq!((m[1].2, m[2].0.as_str(), m[2].2), (None, "/dev/vdb", Some(3 * 1024)), "du may fail on one mount");
        assert!(parse_measure(out, 4).is_err(), "a missing df line is an error, never a zero");
        assert!(parse_measure("nonsense", 1).is_err());
    }
}

//! The archives in the backup directory: `backups` (list), `verify` and `prune` (retention in
//! the manner of restic's `forget`). Only files this tool wrote are considered: named
//! `{full,db}_backup_*.tar.gz` and starting with an xtask `metadata.json`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::archive::{self, Metadata};
use crate::context::Ctx;
use crate::ui::{human_bytes, table, Ui};

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub file: String,
    pub kind: String,
    /// UTC, RFC 3339, from the archive's metadata.
    pub created_at: String,
    #[serde(skip)]
    pub created: OffsetDateTime,
    pub size_bytes: u64,
    pub tag: Option<String>,
    pub volumes: Vec<String>,
    pub databases: Vec<String>,
    /// "ok", "failed" or "unverified" (as of the last `verify` of this exact file).
    pub checksums: String,
}

/// Where archives live: `--output-dir`, else `$XTASK_BACKUP_DIR`, else `backups/` in the workspace.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XTASK_BACKUP_DIR")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::compose::workspace_root().join("backups"))
}

/// The result of the last `verify`, kept beside the archive as `.<file>.verified`.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    size: u64,
    modified: u64,
    ok: bool,
}

fn marker_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.verified"))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    let modified = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some((m.len(), modified))
}

fn record_verification(path: &Path, ok: bool) {
    if let Some((size, modified)) = identity(path) {
        if let Ok(json) = serde_json::to_vec(&Marker { size, modified, ok }) {
            let _ = std::fs::write(marker_path(path), json);
        }
    }
}

fn verification(path: &Path) -> &'static str {
    let marker: Option<Marker> = std::fs::read(marker_path(path)).ok().and_then(|b| serde_json::from_slice(&b).ok());
    match (marker, identity(path)) {
        (Some(m), Some((size, modified))) if m.size == size && m.modified == modified => {
            if m.ok {
                "ok"
            } else {
                "failed"
            }
        }
        _ => "unverified",
    }
}

/// Reads only the first entry, `metadata.json`.
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut entries = archive.entries().with_context(|| format!("{}: not a tar.gz archive", path.display()))?;
    let mut first = entries
        .next()
        .with_context(|| format!("{}: the archive is empty", path.display()))?
        .with_context(|| format!("{}: the archive is corrupt", path.display()))?;
    if first.path_bytes().as_ref() != archive::METADATA.as_bytes() {
        bail!("{}: the first entry is not {}: not an xtask archive", path.display(), archive::METADATA);
    }
    let mut text = Vec::new();
    first.read_to_end(&mut text).with_context(|| format!("{}: read metadata.json", path.display()))?;
    archive::parse_metadata(&text).with_context(|| format!("{}", path.display()))
}

fn is_our_name(name: &str) -> bool {
    (name.starts_with("full_backup_") || name.starts_with("db_backup_")) && name.ends_with(".tar.gz")
}

/// Every archive of `project` in `dir`, newest first. Files that are not ours are ignored.
pub fn scan(dir: &Path, project: &str) -> Result<Vec<ArchiveFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if !is_our_name(&file) {
            continue;
        }
        let path = e.path();
        let Ok(meta) = read_metadata(&path) else { continue };
        if meta.project != project {
            continue;
        }
        let created = OffsetDateTime::parse(&meta.created_at, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{}: metadata.json created_at is not RFC 3339", path.display()))?;
        out.push(ArchiveFile {
            size_bytes: e.metadata().map(|m| m.len()).unwrap_or(0),
            checksums: verification(&path).to_string(),
            path,
            file,
            kind: meta.kind.clone(),
            created_at: meta.created_at.clone(),
            created,
            tag: meta.tag.clone(),
            volumes: meta.volumes.iter().map(|v| v.name.clone()).collect(),
            databases: meta
                .postgres
                .as_ref()
                .map(|p| p.databases.iter().map(|d| d.name.clone()).collect())
                .unwrap_or_default(),
        });
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.file.cmp(&a.file)));
    Ok(out)
}

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
                a.created.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                age(a.created),
                human_bytes(a.size_bytes),
                a.kind.clone(),
                a.tag.clone().unwrap_or_else(|| "-".into()),
                a.checksums.clone(),
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
}

pub fn verify(ctx: &Ctx, dir: &Path, which: Which, deep: bool, json: bool) -> Result<()> {
    let (project, ui) = (ctx.stack.name.as_str(), &ctx.ui);
    let paths: Vec<PathBuf> = match which {
        Which::One(p) => vec![p],
        Which::Latest => match scan(dir, project)?.into_iter().next() {
            Some(a) => vec![a.path],
            None => bail!("no archive of project {project} in {}; make one with `cargo xtask backup`", dir.display()),
        },
        Which::All => scan(dir, project)?.into_iter().map(|a| a.path).collect(),
    };
    let mut reports = Vec::new();
    for path in paths {
        let progress = ui.progress(&format!("verify {}", path.display()));
        let mut report = archive::verify(&path);
        progress.inc(report.bytes);
        if deep && report.ok() {
            if let Some(meta) = report.metadata.clone() {
                if let Err(e) = deep_check(ctx, &path, &meta) {
                    report.problems.push(format!("--deep: {e:#}"));
                }
            }
        }
        record_verification(&path, report.ok());
        if report.ok() {
            progress.finish(&format!("OK: {} entries, {} files, checksums match", report.entries, report.files));
        } else {
            progress.finish(&format!("FAILED: {} problem(s)", report.problems.len()));
            for p in &report.problems {
                eprintln!("    problem: {p}");
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
    Ok(())
}

/// Removes a throwaway container or volume when dropped.
struct Scratch<'a> {
    docker: &'a crate::docker::Docker,
    args: Vec<String>,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self.docker.query(&self.docker.cmd(self.args.clone()));
    }
}

/// Proves the archive loads: the dumps into a throwaway PostgreSQL (same image as the stack's
/// database service) with the row counts compared, each volume into a scratch volume with its
/// file count compared; everything is removed afterwards.
fn deep_check(ctx: &Ctx, path: &Path, meta: &Metadata) -> Result<()> {
    let docker = ctx.docker()?;
    let pid = std::process::id();
    if let Some(pg) = &meta.postgres {
        let model = crate::volumes::model(ctx)?;
        let image =
            model.services.iter().find(|s| s.name == pg.service).and_then(|s| s.image.clone()).with_context(|| {
                format!("the stack has no service {} to take the PostgreSQL image from", pg.service)
            })?;
        let name = format!("xtask-verify-{pid}");
        let password = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let user = format!("POSTGRES_USER={}", pg.user);
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", "none"].map(String::from).to_vec();
        args.extend(crate::docker::helper_labels());
        args.extend(["-e", "POSTGRES_PASSWORD", "-e", &user, &image].map(String::from));
        let run = docker.cmd(args).secret_env("POSTGRES_PASSWORD", &password);
        docker.query(&run).context("start a throwaway PostgreSQL")?;
        let _container = Scratch { docker, args: vec!["rm".into(), "-f".into(), "-v".into(), name.clone()] };
        let ready = docker.cmd(["exec", &name, "pg_isready", "-h", "127.0.0.1", "-U", &pg.user, "-d", "postgres"]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while docker.query(&ready).is_err() {
            if std::time::Instant::now() > deadline {
                bail!("the throwaway PostgreSQL did not become ready in 120 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let psql = |db: &str, stop: bool| {
            let mut args = vec!["exec", "-i", name.as_str(), "psql", "-X", "-q", "-U", &pg.user, "-d", db];
            if stop {
                args.extend(["-v", "ON_ERROR_STOP=1"]);
            }
            docker.cmd(args)
        };
        // One value from a query.
        let psql_at = |db: &str, sql: &str| {
            docker.query(&docker.cmd(["exec", &name, "psql", "-X", "-At", "-U", &pg.user, "-d", db, "-c", sql]))
        };
        // Roles: the cluster's own superuser exists already, so errors here are expected and ignored.
        crate::extract::pipe_entry(docker, path, &pg.globals_entry, &psql("postgres", false))?;
        for db in &pg.databases {
            let exists = psql_at(
                "postgres",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{}'", db.name.replace('\'', "''")),
            )?;
            if exists.trim() != "1" {
                crate::extract::pipe_text(
                    docker,
                    "CREATE DATABASE :\"d\";",
                    &psql("postgres", true).arg_pair("-v", &format!("d={}", db.name)),
                )?;
            }
            crate::extract::pipe_entry(docker, path, &db.entry, &psql(&db.name, true))
                .with_context(|| format!("load {} into a throwaway PostgreSQL", db.entry))?;
            for (table, rows) in &db.tables {
                let got = psql_at(&db.name, &format!("SELECT count(*) FROM {table}"))?;
                if got.trim() != rows.to_string() {
                    bail!(
                        "database {}: table {table} has {} rows after loading, the metadata says {rows}",
                        db.name,
                        got.trim()
                    );
                }
            }
        }
    }
    for (i, v) in meta.volumes.iter().enumerate() {
        let scratch = format!("xtask-verify-{pid}-{i}");
        docker.query(&docker.cmd(["volume", "create", "--label", "xtask.helper=1", &scratch]))?;
        let _volume = Scratch { docker, args: vec!["volume".into(), "rm".into(), "-f".into(), scratch.clone()] };
        let files = crate::extract::fill_volume(docker, path, &v.name, &scratch, &mut |_| {})
            .with_context(|| format!("load volume {} into a scratch volume", v.name))?;
        let counted = docker.query(&docker.helper_read_only(&[scratch.as_str()], &["find", "/v/0", "-type", "f"]))?;
        if counted.lines().count() as u64 != files {
            // Names with newlines print over several lines: count NUL-separated instead.
            let nul = docker
                .query(&docker.helper_read_only(&[scratch.as_str()], &["find", "/v/0", "-type", "f", "-print0"]))?;
            let n = nul.split('\0').filter(|s| !s.is_empty()).count() as u64;
            if n != files {
                bail!("volume {}: {n} files after loading, the archive holds {files}", v.name);
            }
        }
    }
    Ok(())
}

/// How many archives to keep, like restic's `forget --keep-*`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

/// For each archive (newest first, one kind): keep it, and why.
pub fn decide(archives: &[(OffsetDateTime, bool)], r: &Retention) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); archives.len()];
    for (i, why) in reasons.iter_mut().enumerate().take(r.last) {
        why.push(format!("last {}", i + 1));
    }
    let mut bucket = |count: usize, label: &str, key: &dyn Fn(OffsetDateTime) -> String| {
        let mut seen = BTreeSet::new();
        for (i, (t, _)) in archives.iter().enumerate() {
            if seen.len() >= count {
                break;
            }
            let k = key(*t);
            if seen.insert(k.clone()) {
                reasons[i].push(format!("{label} {k}"));
            }
        }
    };
    bucket(r.daily, "daily", &|t| t.date().to_string());
    bucket(r.weekly, "weekly", &|t| {
        let (y, w, _) = t.date().to_iso_week_date();
        format!("{y}-W{w:02}")
    });
    bucket(r.monthly, "monthly", &|t| format!("{}-{:02}", t.year(), t.month() as u8));
    if let Some(i) = archives.iter().position(|(_, verified)| *verified) {
        reasons[i].push("newest verified archive".into());
    }
    reasons
}

pub fn prune(dir: &Path, project: &str, r: &Retention, dry_run: bool, ui: &Ui) -> Result<()> {
    // Not while a backup or restore of the project runs (it may be reading an archive).
    let _lock = if dry_run || !dir.exists() { None } else { Some(crate::lock::Lock::acquire(dir, project, "prune")?) };
    let archives = scan(dir, project)?;
    let mut removed = 0;
    for kind in ["full", "db"] {
        let group: Vec<&ArchiveFile> = archives.iter().filter(|a| a.kind == kind).collect();
        let facts: Vec<(OffsetDateTime, bool)> = group.iter().map(|a| (a.created, a.checksums == "ok")).collect();
        for (a, why) in group.iter().zip(decide(&facts, r)) {
            if why.is_empty() {
                if dry_run {
                    println!("would remove {}", a.file);
                } else {
                    std::fs::remove_file(&a.path).with_context(|| format!("remove {}", a.path.display()))?;
                    let _ = std::fs::remove_file(marker_path(&a.path));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u8, month: u8, hour: u8) -> OffsetDateTime {
        let date = time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), day).unwrap();
        date.with_hms(hour, 0, 0).unwrap().assume_utc()
    }

    #[test]
    fn retention_keeps_last_daily_weekly_monthly_and_newest_verified() {
        // Newest first: two on Wed Nov 25, one each on Tue Nov 24 (same ISO week), Nov 10, Oct 5.
        let archives = [
            (at(25, 11, 12), false),
            (at(25, 11, 8), true),
            (at(24, 11, 8), false),
            (at(10, 11, 8), false),
            (at(5, 10, 8), false),
        ];
        let keep = |r: Retention| decide(&archives, &r).iter().map(|w| !w.is_empty()).collect::<Vec<_>>();
        let none = Retention { last: 0, daily: 0, weekly: 0, monthly: 0 };
        assert_eq!(keep(none), [false, true, false, false, false], "the newest verified one always stays");
        assert_eq!(keep(Retention { last: 2, ..none }), [true, true, false, false, false]);
        assert_eq!(keep(Retention { daily: 2, ..none }), [true, true, true, false, false]);
        assert_eq!(keep(Retention { weekly: 2, ..none }), [true, true, false, true, false]);
        assert_eq!(keep(Retention { monthly: 2, ..none }), [true, true, false, false, true]);
        let why = decide(&archives, &Retention { last: 1, daily: 1, weekly: 0, monthly: 0 });
        assert_eq!(why[0], ["last 1", "daily 2026-11-25"]);
        assert_eq!(why[1], ["newest verified archive"]);
    }

    #[test]
    fn scan_reads_metadata_filters_by_project_and_sorts_newest_first() {
        let dir = std::env::temp_dir().join(format!("xtask-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, project: &str, created: &str| {
            let mut w = archive::ArchiveWriter::create(&dir.join(file), 1, 1).unwrap();
            let meta = Metadata {
                format: archive::FORMAT.into(),
                format_version: archive::FORMAT_VERSION,
                kind: "full".into(),
                project: project.into(),
                compose_files: vec![],
                model_sha256: String::new(),
                environment: None,
                created_at: created.into(),
                tool_version: "t".into(),
                tag: None,
                entries: vec![],
                postgres: None,
                volumes: vec![],
                skipped: vec![],
            };
            archive::write_metadata(&mut w, &meta).unwrap();
            w.commit().unwrap();
        };
        write("full_backup_20260101_000000.tar.gz", "p", "2026-01-01T00:00:00Z");
        write("full_backup_20260301_000000.tar.gz", "p", "2026-03-01T00:00:00Z");
        write("full_backup_20260401_000000.tar.gz", "other", "2026-04-01T00:00:00Z");
        std::fs::write(dir.join("full_backup_20260501_000000.tar.gz"), b"not ours").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let found = scan(&dir, "p").unwrap();
        let files: Vec<&str> = found.iter().map(|a| a.file.as_str()).collect();
        assert_eq!(files, ["full_backup_20260301_000000.tar.gz", "full_backup_20260101_000000.tar.gz"]);
        assert_eq!(found[0].checksums, "unverified");
        record_verification(&found[0].path, true);
        assert_eq!(verification(&found[0].path), "ok");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_our_file_names() {
        assert!(is_our_name("full_backup_20260101_000000.tar.gz"));
        assert!(is_our_name("db_backup_20260101_000000_pre-migration.tar.gz"));
        assert!(!is_our_name("notes_backup_x.tar.gz"));
        assert!(!is_our_name(".full_backup_20260101_000000.tar.gz.tmp-12"));
        assert!(!is_our_name("full_backup_20260101_000000.tar"));
    }
}

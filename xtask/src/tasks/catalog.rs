//! The archives in the backup directory: `backups` (list), `verify` and `prune` (retention in
//! the manner of restic's `forget`). Only files this tool wrote are considered: named
//! `{full,db}_backup_*.tar.gz` (or `.tar.gz.age`, encrypted) and starting with an xtask
//! `metadata.json`. An encrypted archive is read with the identity `XTASK_AGE_IDENTITY` names;
//! without it, it is listed by its name alone.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::archive::extract::Verified;
use crate::archive::{self, Metadata};
use crate::context::Ctx;
use crate::ui::{human_bytes, table};

pub(crate) mod deep_mariadb;

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub file: String,
    pub kind: String,
    /// UTC, RFC 3339, from the archive's metadata.
    pub created_at: String,
    /// When this tool wrote it: the stamp in its file name (checked against the metadata and
    /// the file's mtime); what "latest" and retention order by.
    #[serde(skip)]
    pub created: OffsetDateTime,
    pub size_bytes: u64,
    pub tag: Option<String>,
    pub volumes: Vec<String>,
    pub databases: Vec<String>,
    /// "ok", "failed" or "unverified" (as of the last `verify` of this exact file).
    pub checksums: String,
    /// Encrypted with age (`….tar.gz.age`).
    pub encrypted: bool,
    /// Why the file is damaged or its date is in doubt: it is then never "latest", never
    /// counted or deleted by prune.
    pub problem: Option<String>,
}

/// Where archives live: `--output-dir`, else `$XTASK_BACKUP_DIR`, else `backups/` in the workspace.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XTASK_BACKUP_DIR")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::model::compose::workspace_root().join("backups"))
}

/// The result of the last `verify`, kept beside the archive as `.<file>.verified`: only a cache
/// (anyone who can write the directory can write one). It counts while the archive's size and
/// mtime match; where it decides something (prune's newest verified archive) its SHA-256 is
/// checked against the archive's bytes, and a marker that does not match is ignored.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    size: u64,
    modified: u64,
    ok: bool,
    #[serde(default)]
    sha256: Option<String>,
}

fn marker_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.verified"))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::symlink_metadata(path).ok().filter(|m| m.file_type().is_file())?;
    let modified = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some((m.len(), modified))
}

/// Writes the marker atomically (a new private file renamed over it): never through a symlink.
fn record_verification(path: &Path, ok: bool) {
    let Some((size, modified)) = identity(path) else { return };
    let sha256 = file_digest(path);
    let Ok(json) = serde_json::to_vec(&Marker { size, modified, ok, sha256 }) else { return };
    let marker = marker_path(path);
    let temp = marker.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(&json));
    if written.is_err() || std::fs::rename(&temp, &marker).is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

fn read_marker(path: &Path) -> Option<Marker> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(marker_path(path)).ok()?;
    let mut text = Vec::new();
    f.take(4096).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether the archive's bytes still hash to what its `ok` marker recorded (read in full).
fn marker_confirmed(path: &Path) -> bool {
    let Some(Marker { ok: true, sha256: Some(recorded), .. }) = read_marker(path) else { return false };
    file_digest(path).is_some_and(|d| d == recorded)
}

/// The SHA-256 of a file's bytes as stored (an encrypted archive is not decrypted), in hex.
fn file_digest(path: &Path) -> Option<String> {
    crate::tasks::offsite::sha256_of(path).ok().map(|d| archive::hex(&d))
}

fn verification(path: &Path) -> &'static str {
    match (read_marker(path), identity(path)) {
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

/// Reads only the first entry, `metadata.json`, by the archive grammar (bounded, checked).
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    archive::read_metadata_from(&archive::Source::open(path)?)
}

pub fn is_our_name(name: &str) -> bool {
    (name.starts_with("full_backup_") || name.starts_with("db_backup_"))
        && (name.ends_with(".tar.gz") || name.ends_with(".tar.gz.age"))
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `full` or `db`, from an archive's file name.
pub fn name_kind(name: &str) -> &'static str {
    if name.starts_with("db_backup_") {
        "db"
    } else {
        "full"
    }
}

/// The time in a file name `{full,db}_backup_YYYYMMDD_HHMMSS…`.
pub fn name_stamp(file: &str) -> Option<OffsetDateTime> {
    let rest = file.strip_prefix("full_backup_").or_else(|| file.strip_prefix("db_backup_"))?;
    let digits = |r: std::ops::Range<usize>| rest.get(r)?.parse::<u32>().ok();
    if rest.as_bytes().get(8) != Some(&b'_') {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(digits(0..4)? as i32, month, digits(6..8)? as u8).ok()?;
    let t = date.with_hms(digits(9..11)? as u8, digits(11..13)? as u8, digits(13..15)? as u8).ok()?;
    Some(t.assume_utc())
}

/// How far the name's stamp, the metadata's date and the file's mtime may disagree.
const SLACK_SECONDS: i64 = 300;

/// Whether the dates of a file can be trusted for ordering: its name's stamp, its metadata's
/// `created_at` and its mtime agree, and none lies in the future.
pub fn date_doubt(
    stamp: OffsetDateTime,
    created_at: &str,
    mtime: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<String> {
    let Ok(declared) = OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339) else {
        return Some(format!("its metadata's created_at {created_at:?} is not RFC 3339"));
    };
    if (declared - stamp).whole_seconds().abs() > SLACK_SECONDS {
        return Some(format!("its metadata says {created_at}, its file name says {stamp}"));
    }
    if (stamp - now).whole_seconds() > SLACK_SECONDS {
        return Some(format!("it is dated {stamp}, in the future"));
    }
    if (stamp - mtime).whole_seconds() > SLACK_SECONDS || (mtime - now).whole_seconds() > SLACK_SECONDS {
        return Some(format!("its file was last written {mtime}, which does not fit its date {stamp}"));
    }
    None
}

/// The newest archive of this project in `dir` that `wanted` accepts and the reading policy
/// trusts (`x-xtask.sign` / `encrypt`, archive by archive through its open descriptor), opened;
/// each one passed over is named with why.
pub fn latest_trusted(ctx: &Ctx, dir: &Path, wanted: impl Fn(&ArchiveFile) -> bool) -> Result<archive::Source> {
    let project = ctx.stack.name.as_str();
    let policy = crate::tasks::trust::Policy::of(ctx)?;
    for a in scan(dir, project)?.into_iter().filter(|a| a.problem.is_none() && wanted(a)) {
        let src = archive::Source::open(&a.path)?;
        match policy.check_local(&src) {
            Ok(()) => return Ok(src),
            Err(e) => eprintln!("skip {e:#}"),
        }
    }
    bail!("no trusted archive of project {project} in {}; make one with `cargo xtask backup`", dir.display())
}

/// Every archive of `project` in `dir`, newest first. Files that are not ours by name are
/// ignored; ours that cannot be read are listed with their problem (and a warning), never abort.
pub fn scan(dir: &Path, project: &str) -> Result<Vec<ArchiveFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let now = OffsetDateTime::now_utc();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if is_our_name(&file) {
            if let Some(a) = describe(&e.path(), file, project, now) {
                out.push(a);
            }
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.file.cmp(&a.file)));
    Ok(out)
}

/// One file of the backup directory: None when it belongs to another project.
fn describe(path: &Path, file: String, project: &str, now: OffsetDateTime) -> Option<ArchiveFile> {
    let stat = std::fs::symlink_metadata(path).ok();
    let mtime = stat.as_ref().and_then(|m| m.modified().ok()).map(OffsetDateTime::from).unwrap_or(now);
    let stamp = name_stamp(&file);
    let mut a = ArchiveFile {
        path: path.to_path_buf(),
        created: stamp.unwrap_or(OffsetDateTime::UNIX_EPOCH),
        file,
        kind: "?".into(),
        created_at: String::new(),
        size_bytes: stat.as_ref().map(|m| m.len()).unwrap_or(0),
        tag: None,
        volumes: Vec::new(),
        databases: Vec::new(),
        checksums: verification(path).to_string(),
        encrypted: archive::is_sealed(path),
        problem: None,
    };
    if a.encrypted && std::env::var_os(crate::engine::crypt::IDENTITY_VAR).is_none() {
        // Listed by its name: its kind and date come from there, its contents stay unknown.
        a.kind = name_kind(&a.file).into();
        let created_at = stamp.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        a.created_at = created_at.clone().unwrap_or_default();
        a.problem = match stamp {
            None => Some("its file name holds no valid date".into()),
            Some(t) => date_doubt(t, &a.created_at, mtime, now),
        };
        return Some(a);
    }
    let meta = match stat.filter(|m| m.file_type().is_file()) {
        None => Err(anyhow::anyhow!("not a regular file")),
        Some(_) => read_metadata(path),
    };
    let meta = match meta {
        Ok(m) if m.project != project => return None,
        Ok(m) => m,
        Err(e) => {
            eprintln!("warning: {}: damaged, skipped: {e:#}", path.display());
            a.problem = Some(format!("damaged: {e:#}"));
            return Some(a);
        }
    };
    a.problem = match stamp {
        None => Some("its file name holds no valid date".into()),
        Some(stamp) => date_doubt(stamp, &meta.created_at, mtime, now),
    }
    .map(|why| {
        eprintln!("warning: {}: date in doubt ({why}); never taken as latest nor pruned", path.display());
        format!("date in doubt: {why}")
    });
    a.kind = meta.kind.clone();
    a.created_at = meta.created_at.clone();
    a.tag = meta.tag.clone();
    a.volumes = meta.volumes.iter().map(|v| v.name.clone()).collect();
    a.databases = meta
        .databases
        .iter()
        .flat_map(|s| s.databases.iter().map(move |d| format!("{}/{}", s.service, d.name)))
        .collect();
    Some(a)
}

/// The newest sound archive of `project` that `wanted` accepts (never a damaged or doubtful one).
pub fn latest(dir: &Path, project: &str, wanted: impl Fn(&ArchiveFile) -> bool) -> Result<PathBuf> {
    scan(dir, project)?.into_iter().find(|a| a.problem.is_none() && wanted(a)).map(|a| a.path).with_context(|| {
        format!("no archive of project {project} in {}; make one with `cargo xtask backup`", dir.display())
    })
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
            let src = crate::tasks::offsite::pick(ctx, &remote, file.as_deref())?;
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
    let trusted = src.and_then(|s| crate::tasks::trust::Policy::of(ctx)?.check_local(&s).map(|_| s));
    let src = match trusted {
        Ok(s) => s,
        Err(e) => {
            return archive::Report { path: path.to_path_buf(), problems: vec![format!("{e:#}")], ..Default::default() }
        }
    };
    let mut report =
        if deep { archive::verify_source_for_reading(&src, rules) } else { archive::verify_source(&src, rules) };
    if let Err(e) = check_binds(ctx, dir, &report) {
        report.problems.push(format!("{e:#}"));
    }
    if !deep || !report.ok() {
        return report;
    }
    let verified = Verified { src, report, rules };
    let problem = deep_check(ctx, &verified).err();
    let mut report = verified.report;
    if let Some(e) = problem {
        report.problems.push(format!("--deep: {e:#}"));
    }
    report
}

/// Every bind the archive holds must be one a restore into this stack would write: a bind this
/// stack's compose file declares for its recorded mounts, never a system path, never one holding
/// the project or the backup directory.
fn check_binds(ctx: &Ctx, dir: &Path, report: &archive::Report) -> Result<()> {
    let Some(meta) = &report.metadata else { return Ok(()) };
    if meta.volumes.iter().all(|v| v.bind.is_none()) {
        return Ok(());
    }
    let stack = crate::tasks::restore::StackBinds::of(ctx, dir)?;
    for v in &meta.volumes {
        let Some(path) = v.bind.as_deref() else { continue };
        stack
            .target_of(meta, v, path)
            .with_context(|| format!("metadata.json: {}: a restore into this stack would refuse it", v.name))?;
    }
    Ok(())
}

/// Removes a throwaway container or volume when dropped.
struct Scratch<'a> {
    docker: &'a crate::engine::docker::Docker,
    args: Vec<String>,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self.docker.apply(&self.docker.cmd(self.args.clone()));
    }
}

/// Proves the archive loads: the dumps into a throwaway PostgreSQL or MariaDB/MySQL (same image
/// as the stack's database service) with the row counts compared, each volume into a scratch volume with its
/// file count compared; everything is removed afterwards.
fn deep_check(ctx: &Ctx, verified: &Verified) -> Result<()> {
    let docker = ctx.docker()?;
    if docker.dry_run() {
        ctx.ui.step("--deep skipped: it starts throwaway containers, which --dry-run never does");
        return Ok(());
    }
    for db in &verified.meta().databases {
        match db.engine {
            archive::DbEngine::Postgres => deep_check_dumps(ctx, verified, db)?,
            archive::DbEngine::Mariadb | archive::DbEngine::Mysql => deep_mariadb::check(ctx, verified, db)?,
            archive::DbEngine::Hook => ctx.ui.step(&format!(
                "--deep cannot load the hook dump of service {} (only its xtask.load command can): its \
                 checksum was verified",
                db.service
            )),
        }
    }
    deep_check_volumes(ctx, verified)
}

/// The image of the stack's `service`, for a throwaway server of the same kind.
fn service_image(ctx: &Ctx, service: &str) -> Result<String> {
    let model = ctx.project()?.clone();
    let s = model.services.iter().find(|s| s.name == service);
    s.and_then(|s| s.image.clone())
        .with_context(|| format!("the stack has no service {service} to take the server image from"))
}

/// A throwaway database server for `verify --deep`: the stack's `service` image, no network,
/// the helper labels (a later run removes it if this one is killed), a fresh password in its
/// environment variables `secrets` only (every name the image may read it under), and `env`
/// besides. Removed when dropped.
struct Throwaway<'a> {
    name: String,
    password: String,
    ctx: &'a Ctx,
    _container: Scratch<'a>,
}

impl<'a> Throwaway<'a> {
    fn start(ctx: &'a Ctx, service: &str, secrets: &[&str], env: &[String]) -> Result<Throwaway<'a>> {
        let docker = ctx.docker()?;
        let image = service_image(ctx, service)?;
        let password = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
        let name = format!("xtask-verify-{}-{service}", std::process::id());
        let mut args: Vec<String> = ["run", "-d", "--name", &name, "--network", "none"].map(String::from).to_vec();
        args.extend(crate::engine::docker::helper::labels());
        args.extend(secrets.iter().flat_map(|s| ["-e".to_string(), s.to_string()]));
        args.extend(env.iter().flat_map(|e| ["-e".to_string(), e.clone()]));
        args.push(image.clone());
        ctx.ui.step(&format!("load the dumps of service {service} into a throwaway server ({image})"));
        let cmd = secrets.iter().fold(docker.cmd(args), |c, s| c.secret_env(s, &password));
        docker.change(&cmd).context("start a throwaway database server")?;
        let _container = Scratch { docker, args: vec!["rm".into(), "-f".into(), "-v".into(), name.clone()] };
        Ok(Throwaway { name, password, ctx, _container })
    }

    /// Waits (at most 120 s, a spinner on a terminal) until `ready` says the server takes
    /// connections; a server that stopped fails at once with its last log lines.
    fn wait(&self, ready: impl Fn() -> bool) -> Result<()> {
        let docker = self.ctx.docker()?;
        let progress = self.ctx.ui.waiting(&format!("wait for the throwaway server {} to take connections", self.name));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !ready() {
            let state = docker.query(&docker.cmd(["inspect", "-f", "{{.State.Running}}", &self.name]));
            let stopped = state.as_deref().is_ok_and(|s| s.trim() == "false");
            if stopped || std::time::Instant::now() > deadline {
                let logs = docker.query(&docker.cmd(["logs", "--tail", "15", &self.name])).unwrap_or_default();
                let why = if stopped { "stopped" } else { "did not take connections in 120 s" };
                bail!("the throwaway server {} {why}; its last log lines:\n{}", self.name, logs.trim_end());
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        progress.done("the throwaway server is ready");
        Ok(())
    }
}

/// The dumps loaded into a throwaway PostgreSQL of the stack's image, row counts compared.
fn deep_check_dumps(ctx: &Ctx, verified: &Verified, pg: &archive::DbInfo) -> Result<()> {
    let docker = ctx.docker()?;
    let server = Throwaway::start(ctx, &pg.service, &["POSTGRES_PASSWORD"], &[format!("POSTGRES_USER={}", pg.user)])?;
    let name = &server.name;
    let ready = docker.cmd(["exec", name, "pg_isready", "-h", "127.0.0.1", "-U", &pg.user, "-d", "postgres"]);
    server.wait(|| docker.query(&ready).is_ok())?;
    let os_user = crate::engine::postgres::OS_USER;
    let psql = |db: &str, stop: bool| {
        let dbname = crate::engine::postgres::dbname_arg(db);
        let mut args =
            vec!["exec", "-i", "--user", os_user, name.as_str(), "psql", "-X", "-q", "-U", &pg.user, &dbname];
        if stop {
            args.extend(["-v", "ON_ERROR_STOP=1"]);
        }
        docker.cmd(args)
    };
    // One value from a query.
    let psql_at = |db: &str, sql: &str| {
        let dbname = crate::engine::postgres::dbname_arg(db);
        docker.query(
            &docker.cmd(["exec", "--user", os_user, name, "psql", "-X", "-At", "-U", &pg.user, &dbname, "-c", sql]),
        )
    };
    let dir = std::env::temp_dir();
    // Roles: the cluster's own superuser exists already, so errors here are expected and ignored.
    let globals_entry = pg.globals_entry.as_deref().context("a PostgreSQL dump without its roles entry")?;
    let globals = crate::archive::extract::spool_dump(verified, globals_entry, &dir)?;
    crate::archive::extract::pipe_file(docker, &globals.path, &psql("postgres", false))?;
    for db in &pg.databases {
        let exists = psql_at(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{}'", db.name.replace('\'', "''")),
        )?;
        if exists.trim() != "1" {
            crate::archive::extract::pipe_text(
                docker,
                "CREATE DATABASE :\"d\";",
                &psql("postgres", true).arg_pair("-v", &format!("d={}", db.name)),
            )?;
        }
        let dump = crate::archive::extract::spool_dump(verified, &db.entry, &dir)?;
        crate::archive::extract::pipe_file(docker, &dump.path, &psql(&db.name, true))
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
    Ok(())
}

/// Each volume loaded into a scratch volume, its file count compared.
fn deep_check_volumes(ctx: &Ctx, verified: &Verified) -> Result<()> {
    let docker = ctx.docker()?;
    let (pid, meta) = (std::process::id(), verified.meta());
    for (i, v) in meta.volumes.iter().enumerate() {
        let scratch = format!("xtask-verify-{pid}-{i}");
        docker.apply(&docker.cmd(["volume", "create", "--label", "xtask.helper=1", &scratch]))?;
        let _volume = Scratch { docker, args: vec!["volume".into(), "rm".into(), "-f".into(), scratch.clone()] };
        let files = crate::archive::extract::fill_volume(docker, verified, &v.name, &scratch, &mut |_| {})
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

pub fn prune(ctx: &Ctx, dir: &Path, r: &Retention, dry_run: bool) -> Result<()> {
    let (project, ui) = (ctx.stack.name.as_str(), &ctx.ui);
    // Not while a backup or restore of the project runs (it may be reading an archive).
    let _lock = if dry_run || !dir.exists() { None } else { Some(crate::lock::Lock::acquire(dir, project, "prune")?) };
    let mut archives = scan(dir, project)?;
    // What the reading policy does not trust never takes a retention slot, and is never removed.
    let policy = crate::tasks::trust::Policy::of(ctx)?;
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
                    let _ = std::fs::remove_file(crate::tasks::trust::signature_path(&a.path));
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
            let meta = Metadata { created_at: created.into(), ..Metadata::sample(project, &[]) };
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
        assert_eq!(
            files,
            [
                "full_backup_20260501_000000.tar.gz",
                "full_backup_20260301_000000.tar.gz",
                "full_backup_20260101_000000.tar.gz"
            ]
        );
        assert!(found[0].problem.as_deref().is_some_and(|p| p.starts_with("damaged")), "listed, not fatal");
        assert!(found[1].problem.is_none());
        assert_eq!(found[1].checksums, "unverified");
        record_verification(&found[1].path, true);
        assert_eq!(verification(&found[1].path), "ok");
        assert!(marker_confirmed(&found[1].path), "the bytes match the marker");
        // The same size and mtime, other bytes: the marker still lists, but decides nothing.
        let p = &found[1].path;
        let (mut bytes, mtime) = (std::fs::read(p).unwrap(), std::fs::metadata(p).unwrap().modified().unwrap());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(p, &bytes).unwrap();
        std::fs::File::options().write(true).open(p).unwrap().set_modified(mtime).unwrap();
        assert_eq!(verification(p), "ok");
        assert!(!marker_confirmed(p), "a marker its archive's bytes do not match is ignored");
        bytes[last] ^= 1;
        std::fs::write(p, &bytes).unwrap();
        assert_eq!(latest(&dir, "p", |_| true).unwrap(), found[1].path, "never a damaged file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_in_doubt() {
        let t = |s: &str| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        let now = t("2026-11-27T12:00:00Z");
        let stamp = name_stamp("full_backup_20261127_100000_pre-migration.tar.gz").unwrap();
        assert_eq!(stamp, t("2026-11-27T10:00:00Z"));
        assert_eq!(date_doubt(stamp, "2026-11-27T10:00:01Z", t("2026-11-27T10:20:00Z"), now), None);
        let future = name_stamp("full_backup_20991231_000000.tar.gz").unwrap();
        assert!(date_doubt(future, "2099-12-31T00:00:00Z", future, now).unwrap().contains("future"));
        assert!(date_doubt(stamp, "2099-12-31T00:00:00Z", now, now).unwrap().contains("metadata says"));
        assert!(date_doubt(stamp, "2026-11-27T10:00:00Z", t("2026-01-01T00:00:00Z"), now).is_some());
        assert!(date_doubt(stamp, "yesterday", now, now).unwrap().contains("RFC 3339"));
        assert_eq!(name_stamp("full_backup_2026x127_100000.tar.gz"), None);
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

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
use crate::store::binds::StackBinds;
use crate::store::local::{latest_trusted, marker_confirmed, marker_path, record_verification, scan, ArchiveFile};
use crate::store::retention::{decide, Retention};
use crate::ui::{human_bytes, table};

pub(crate) mod deep_mariadb;

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
    let trusted = src.and_then(|s| crate::store::trust::Policy::of(ctx)?.check_local(&s).map(|_| s));
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
    let stack = StackBinds::of(ctx, dir)?;
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

pub fn prune(ctx: &Ctx, dir: &Path, r: &Retention, dry_run: bool) -> Result<()> {
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

//! The `backup` and `backup-db` tasks. Decide, then do: `plan` turns the stack's model and the
//! options into a `BackupPlan` (plain data: the database to dump, the volumes to copy and why
//! the others are skipped); `execute` carries it out: lock, space check, services started only
//! where needed (and returned to how they were, also on failure), PostgreSQL dumped inside its
//! container, Redis saved, volumes streamed from read-only helper containers into one archive
//! written atomically.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::archive::{
    self, dumpstats::DumpStats, grammar, ArchiveWriter, Metadata, PgDatabase, PgInfo, Skipped, VolumeInfo,
};
use crate::context::Ctx;
use crate::engine::docker::{Docker, DockerCmd};
use crate::engine::postgres;
use crate::engine::services::ServiceGuard;
use crate::lock::Lock;
use crate::model::compose::{Project, Stack};
use crate::model::roles::{self, Priority, Role};
use crate::tasks::volumes;
use crate::ui::{human_bytes, Progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Db,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Db => "db",
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    pub output_dir: PathBuf,
    /// Volumes by name or compose key; empty: by priority.
    pub volumes: Vec<String>,
    pub all: bool,
    pub exclude: Vec<String>,
    /// Databases to dump; empty: every database of the cluster.
    pub databases: Vec<String>,
    pub tag: Option<String>,
    pub stop: bool,
    pub level: u32,
    pub environment: Option<String>,
    /// Back up only what exists now: never start a database on a missing volume (safety backups).
    pub only_existing: bool,
    /// Dump the databases (false: leave them out, e.g. a safety backup of volumes only).
    pub dump_database: bool,
}

impl Options {
    /// A backup of `kind` into `output_dir` chosen by priority: every database, no tag, gzip level 6.
    pub fn new(kind: Kind, output_dir: PathBuf) -> Options {
        Options {
            kind,
            output_dir,
            volumes: Vec::new(),
            all: false,
            exclude: Vec::new(),
            databases: Vec::new(),
            tag: None,
            stop: false,
            level: 6,
            environment: None,
            only_existing: false,
            dump_database: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSource {
    pub service: String,
    pub volume: Option<String>,
    pub user: String,
    /// Passed to the container's environment as PGPASSWORD, never on a command line.
    pub password: Option<String>,
    pub databases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSource {
    pub service: String,
    pub volume: String,
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeChoice {
    pub key: String,
    pub name: String,
    pub role: Role,
    pub priority: Priority,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    /// Services that mount it (stopped around the copy with --stop).
    pub services: Vec<String>,
}

/// The decision, as data: drives `--dry-run`, the summary and the execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlan {
    pub kind: Kind,
    pub project: String,
    pub db: Option<DbSource>,
    pub redis: Option<RedisSource>,
    pub volumes: Vec<VolumeChoice>,
    pub skipped: Vec<(String, String)>,
    pub stop: bool,
}

fn is_postgres(image: Option<&str>) -> bool {
    image.is_some_and(|i| i.to_lowercase().contains("postgres") || i.to_lowercase().contains("postgis"))
}

fn is_redis(image: Option<&str>) -> bool {
    image.is_some_and(|i| ["redis", "valkey", "keydb"].iter().any(|r| i.to_lowercase().contains(r)))
}

/// Chooses what to back up. Pure: no engine access.
pub fn plan(project: &Project, opts: &Options) -> Result<BackupPlan> {
    if let Some(tag) = opts.tag.as_deref().filter(|t| !grammar::is_plain_name(t)) {
        bail!("--tag {tag:?}: use letters, digits, '.', '_' and '-' only, starting with a letter or digit");
    }
    let mut classified = Vec::new();
    for v in &project.volumes {
        classified.push((v, roles::classify(project, v)?));
    }
    let find = |wanted: &str| {
        classified.iter().find(|(v, _)| v.name == wanted || v.key == wanted).map(|(v, _)| v.name.clone()).ok_or_else(
            || anyhow::anyhow!("no volume {wanted:?} in stack {}; `cargo xtask volumes` lists them", project.name),
        )
    };
    let requested: Vec<String> = opts.volumes.iter().map(|w| find(w)).collect::<Result<_>>()?;
    let excluded: Vec<String> = opts.exclude.iter().map(|w| find(w)).collect::<Result<_>>()?;
    let (db, mut skipped) = find_database(project, &classified, &requested, opts);
    // The dumped database's volume is represented by its dump even when the dump is left out.
    let db_volume = db.as_ref().and_then(|d: &DbSource| d.volume.clone());
    let db = db.filter(|_| opts.dump_database);
    if opts.kind == Kind::Db && db.is_none() {
        bail!(
            "stack {} has no PostgreSQL service mounting a volume with role database; backup-db has nothing to dump",
            project.name
        );
    }
    let volumes = if opts.kind == Kind::Full {
        let choice =
            Choice { requested: &requested, excluded: &excluded, db_volume: db_volume.as_deref(), all: opts.all };
        choose_volumes(project, &classified, &choice, &mut skipped)
    } else {
        Vec::new()
    };
    let redis = volumes.iter().find_map(|v| {
        let s = project.mounts_of(&v.key).map(|(s, _)| s).find(|s| is_redis(s.image.as_deref()))?;
        Some(RedisSource {
            service: s.name.clone(),
            volume: v.name.clone(),
            password: s.environment.get("REDIS_PASSWORD").cloned(),
        })
    });
    Ok(BackupPlan { kind: opts.kind, project: project.name.clone(), db, redis, volumes, skipped, stop: opts.stop })
}

type Classified<'a> = [(&'a crate::model::compose::VolumeDecl, roles::Classification)];

/// The database: the first PostgreSQL service mounting a volume with the database role; other
/// database volumes are reported as skipped, with why.
fn find_database(
    project: &Project,
    classified: &Classified,
    requested: &[String],
    opts: &Options,
) -> (Option<DbSource>, Vec<(String, String)>) {
    let mut db: Option<DbSource> = None;
    let mut skipped = Vec::new();
    for (v, _) in classified.iter().filter(|(_, c)| c.role == Role::Database) {
        let pg = project.mounts_of(&v.key).map(|(s, _)| s).find(|s| is_postgres(s.image.as_deref()));
        let why = match (pg, &db) {
            (Some(s), None) => {
                db = Some(DbSource {
                    service: s.name.clone(),
                    volume: Some(v.name.clone()),
                    user: s.environment.get("POSTGRES_USER").cloned().unwrap_or_else(|| "postgres".into()),
                    password: s.environment.get("POSTGRES_PASSWORD").cloned(),
                    databases: opts.databases.clone(),
                });
                continue;
            }
            (Some(s), Some(first)) => format!(
                "database volume of a second PostgreSQL server (service {}): only the first ({}) is dumped; \
                 copy it raw with --volume {} --stop",
                s.name, first.service, v.name
            ),
            (None, _) => {
                "database volume of a server other than PostgreSQL: not dumped; copy it raw with --volume NAME --stop"
                    .to_string()
            }
        };
        if !requested.contains(&v.name) {
            skipped.push((v.name.clone(), why));
        }
    }
    (db, skipped)
}

/// What the user asked of the volumes.
struct Choice<'a> {
    requested: &'a [String],
    excluded: &'a [String],
    db_volume: Option<&'a str>,
    all: bool,
}

/// The volumes a full backup copies, by request or priority; the others go to `skipped`.
fn choose_volumes(
    project: &Project,
    classified: &Classified,
    choice: &Choice,
    skipped: &mut Vec<(String, String)>,
) -> Vec<VolumeChoice> {
    let mut volumes = Vec::new();
    for (v, c) in classified {
        let explicitly = choice.requested.contains(&v.name);
        let reason = if choice.excluded.contains(&v.name) {
            Some("excluded with --exclude".to_string())
        } else if choice.db_volume == Some(v.name.as_str()) && !explicitly {
            Some("represented by the pg_dump of its databases (postgres/ in the archive)".to_string())
        } else if !choice.requested.is_empty() && !explicitly {
            Some("not named with --volume".to_string())
        } else if choice.requested.is_empty()
            && !choice.all
            && !matches!(c.priority, Priority::Critical | Priority::Important)
        {
            Some(format!(
                "priority {}: not backed up by default (--all or --volume {} to include)",
                c.priority.as_str(),
                v.name
            ))
        } else {
            None
        };
        if let Some(r) = reason {
            if !skipped.iter().any(|(n, _)| n == &v.name) {
                skipped.push((v.name.clone(), r));
            }
            continue;
        }
        volumes.push(VolumeChoice {
            key: v.key.clone(),
            name: v.name.clone(),
            role: c.role,
            priority: c.priority,
            driver: v.driver.clone().unwrap_or_else(|| "local".into()),
            labels: v.labels.clone(),
            services: project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect(),
        });
    }
    volumes
}

impl BackupPlan {
    /// The plan in words, for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut out = format!("{} backup of stack {}:\n", self.kind.as_str(), self.project);
        if let Some(db) = &self.db {
            let which = if db.databases.is_empty() { "every database".to_string() } else { db.databases.join(", ") };
            out.push_str(&format!(
                "  - dump PostgreSQL ({which}, and roles) inside service {} as user {}\n",
                db.service, db.user
            ));
        }
        if let Some(r) = &self.redis {
            out.push_str(&format!(
                "  - make Redis in service {} save its data, then copy volume {}\n",
                r.service, r.volume
            ));
        }
        for v in &self.volumes {
            let how = if self.stop && !v.services.is_empty() {
                format!(" (stopping {} meanwhile)", v.services.join(", "))
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  - copy volume {} ({}, {}) read-only{how}\n",
                v.name,
                v.role.as_str(),
                v.priority.as_str()
            ));
        }
        for (name, why) in &self.skipped {
            out.push_str(&format!("  - skip {name}: {why}\n"));
        }
        out
    }
}

/// What a finished backup reports (`--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub path: PathBuf,
    pub kind: Kind,
    pub bytes: u64,
    pub data_bytes: u64,
    pub duration_seconds: f64,
    pub entries: u64,
    pub files: u64,
    pub databases: Vec<String>,
    pub volumes: Vec<String>,
    pub skipped: Vec<Skipped>,
}

/// Makes the backup directory and returns it. Directories this creates are private (0700); an
/// existing directory keeps the mode its owner gave it.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create the backup directory {}", dir.display()))?;
    }
    Ok(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
}

/// The process that wrote a temporary file of ours, from its name: `.…tmp-PID`,
/// `.pgdump-PID-….sql`, `.restore-PID-….sql`.
fn temp_owner(name: &str) -> Option<u32> {
    let digits = |s: &str| s.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok());
    if let Some(rest) =
        name.strip_prefix(".pgdump-").or_else(|| name.strip_prefix(crate::archive::extract::SPOOL_PREFIX))
    {
        return name.ends_with(".sql").then(|| digits(rest)).flatten();
    }
    let (_, pid) = name.rsplit_once(".tmp-")?;
    (name.starts_with('.') && name.contains("_backup_") && pid.chars().all(|c| c.is_ascii_digit()))
        .then(|| digits(pid))
        .flatten()
}

/// Partial archives and dumps left by a run that was killed: removed only when the process that
/// wrote them is gone (another project's backup may be writing into the same directory).
fn remove_stale_temporaries(dir: &Path, ctx: &Ctx) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
            ctx.ui.step(&format!("removed {name}, left by an interrupted run"));
        }
    }
}

/// Free bytes for an unprivileged writer in `dir`.
pub fn free_space(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).context("directory path holds a NUL byte")?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {}", dir.display()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn archive_name(kind: Kind, tag: Option<&str>) -> Result<String> {
    let t = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let tag = tag.map(|t| {
        let clean: String =
            t.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
        format!("_{clean}")
    });
    Ok(format!("{}_backup_{stamp}{}.tar.gz", kind.as_str(), tag.unwrap_or_default()))
}

/// A temporary dump file (0600) that removes itself.
struct TempDump {
    path: PathBuf,
}

impl Drop for TempDump {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn exec(docker: &Docker, stack: &Stack, service: &str, secret: Option<(&str, &str)>, cmd: &[&str]) -> DockerCmd {
    exec_as(docker, stack, service, None, secret, cmd)
}

/// `docker compose exec -T [--user USER] [-e SECRET] SERVICE CMD...`
fn exec_as(
    docker: &Docker,
    stack: &Stack,
    service: &str,
    user: Option<&str>,
    secret: Option<(&str, &str)>,
    cmd: &[&str],
) -> DockerCmd {
    let mut args = vec!["exec", "-T"];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    if let Some((name, _)) = secret {
        args.extend(["-e", name]);
    }
    args.push(service);
    args.extend(cmd);
    let c = docker.compose(stack, args);
    match secret {
        Some((name, value)) => c.secret_env(name, value),
        None => c,
    }
}

fn pg_secret(db: &DbSource) -> Option<(&str, &str)> {
    db.password.as_deref().map(|p| ("PGPASSWORD", p))
}

/// Streams `cmd`'s output into a new temporary file, feeding the dump parser.
fn dump_to_file(docker: &Docker, cmd: &DockerCmd, path: &Path, progress: &Progress) -> Result<(TempDump, DumpStats)> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    let temp = TempDump { path: path.to_path_buf() };
    let mut child = docker.stream(cmd)?;
    let mut stats = DumpStats::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = child.read(&mut buf).context("read the dump")?;
        if n == 0 {
            break;
        }
        stats.feed(&buf[..n]);
        file.write_all(&buf[..n]).with_context(|| format!("write {}", path.display()))?;
        progress.inc(n as u64);
    }
    child.finish()?;
    file.sync_all()?;
    Ok((temp, stats))
}

/// A PostgreSQL client command in the database service, as the `postgres` OS user.
fn pg_cmd(docker: &Docker, stack: &Stack, db: &DbSource, cmd: &[&str]) -> DockerCmd {
    exec_as(docker, stack, &db.service, Some(postgres::OS_USER), pg_secret(db), cmd)
}

fn query_pg(docker: &Docker, stack: &Stack, db: &DbSource, sql: &str) -> Result<String> {
    let dbname = postgres::dbname_arg("template1");
    docker.query(&pg_cmd(docker, stack, db, &["psql", "-X", "-q", "-At", "-U", &db.user, &dbname, "-c", sql]))
}

/// Asks Redis to write a fresh snapshot (an AOF rewrite when append-only is on, else BGSAVE)
/// and waits until it is on disk, so the volume copy that follows is consistent.
fn redis_save(docker: &Docker, stack: &Stack, r: &RedisSource) -> Result<()> {
    let secret = r.password.as_deref().map(|p| ("REDISCLI_AUTH", p));
    let info = || -> Result<BTreeMap<String, String>> {
        let out = docker.query(&exec(docker, stack, &r.service, secret, &["redis-cli", "INFO", "persistence"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    };
    let aof = info()?.get("aof_enabled").map(String::as_str) == Some("1");
    let command = if aof { "BGREWRITEAOF" } else { "BGSAVE" };
    docker.apply(&exec(docker, stack, &r.service, secret, &["redis-cli", command]))?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let i = info()?;
        let busy = ["aof_rewrite_in_progress", "aof_rewrite_scheduled", "rdb_bgsave_in_progress"]
            .iter()
            .any(|k| i.get(*k).map(String::as_str) == Some("1"));
        if !busy {
            let status = if aof { "aof_last_bgrewrite_status" } else { "rdb_last_bgsave_status" };
            if i.get(status).map(String::as_str) != Some("ok") {
                bail!("Redis reported {status}:{} after {command}", i.get(status).cloned().unwrap_or_default());
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Redis did not finish {command} within 5 minutes");
        }
    }
}

/// Decides what a backup with `opts` takes, from the stack's model (read once per context).
pub fn prepare(ctx: &Ctx, opts: &Options) -> Result<BackupPlan> {
    plan(&ctx.model()?.0, opts)
}

/// Takes a backup: decides it and writes the archive. `lock` proves the caller holds the
/// project's lock on `opts.output_dir`; composites (restore's safety backup, `clean-all
/// --backup-first`, `migrate`) take the lock once and pass it on.
pub fn take(ctx: &Ctx, opts: &Options, lock: &Lock) -> Result<Summary> {
    let plan = prepare(ctx, opts)?;
    execute(ctx, &plan, opts, lock)
}

/// What a backup found to copy: the volumes that exist, and the database unless it is left out.
struct Sources<'a> {
    db: Option<&'a DbSource>,
    volumes: Vec<&'a VolumeChoice>,
    skipped: Vec<Skipped>,
    /// Sizes on disk, measured before the copy: the progress bars' totals.
    sizes: BTreeMap<String, u64>,
}

/// Writes the archive `plan` describes into the locked directory.
pub fn execute(ctx: &Ctx, plan: &BackupPlan, opts: &Options, lock: &Lock) -> Result<Summary> {
    let started = Instant::now();
    let docker = ctx.docker()?;
    let dir = prepare_dir(&opts.output_dir)?;
    lock.covers(&dir, &plan.project)?;
    remove_stale_temporaries(&dir, ctx);
    if docker.remove_orphan_helpers()? > 0 {
        ctx.ui.step("removed helper containers left by an interrupted run");
    }
    let mut sources = sources(docker, plan, opts)?;
    // A restore that died may have left a half-done swap in a volume: finish it before copying.
    let names: Vec<&str> = sources.volumes.iter().map(|v| v.name.as_str()).collect();
    crate::tasks::restore::recover_volumes(ctx, &names)?;
    for s in &sources.skipped {
        ctx.ui.step(&format!("skip {}: {}", s.name, s.reason));
    }
    sources.sizes = check_space(docker, &dir, &sources)?;
    let mut guard = ServiceGuard::new(docker, &ctx.stack);
    let result = (|| -> Result<Summary> {
        let redis = plan.redis.as_ref().filter(|r| sources.volumes.iter().any(|v| v.name == r.volume));
        let services = [sources.db.map(|d| d.service.clone()), redis.map(|r| r.service.clone())];
        for svc in services.into_iter().flatten() {
            if guard.ensure_running(&svc, &ctx.ui).with_context(|| format!("start service {svc} for the backup"))? {
                ctx.ui.step(&format!("started {svc} for the backup; it will be stopped again afterwards"));
            }
        }
        let (dumps, pg_info) = match sources.db {
            Some(db) => dump_databases(ctx, db, &dir)?,
            None => (Vec::new(), None),
        };
        if let Some(r) = redis {
            ctx.ui.step(&format!("ask Redis ({}) to save its data", r.service));
            redis_save(docker, &ctx.stack, r).context("make Redis save its data")?;
        }
        if plan.stop {
            stop_users(&mut guard, ctx, &sources)?;
        }
        let written = write_archive(ctx, plan, opts, &dir, (dumps, pg_info.clone()), &sources)?;
        Ok(Summary {
            path: written.0,
            kind: plan.kind,
            bytes: written.1,
            data_bytes: written.2.bytes,
            duration_seconds: started.elapsed().as_secs_f64(),
            entries: written.2.entries + 1,
            files: written.2.files,
            databases: pg_info.map(|p| p.databases.into_iter().map(|d| d.name).collect()).unwrap_or_default(),
            volumes: sources.volumes.iter().map(|v| v.name.clone()).collect(),
            skipped: sources.skipped.clone(),
        })
    })();
    // Services go back to how they were, whether the backup worked or not.
    let restored = guard.restore(&ctx.ui);
    let summary = result?;
    restored?;
    Ok(summary)
}

/// The planned volumes that exist in the engine; with `only_existing`, the database only when
/// its volume exists (a service started on a missing volume would only create an empty one).
fn sources<'a>(docker: &Docker, plan: &'a BackupPlan, opts: &Options) -> Result<Sources<'a>> {
    let existing = volumes::names(docker)?;
    let mut skipped: Vec<Skipped> =
        plan.skipped.iter().map(|(n, r)| Skipped { name: n.clone(), reason: r.clone() }).collect();
    let mut to_copy = Vec::new();
    for v in &plan.volumes {
        if existing.contains(&v.name) {
            to_copy.push(v);
        } else {
            skipped
                .push(Skipped { name: v.name.clone(), reason: "does not exist in the engine (never created)".into() });
        }
    }
    let mut db = plan.db.as_ref();
    if let Some(missing) = db.and_then(|d| d.volume.as_ref()).filter(|v| opts.only_existing && !existing.contains(v)) {
        skipped.push(Skipped { name: missing.clone(), reason: "does not exist: no database to dump".into() });
        db = None;
    }
    Ok(Sources { db, volumes: to_copy, skipped, sizes: BTreeMap::new() })
}

/// Space: the archive can be as large as the data when nothing compresses. Returns the sizes.
fn check_space(docker: &Docker, dir: &Path, sources: &Sources) -> Result<BTreeMap<String, u64>> {
    let names: Vec<&str> =
        sources.volumes.iter().map(|v| v.name.as_str()).chain(sources.db.and_then(|d| d.volume.as_deref())).collect();
    let existing = volumes::names(docker)?;
    let names: Vec<&str> = names.into_iter().filter(|n| existing.iter().any(|e| e == n)).collect();
    let sizes = volumes::sizes(docker, &names)?;
    let needed: u64 = sizes.values().sum();
    let free = free_space(dir)?;
    if free < needed {
        bail!(
            "not enough free space in {}: the data to back up is {} and only {} is free; free some space or pass --output-dir on a larger disk",
            dir.display(),
            human_bytes(needed),
            human_bytes(free)
        );
    }
    Ok(sizes)
}

/// With --stop, the services using the copied volumes stop (and start again later).
fn stop_users(guard: &mut ServiceGuard, ctx: &Ctx, sources: &Sources) -> Result<()> {
    let db_service = sources.db.map(|d| d.service.as_str());
    let mut svcs: Vec<String> = sources.volumes.iter().flat_map(|v| v.services.clone()).collect();
    svcs.sort();
    svcs.dedup();
    svcs.retain(|s| Some(s.as_str()) != db_service);
    guard.stop_for_copy(&svcs, &ctx.ui)
}

/// Dumps taken before the archive is written, so the metadata (first entry) can record row counts.
type Dumps = (Vec<(String, TempDump)>, Option<PgInfo>);

/// PostgreSQL: roles and every database, dumped to private temporary files.
fn dump_databases(ctx: &Ctx, db: &DbSource, dir: &Path) -> Result<Dumps> {
    let (docker, stack) = (ctx.docker()?, &ctx.stack);
    let version = query_pg(docker, stack, db, "SHOW server_version").context("ask PostgreSQL for its version")?;
    let databases = if db.databases.is_empty() {
        let sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";
        query_pg(docker, stack, db, sql)?.lines().map(str::to_string).collect()
    } else {
        db.databases.clone()
    };
    let mut info = PgInfo {
        service: db.service.clone(),
        volume: db.volume.clone(),
        server_version: version.trim().to_string(),
        user: db.user.clone(),
        globals_entry: "postgres/globals.sql".into(),
        databases: Vec::new(),
    };
    let progress = ctx.ui.progress("dump roles (pg_dumpall --globals-only)");
    let path = dir.join(format!(".pgdump-{}-globals.sql", std::process::id()));
    let cmd = pg_cmd(docker, stack, db, &["pg_dumpall", "-U", &db.user, "--globals-only"]);
    let (file, stats) = dump_to_file(docker, &cmd, &path, &progress).context("dump the roles")?;
    progress.finish(&format!("roles: {}", human_bytes(stats.bytes)));
    if stats.bytes == 0 {
        bail!("pg_dumpall --globals-only printed nothing: the backup is not valid");
    }
    let mut dumps = vec![(info.globals_entry.clone(), file)];
    for (i, name) in databases.iter().enumerate() {
        let (entry, file, tables) = dump_database(ctx, db, dir, i, name)?;
        info.databases.push(PgDatabase { name: name.clone(), entry: entry.clone(), tables });
        dumps.push((entry, file));
    }
    Ok((dumps, Some(info)))
}

/// One database's `pg_dump`, checked complete; its entry name, file and row counts.
fn dump_database(
    ctx: &Ctx,
    db: &DbSource,
    dir: &Path,
    i: usize,
    name: &str,
) -> Result<(String, TempDump, BTreeMap<String, u64>)> {
    if !grammar::is_db_name(name) {
        bail!(
            "database {name:?} has a name outside [A-Za-z0-9_.-] (at most 63 bytes), which archives \
             do not hold (docs/archive-format.md); rename it, or leave it out with --database NAME \
             for each database to keep"
        );
    }
    let docker = ctx.docker()?;
    let progress = ctx.ui.progress(&format!("dump database {name}"));
    let path = dir.join(format!(".pgdump-{}-{i}.sql", std::process::id()));
    let dbname = postgres::dbname_arg(name);
    let args = ["pg_dump", "-U", &db.user, "--no-password", "--quote-all-identifiers", &dbname];
    let cmd = pg_cmd(docker, &ctx.stack, db, &args);
    let (file, stats) =
        dump_to_file(docker, &cmd, &path, &progress).with_context(|| format!("dump database {name}"))?;
    if stats.bytes == 0 || !stats.complete {
        bail!("the dump of database {name} is empty or lacks pg_dump's completion trailer: the backup failed");
    }
    progress.finish(&format!("database {name}: {} tables, {}", stats.tables.len(), human_bytes(stats.bytes)));
    Ok((format!("postgres/{name}.sql"), file, stats.tables))
}

/// The archive itself: metadata, dumps, then each volume streamed from a read-only helper.
/// Returns its path, size and what it holds.
fn write_archive(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    dir: &Path,
    (dumps, pg_info): Dumps,
    sources: &Sources,
) -> Result<(PathBuf, u64, archive::StreamStats)> {
    let docker = ctx.docker()?;
    let name = archive_name(plan.kind, opts.tag.as_deref())?;
    let mut final_path = dir.join(&name);
    let mut n = 1;
    while final_path.exists() {
        final_path = dir.join(name.replace(".tar.gz", &format!("-{n}.tar.gz")));
        n += 1;
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut writer = ArchiveWriter::create(&final_path, opts.level, threads)?;
    let config = ctx.model()?.1.clone().unwrap_or_default();
    let meta = metadata(ctx, plan, opts, &config, pg_info, sources)?;
    // What verify and restore will demand of the archive, demanded of it before it is written.
    grammar::check_metadata(&meta)
        .context("this backup cannot be archived as it is (rename what the message names)")?;
    archive::write_metadata(&mut writer, &meta)?;
    for (entry, file) in &dumps {
        let f = File::open(&file.path)?;
        let size = f.metadata()?.len();
        writer.add_file(entry, size, f).with_context(|| format!("add {entry}"))?;
    }
    drop(dumps);
    for v in &sources.volumes {
        let total = sources.sizes.get(&v.name).copied().unwrap_or(0);
        let progress = ctx.ui.progress_to(&format!("copy volume {}", v.name), total);
        let mut child = docker.volume_tar(&v.name).with_context(|| format!("read volume {}", v.name))?;
        let stats = writer
            .add_volume_tar(&v.name, &mut child, &mut |n| progress.inc(n))
            .with_context(|| format!("back up volume {}", v.name))?;
        child.finish().with_context(|| format!("back up volume {}", v.name))?;
        progress.finish(&format!("volume {}: {} files, {}", v.name, stats.files, human_bytes(stats.bytes)));
    }
    let stats = writer.stats;
    let bytes = writer.commit()?;
    Ok((final_path, bytes, stats))
}

fn metadata(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    config_json: &str,
    postgres: Option<PgInfo>,
    sources: &Sources,
) -> Result<Metadata> {
    let (volumes, skipped, sizes) = (&sources.volumes, &sources.skipped, &sources.sizes);
    let mut entries =
        vec![archive::EntryInfo { path: archive::METADATA.into(), what: "this description of the archive".into() }];
    if let Some(pg) = &postgres {
        entries.push(archive::EntryInfo {
            path: pg.globals_entry.clone(),
            what: "PostgreSQL roles and tablespaces (pg_dumpall --globals-only)".into(),
        });
        for d in &pg.databases {
            entries.push(archive::EntryInfo {
                path: d.entry.clone(),
                what: format!("plain SQL pg_dump of database {}", d.name),
            });
        }
    }
    let redis_volume = plan.redis.as_ref().map(|r| r.volume.as_str());
    let infos: Vec<VolumeInfo> = volumes
        .iter()
        .map(|v| {
            entries.push(archive::EntryInfo {
                path: archive::volume_prefix(&v.name),
                what: format!("the files of volume {} (role {})", v.name, v.role.as_str()),
            });
            let consistency = if Some(v.name.as_str()) == redis_volume {
                "redis-save"
            } else if plan.stop {
                "stopped"
            } else {
                "live"
            };
            VolumeInfo {
                key: v.key.clone(),
                name: v.name.clone(),
                role: v.role.as_str().into(),
                priority: v.priority.as_str().into(),
                driver: v.driver.clone(),
                labels: v.labels.clone(),
                entry: archive::volume_prefix(&v.name),
                consistency: consistency.into(),
                size_bytes: sizes.get(&v.name).copied(),
            }
        })
        .collect();
    entries.push(archive::EntryInfo {
        path: archive::CHECKSUMS.into(),
        what: "SHA-256 of every file (sha256sum -c)".into(),
    });
    Ok(Metadata {
        format: archive::FORMAT.into(),
        format_version: archive::FORMAT_VERSION,
        kind: plan.kind.as_str().into(),
        project: plan.project.clone(),
        compose_files: ctx.stack.files.iter().map(|f| f.display().to_string()).collect(),
        model_sha256: archive::hex(&Sha256::digest(config_json.as_bytes())),
        environment: opts.environment.clone(),
        created_at: time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        tag: opts.tag.clone(),
        entries,
        postgres,
        volumes: infos,
        skipped: skipped.to_vec(),
    })
}

#[cfg(test)]
mod tests;

//! The `backup` and `backup-db` tasks. Decide, then do: `plan` turns the stack's model and the
//! options into a `BackupPlan` (plain data: the database services to dump, the volumes to copy
//! and why the others are skipped, loudly when they hold data nothing protects); `execute`
//! carries it out: lock, space check, services started only where needed (and returned to how
//! they were, also on failure), every database dumped inside its container ([`dump`]), Redis
//! saved, volumes streamed from read-only helper containers into one archive written atomically.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::archive::{self, grammar, ArchiveWriter, DbInfo, Metadata, Skipped, VolumeInfo};
use crate::context::Ctx;
use crate::engine::db::{self, Detected, Login};
use crate::engine::docker::{Docker, DockerCmd};
use crate::engine::services::ServiceGuard;
use crate::lock::Lock;
use crate::model::binds::Bind;
use crate::model::compose::{MountKind, Project, Stack};
use crate::model::offsite::Encryption;
use crate::model::roles::{self, Priority, Role};
use crate::ui::human_bytes;

mod dump;

use crate::store::local::{archive_name, remove_stale_temporaries};
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
    pub level: u32,
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
            services: Vec::new(),
            tag: None,
            stop: false,
            no_stop: false,
            level: 6,
            environment: None,
            only_existing: false,
            dump_database: true,
            no_encrypt: false,
            push: None,
            keep_local: true,
        }
    }
}

/// A database service to dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSource {
    /// Engine, user and password (reaching the container by its environment, never a command line).
    pub login: Login,
    /// The database volume its dump stands for (none when its data is a bind mount or unmounted).
    pub volume: Option<String>,
    /// Databases to dump; empty: all.
    pub databases: Vec<String>,
}

/// A Redis (or Valkey, KeyDB…) service that saves before its data is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSource {
    pub service: String,
    /// The volumes or binds (archive names) of its data that this backup copies.
    pub volumes: Vec<String>,
    pub auth: db::RedisAuth,
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
    /// A bind mount's host path (then `name` is `binds/<id>` and `key` the path).
    pub bind: Option<String>,
    /// A bind's mounts: (service, target), recorded so a restore finds the bind by them.
    pub bind_mounts: Vec<(String, String)>,
    /// Services stopped while it is copied: a database volume whose engine the tool cannot dump
    /// is copied with its server stopped (crash-consistent by construction).
    pub stop_for_copy: Vec<String>,
}

impl VolumeChoice {
    /// What the engine reads: the volume's name, or the bind's host path.
    pub fn source(&self) -> &str {
        self.bind.as_deref().unwrap_or(&self.name)
    }
}

/// The decision, as data: drives `--dry-run`, the summary and the execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlan {
    pub kind: Kind,
    pub project: String,
    pub dbs: Vec<DbSource>,
    /// Every Redis service whose data this backup copies, saved first.
    pub redis: Vec<RedisSource>,
    pub volumes: Vec<VolumeChoice>,
    pub skipped: Vec<(String, String)>,
    pub stop: bool,
    pub seal: Option<Encryption>,
    pub push: Option<String>,
    /// Keep the local archive after a complete upload (always, without a push).
    pub keep_local: bool,
}

/// Chooses what to back up. Pure: no engine access.
pub fn plan(project: &Project, binds: &[Bind], opts: &Options) -> Result<BackupPlan> {
    if let Some(tag) = opts.tag.as_deref().filter(|t| !grammar::is_plain_name(t)) {
        bail!("--tag {tag:?}: use letters, digits, '.', '_' and '-' only, starting with a letter or digit");
    }
    let mut classified = Vec::new();
    for v in &project.volumes {
        classified.push((v, roles::classify(project, v)?));
    }
    let find = |wanted: &str| {
        let volume = classified.iter().find(|(v, _)| v.name == wanted || v.key == wanted).map(|(v, _)| v.name.clone());
        volume.or_else(|| bind_named(binds, wanted).map(|b| b.host_path.clone())).ok_or_else(|| {
            anyhow::anyhow!("no volume or bind {wanted:?} in stack {}; `cargo xtask volumes` lists them", project.name)
        })
    };
    let requested: Vec<String> = opts.volumes.iter().map(|w| find(w)).collect::<Result<_>>()?;
    let excluded: Vec<String> = opts.exclude.iter().map(|w| find(w)).collect::<Result<_>>()?;
    let Databases { mut dbs, mut skipped, undumped } = find_databases(project, &classified, &requested, opts)?;
    // A dumped database's volume is represented by its dump even when the dump is left out.
    let db_volumes: Vec<String> = dbs.iter().filter_map(|d| d.volume.clone()).collect();
    if !opts.dump_database {
        dbs.clear();
    }
    if opts.kind == Kind::Db && dbs.is_empty() {
        bail!(
            "stack {} has no database service to dump (PostgreSQL, MariaDB/MySQL, or a service labelled \
             xtask.dump); backup-db has nothing to do",
            project.name
        );
    }
    let volumes = if opts.kind == Kind::Full {
        let choice = Choice { requested: &requested, excluded: &excluded, db_volumes: &db_volumes, all: opts.all };
        let mut volumes = choose_volumes(project, &classified, &choice, &mut skipped);
        for v in volumes.iter_mut() {
            if let Some((_, users)) = undumped.iter().find(|(name, _)| *name == v.name) {
                v.stop_for_copy = users.clone();
            }
        }
        let db_services: Vec<&str> = dbs.iter().map(|d| d.login.service.as_str()).collect();
        volumes.extend(choose_binds(binds, &choice, &db_services, &mut skipped));
        skipped.extend(ephemeral(project));
        volumes
    } else {
        Vec::new()
    };
    let redis = redis_sources(project, &volumes);
    if opts.kind == Kind::Full {
        skipped.extend(memory_only_redis(project));
    }
    Ok(BackupPlan {
        kind: opts.kind,
        project: project.name.clone(),
        dbs,
        redis,
        volumes,
        skipped,
        stop: opts.stop,
        seal: None,
        push: opts.push.clone(),
        keep_local: opts.keep_local || opts.push.is_none(),
    })
}

/// Every Redis service that mounts one of `volumes` (a volume or a bind), with its login.
fn redis_sources(project: &Project, volumes: &[VolumeChoice]) -> Vec<RedisSource> {
    let mut out: Vec<RedisSource> = Vec::new();
    for v in volumes {
        for s in project.services.iter().filter(|s| v.services.contains(&s.name)) {
            if db::detect(s).ok() != Some(Detected::Redis) {
                continue;
            }
            match out.iter_mut().find(|r| r.service == s.name) {
                Some(r) => r.volumes.push(v.name.clone()),
                None => out.push(RedisSource {
                    service: s.name.clone(),
                    volumes: vec![v.name.clone()],
                    auth: db::redis_auth(s),
                }),
            }
        }
    }
    out
}

/// Redis services with no volume or bind for their data: it lives only in memory (or in an
/// anonymous volume gone with the container), so no backup can hold it. Named, never dropped:
/// (name, reason).
fn memory_only_redis(project: &Project) -> Vec<(String, String)> {
    let kept = |m: &crate::model::compose::Mount| {
        matches!(m.kind, crate::model::compose::MountKind::Volume | crate::model::compose::MountKind::Bind)
            && m.source.is_some()
    };
    project
        .services
        .iter()
        .filter(|s| db::detect(s).ok() == Some(Detected::Redis) && !s.mounts.iter().any(kept))
        .map(|s| {
            let why = format!(
                "{UNPROTECTED}: Redis service {} keeps its data in no volume or bind mount (only in memory or an \
                 anonymous volume); give its data directory a named volume to back it up",
                s.name
            );
            (s.name.clone(), why)
        })
        .collect()
}

type Classified<'a> = [(&'a crate::model::compose::VolumeDecl, roles::Classification)];

/// (name, why) of what a backup leaves out.
type Skips = Vec<(String, String)>;

/// Every database service the tool can dump (by its engine, `--service` narrowing them), with
/// the database volume each stands for. Database volumes that no dumped service represents are
/// copied with their services stopped (with `--no-stop`: reported NOT PROTECTED; asked for by
/// name: copied raw, as asked).
fn find_databases(
    project: &Project,
    classified: &Classified,
    requested: &[String],
    opts: &Options,
) -> Result<Databases> {
    if let Some(s) = opts.services.iter().find(|s| !project.services.iter().any(|p| &p.name == *s)) {
        bail!("--service {s}: stack {} has no such service", project.name);
    }
    let mut dbs = Vec::new();
    for s in &project.services {
        let Detected::Dump(engine) = db::detect(s)? else { continue };
        if !opts.services.is_empty() && !opts.services.contains(&s.name) {
            continue;
        }
        let volume = s.mounts.iter().filter_map(|m| m.source.as_deref()).find_map(|key| {
            classified.iter().find(|(v, c)| v.key == key && c.role == Role::Database).map(|(v, _)| v.name.clone())
        });
        dbs.push(DbSource { login: db::login(s, engine)?, volume, databases: opts.databases.clone() });
    }
    if let Some(s) = opts.services.iter().find(|s| !dbs.iter().any(|d| &d.login.service == *s)) {
        bail!("--service {s}: not a database service the tool can dump (label it xtask.engine or xtask.dump)");
    }
    let mut skipped = Vec::new();
    let mut undumped = Vec::new();
    for (v, _) in classified.iter().filter(|(_, c)| c.role == Role::Database) {
        if dbs.iter().any(|d| d.volume.as_deref() == Some(v.name.as_str())) || requested.contains(&v.name) {
            continue;
        }
        let users: Vec<String> = project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect();
        let dumped_elsewhere = users.iter().any(|u| !opts.services.is_empty() && !opts.services.iter().any(|s| s == u));
        if dumped_elsewhere {
            skipped.push((v.name.clone(), "database volume of a service not selected with --service".to_string()));
        } else if opts.no_stop {
            let why = format!(
                "{UNPROTECTED}: database volume of service {} whose engine the tool cannot dump, and --no-stop \
                 forbids stopping it for a copy; label the service xtask.dump/xtask.load (docs/backup.md)",
                users.join(", ")
            );
            skipped.push((v.name.clone(), why));
        } else {
            undumped.push((v.name.clone(), users));
        }
    }
    Ok(Databases { dbs, skipped, undumped })
}

/// What [`find_databases`] found: the services to dump, what it leaves out with why, and the
/// database volumes no engine can dump with the services to stop while each is copied.
struct Databases {
    dbs: Vec<DbSource>,
    skipped: Skips,
    undumped: Vec<(String, Vec<String>)>,
}

/// How a skip reason starts when data is left without any copy: said loudly, listed in `--json`.
pub const UNPROTECTED: &str = "NOT PROTECTED";

/// What the user asked of the volumes.
struct Choice<'a> {
    requested: &'a [String],
    excluded: &'a [String],
    db_volumes: &'a [String],
    all: bool,
}

impl Choice<'_> {
    /// Why `name` (a volume or a bind's path) is left out by `--volume` or by its priority, if it is.
    fn unwanted(&self, name: &str, priority: Priority) -> Option<String> {
        let explicitly = self.requested.iter().any(|r| r == name);
        if !self.requested.is_empty() && !explicitly {
            Some("not named with --volume".to_string())
        } else if self.requested.is_empty()
            && !self.all
            && !matches!(priority, Priority::Critical | Priority::Important)
        {
            Some(format!(
                "priority {}: not backed up by default (--all or --volume {name} to include)",
                priority.as_str()
            ))
        } else {
            None
        }
    }
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
        let unprotected = skipped.iter().any(|(n, r)| n == &v.name && r.starts_with(UNPROTECTED));
        let reason = if unprotected {
            continue;
        } else if choice.excluded.contains(&v.name) {
            Some("excluded with --exclude".to_string())
        } else if choice.db_volumes.contains(&v.name) && !explicitly {
            Some("represented by the dump of its databases (databases/ in the archive)".to_string())
        } else {
            choice.unwanted(&v.name, c.priority)
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
            bind: None,
            bind_mounts: Vec::new(),
            stop_for_copy: Vec::new(),
        });
    }
    volumes
}

/// The bind `wanted` names: its host path, or a path relative to the current directory.
fn bind_named<'a>(binds: &'a [Bind], wanted: &str) -> Option<&'a Bind> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let path = crate::model::binds::normalize(&cwd.join(wanted));
    binds.iter().find(|b| b.host_path == wanted || b.host_path == path)
}

/// The binds a full backup copies (critical and important data directories, or as asked),
/// each under `binds/<id>/`; the others go to `skipped` with why. A database service's bind
/// is represented by its dump.
fn choose_binds(binds: &[Bind], choice: &Choice, db_services: &[&str], skipped: &mut Skips) -> Vec<VolumeChoice> {
    let mut out: Vec<VolumeChoice> = Vec::new();
    for b in binds {
        let explicitly = choice.requested.contains(&b.host_path);
        let dumped = b.uses.iter().find(|u| db_services.contains(&u.service.as_str()));
        let reason = if let Some(never) = &b.never {
            Some(format!("never copied: {never}"))
        } else if choice.excluded.contains(&b.host_path) {
            Some("excluded with --exclude".to_string())
        } else if let Some(u) = dumped.filter(|_| !explicitly) {
            Some(format!("represented by the dump of service {} (databases/ in the archive)", u.service))
        } else {
            choice.unwanted(&b.host_path, b.priority)
        };
        if let Some(r) = reason {
            skipped.push((b.host_path.clone(), r));
            continue;
        }
        let mut id = bind_id(&b.host_path);
        let base = id.clone();
        let mut n = 2;
        while out.iter().any(|v| v.name == archive::bind_name(&id)) {
            id = format!("{base}-{n}");
            n += 1;
        }
        out.push(VolumeChoice {
            key: b.host_path.clone(),
            name: archive::bind_name(&id),
            role: b.role,
            priority: b.priority,
            driver: "bind".into(),
            labels: BTreeMap::new(),
            services: b.uses.iter().map(|u| u.service.clone()).collect(),
            bind: Some(b.host_path.clone()),
            bind_mounts: b.uses.iter().map(|u| (u.service.clone(), u.target.clone())).collect(),
            stop_for_copy: Vec::new(),
        });
    }
    out
}

/// A plain name for a bind's folder in the archive, from its last path components.
fn bind_id(host_path: &str) -> String {
    let tail: Vec<&str> = host_path.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect();
    let id: String = tail
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '-' })
        .collect();
    let id = id.trim_start_matches(['-', '.', '_']).to_string();
    if id.is_empty() {
        "bind".into()
    } else {
        id
    }
}

/// tmpfs and anonymous volumes: gone with their container, never copied; said so.
fn ephemeral(project: &Project) -> Skips {
    let mut out = Vec::new();
    for s in &project.services {
        for m in s.mounts.iter().filter(|m| matches!(m.kind, MountKind::Tmpfs | MountKind::Anonymous)) {
            let kind = if m.kind == MountKind::Tmpfs { "tmpfs" } else { "anonymous volume" };
            out.push((format!("{}:{}", s.name, m.target), format!("never copied: {kind}, ephemeral")));
        }
    }
    out
}

impl BackupPlan {
    /// The plan in words, for `--dry-run`.
    pub fn describe(&self) -> String {
        let mut out = format!("{} backup of stack {}:\n", self.kind.as_str(), self.project);
        for db in &self.dbs {
            let which = if db.databases.is_empty() { "every database".to_string() } else { db.databases.join(", ") };
            let l = &db.login;
            out.push_str(&match l.engine {
                archive::DbEngine::Hook => format!("  - dump service {} with its xtask.dump command\n", l.service),
                e => format!(
                    "  - dump {} ({which}, with its {}) inside service {} as user {}\n",
                    e.as_str(),
                    if e == archive::DbEngine::Postgres { "roles" } else { "users and grants" },
                    l.service,
                    if l.user_file.is_some() { "from POSTGRES_USER_FILE" } else { &l.user }
                ),
            });
        }
        for r in &self.redis {
            out.push_str(&format!(
                "  - make Redis in service {} save its data (login: {}), then copy {}\n",
                r.service,
                r.auth.source(),
                r.volumes.join(", ")
            ));
        }
        for v in &self.volumes {
            let how = if !v.stop_for_copy.is_empty() {
                format!(
                    " (stopping {} meanwhile: a database the tool cannot dump; --no-stop leaves it NOT PROTECTED)",
                    v.stop_for_copy.join(", ")
                )
            } else if self.stop && !v.services.is_empty() {
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
        if let Some(seal) = &self.seal {
            let n = seal.recipients.len();
            let file = seal.recipients_file.as_ref().map(|f| format!(" and those in {}", f.display()));
            out.push_str(&format!(
                "  - encrypt the archive with age to {n} recipient(s){} while it is written (….tar.gz.age)\n",
                file.unwrap_or_default()
            ));
        }
        if let Some(r) = &self.push {
            out.push_str(&format!("  - upload it to remote {r} while it is written, then its .sha256\n"));
            if !self.keep_local {
                out.push_str("  - then remove the local copy (--no-keep-local)\n");
            }
        }
        out
    }
}

/// `--no-keep-local`: the archive is complete in the remote (its upload, or the push that
/// replaced it, succeeded, else the backup failed before this): the local file and its
/// signature go.
fn remove_local_copy(ctx: &Ctx, path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("remove {} after its upload", path.display()))?;
    let _ = std::fs::remove_file(crate::store::trust::signature_path(path));
    ctx.ui.step(&format!("removed the local copy {} (--no-keep-local)", path.display()));
    Ok(())
}

/// What a finished backup reports (`--json`).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub path: PathBuf,
    pub kind: Kind,
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

/// `docker compose exec -T [-e SECRET] SERVICE CMD...`, the secret's value in docker's
/// environment only.
fn exec(docker: &Docker, stack: &Stack, service: &str, secret: Option<(&str, &str)>, cmd: &[&str]) -> DockerCmd {
    let mut args = vec!["exec", "-T"];
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

/// Makes every Redis whose data is copied save it first; an error names the service, where its
/// password came from and the label to set.
fn save_redis(ctx: &Ctx, redis: &[&RedisSource]) -> Result<()> {
    for r in redis {
        ctx.ui.step(&format!("ask Redis ({}) to save its data", r.service));
        redis_save(ctx.docker()?, &ctx.stack, r).with_context(|| {
            format!(
                "make Redis in service {} save its data (login: {}); if it needs a password from another \
                 variable, name that variable with the service label {}",
                r.service,
                r.auth.source(),
                db::REDIS_PASSWORD_LABEL
            )
        })?;
    }
    Ok(())
}

/// `redis-cli ARGS` in the Redis service, logged in as its compose file says: the password in
/// `REDISCLI_AUTH` (docker's environment, never argv), or read there from its `_FILE`.
fn redis_cli(docker: &Docker, stack: &Stack, r: &RedisSource, args: &[&str]) -> DockerCmd {
    match &r.auth {
        db::RedisAuth::None => exec(docker, stack, &r.service, None, &[&["redis-cli"], args].concat()),
        db::RedisAuth::Value { value, .. } => {
            exec(docker, stack, &r.service, Some(("REDISCLI_AUTH", value)), &[&["redis-cli"], args].concat())
        }
        db::RedisAuth::File { path, .. } => {
            let script = "REDISCLI_AUTH=\"$(cat \"$0\")\" && export REDISCLI_AUTH && exec redis-cli \"$@\"";
            exec(docker, stack, &r.service, None, &[&["sh", "-c", script, path.as_str()], args].concat())
        }
        db::RedisAuth::Config { path } => {
            // The last `requirepass` line, its value unquoted; none: no password.
            let script = "p=$(sed -n 's/^[[:space:]]*requirepass[[:space:]][[:space:]]*//p' \"$0\" | tail -n 1 \
                          | sed 's/^\"\\(.*\\)\"$/\\1/'); if [ -n \"$p\" ]; then REDISCLI_AUTH=\"$p\"; \
                          export REDISCLI_AUTH; fi; exec redis-cli \"$@\"";
            exec(docker, stack, &r.service, None, &[&["sh", "-c", script, path.as_str()], args].concat())
        }
    }
}

/// Asks Redis to write a fresh snapshot (an AOF rewrite when append-only is on, else BGSAVE)
/// and waits until it is on disk, so the volume copy that follows is consistent.
fn redis_save(docker: &Docker, stack: &Stack, r: &RedisSource) -> Result<()> {
    let cli = |args: &[&str]| redis_cli(docker, stack, r, args);
    let info = || -> Result<BTreeMap<String, String>> {
        let out = docker.query(&cli(&["INFO", "persistence"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    };
    let aof = info()?.get("aof_enabled").map(String::as_str) == Some("1");
    let command = if aof { "BGREWRITEAOF" } else { "BGSAVE" };
    docker.apply(&cli(&[command]))?;
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
/// [`plan`] for this stack, encrypted as `x-xtask.encrypt` says unless `--no-encrypt`.
pub fn prepare(ctx: &Ctx, opts: &Options) -> Result<BackupPlan> {
    let mut plan = plan(&ctx.model()?.0, &ctx.binds()?, opts)?;
    plan.seal = crate::store::trust::seal(ctx, opts.no_encrypt)?;
    Ok(plan)
}

/// Takes a backup: decides it and writes the archive. `lock` proves the caller holds the
/// project's lock on `opts.output_dir`; composites (restore's safety backup, `clean-all
/// --backup-first`, `migrate`) take the lock once and pass it on.
pub fn take(ctx: &Ctx, opts: &Options, lock: &Lock) -> Result<Summary> {
    let plan = prepare(ctx, opts)?;
    execute(ctx, &plan, opts, lock)
}

/// What a backup found to copy: the volumes that exist, and the databases unless left out.
struct Sources<'a> {
    dbs: Vec<&'a DbSource>,
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
    let names: Vec<&str> = sources.volumes.iter().map(|v| v.source()).collect();
    crate::engine::staging::recover(ctx.docker()?, &ctx.ui, &names)?;
    for s in &sources.skipped {
        ctx.ui.step(&format!("skip {}: {}", s.name, s.reason));
    }
    sources.sizes = check_space(docker, &dir, &sources)?;
    let mut guard = ServiceGuard::new(docker, &ctx.stack);
    let result = (|| -> Result<Summary> {
        let redis: Vec<&RedisSource> =
            plan.redis.iter().filter(|r| sources.volumes.iter().any(|v| r.volumes.contains(&v.name))).collect();
        let services =
            sources.dbs.iter().map(|d| d.login.service.clone()).chain(redis.iter().map(|r| r.service.clone()));
        for svc in services {
            if guard.ensure_running(&svc, &ctx.ui).with_context(|| format!("start service {svc} for the backup"))? {
                ctx.ui.step(&format!("started {svc} for the backup; it will be stopped again afterwards"));
            }
        }
        let dumps = sources.dbs.iter().map(|d| dump::dump_service(ctx, d, &dir)).collect::<Result<Vec<_>>>()?;
        check_requested_databases(opts, &dumps)?;
        save_redis(ctx, &redis)?;
        if plan.stop {
            stop_users(&mut guard, ctx, &sources)?;
        }
        // Databases no engine can dump: their servers stop while the archive takes their volume.
        let mut servers: Vec<String> = sources.volumes.iter().flat_map(|v| v.stop_for_copy.clone()).collect();
        servers.sort();
        servers.dedup();
        guard.stop_for_copy(&servers, &ctx.ui)?;
        let databases = dumped_names(&dumps);
        let written = write_archive(ctx, plan, opts, &dir, dumps, &sources)?;
        if !plan.keep_local {
            remove_local_copy(ctx, &written.0)?;
        }
        Ok(Summary {
            path: written.0,
            kind: plan.kind,
            bytes: written.1,
            sha256: archive::hex(&written.3),
            data_bytes: written.2.bytes,
            duration_seconds: started.elapsed().as_secs_f64(),
            entries: written.2.entries + 1,
            files: written.2.files,
            databases,
            volumes: sources.volumes.iter().map(|v| v.name.clone()).collect(),
            unprotected: unprotected(&sources.skipped),
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
    let existing = docker.volume_names()?;
    let mut skipped: Vec<Skipped> =
        plan.skipped.iter().map(|(n, r)| Skipped { name: n.clone(), reason: r.clone() }).collect();
    let mut to_copy = Vec::new();
    for v in &plan.volumes {
        let present = match v.bind.as_deref() {
            Some(path) => docker.host_dir_exists(path)?,
            None => existing.contains(&v.name),
        };
        if present {
            to_copy.push(v);
        } else {
            skipped.push(Skipped { name: v.source().into(), reason: "does not exist (never created)".into() });
        }
    }
    let mut dbs = Vec::new();
    for d in &plan.dbs {
        match d.volume.as_ref().filter(|v| opts.only_existing && !existing.contains(v)) {
            Some(missing) => skipped.push(Skipped {
                name: missing.clone(),
                reason: format!("does not exist: no database of service {} to dump", d.login.service),
            }),
            None => dbs.push(d),
        }
    }
    Ok(Sources { dbs, volumes: to_copy, skipped, sizes: BTreeMap::new() })
}

/// Space: the archive can be as large as the data when nothing compresses. Returns the sizes.
fn check_space(docker: &Docker, dir: &Path, sources: &Sources) -> Result<BTreeMap<String, u64>> {
    let names: Vec<&str> = sources
        .volumes
        .iter()
        .map(|v| v.source())
        .chain(sources.dbs.iter().filter_map(|d| d.volume.as_deref()))
        .collect();
    let existing = docker.volume_names()?;
    // Binds were checked by `sources`: they are there.
    let names: Vec<&str> =
        names.into_iter().filter(|n| n.starts_with('/') || existing.iter().any(|e| e == n)).collect();
    let sizes = docker.volume_sizes(&names)?;
    let needed: u64 = sizes.values().sum();
    let free = crate::files::free_space(dir)?;
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
    let mut svcs: Vec<String> = sources.volumes.iter().flat_map(|v| v.services.clone()).collect();
    svcs.sort();
    svcs.dedup();
    svcs.retain(|s| !sources.dbs.iter().any(|d| &d.login.service == s));
    guard.stop_for_copy(&svcs, &ctx.ui)
}

/// The archive itself: metadata, dumps, then each volume streamed from a read-only helper.
/// Returns its path, size and what it holds.
fn write_archive(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    dir: &Path,
    dumps: Vec<dump::Dumped>,
    sources: &Sources,
) -> Result<(PathBuf, u64, archive::StreamStats, [u8; 32])> {
    let docker = ctx.docker()?;
    if crate::store::trust::Policy::of(ctx)?.signing.is_some() {
        // Asked before anything is written: an archive that cannot be signed would be untrusted.
        crate::engine::sign::key_file()?;
    }
    let suffix = if plan.seal.is_some() { ".tar.gz.age" } else { ".tar.gz" };
    let name = archive_name(plan.kind, opts.tag.as_deref())?.replace(".tar.gz", suffix);
    let mut final_path = dir.join(&name);
    let mut n = 1;
    while final_path.exists() {
        final_path = dir.join(name.replace(suffix, &format!("-{n}{suffix}")));
        n += 1;
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let file_name = final_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (upload, mirror) = match &plan.push {
        Some(r) => {
            let (u, m) = crate::tasks::offsite::Upload::begin(ctx, r, &file_name)?;
            (Some(u), Some(m))
        }
        None => (None, None),
    };
    let mut writer = ArchiveWriter::create_sealed(&final_path, opts.level, threads, plan.seal.as_ref(), mirror)?;
    let config = ctx.model()?.1.clone().unwrap_or_default();
    let infos: Vec<DbInfo> = dumps.iter().map(|d| d.info.clone()).collect();
    let meta = metadata(ctx, plan, opts, &config, infos, sources)?;
    // What verify and restore will demand of the archive, demanded of it before it is written.
    grammar::check_metadata(&meta)
        .context("this backup cannot be archived as it is (rename what the message names)")?;
    archive::write_metadata(&mut writer, &meta)?;
    for (entry, file) in dumps.iter().flat_map(|d| &d.files) {
        let f = File::open(&file.path)?;
        let size = f.metadata()?.len();
        writer.add_file(entry, size, f).with_context(|| format!("add {entry}"))?;
    }
    drop(dumps);
    for v in &sources.volumes {
        let total = sources.sizes.get(v.source()).copied().unwrap_or(0);
        let progress = ctx.ui.progress_to(&format!("copy volume {}", v.source()), total);
        let mut child = docker.volume_tar(v.source()).with_context(|| format!("read volume {}", v.source()))?;
        let stats = writer
            .add_volume_tar(&v.name, &mut child, &mut |n| progress.inc(n))
            .with_context(|| format!("back up volume {}", v.name))?;
        child.finish().with_context(|| format!("back up volume {}", v.name))?;
        progress.finish(&format!("volume {}: {} files, {}", v.name, stats.files, human_bytes(stats.bytes)));
    }
    let stats = writer.stats;
    let committed = writer.commit_all()?;
    let (bytes, sha256) = (committed.size, committed.sha256);
    crate::store::trust::sign_local(ctx, &final_path, committed.size, committed.sha256)
        .with_context(|| format!("the archive {} was written but not signed", final_path.display()))?;
    if let Some(u) = upload {
        u.complete(ctx, &final_path, committed).map_err(|e| {
            e.context(format!("the archive was written but not uploaded; it is kept at {}", final_path.display()))
        })?;
    }
    Ok((final_path, bytes, stats, sha256))
}

/// What the metadata says of one copied volume or bind.
fn volume_info(plan: &BackupPlan, v: &VolumeChoice, sizes: &BTreeMap<String, u64>) -> VolumeInfo {
    let consistency = if plan.redis.iter().any(|r| r.volumes.contains(&v.name)) {
        "redis-save"
    } else if plan.stop || !v.stop_for_copy.is_empty() {
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
        size_bytes: sizes.get(v.source()).copied(),
        bind: v.bind.clone(),
        bind_mounts: v
            .bind_mounts
            .iter()
            .map(|(service, target)| archive::BindMount { service: service.clone(), target: target.clone() })
            .collect(),
    }
}

fn metadata(
    ctx: &Ctx,
    plan: &BackupPlan,
    opts: &Options,
    config_json: &str,
    databases: Vec<DbInfo>,
    sources: &Sources,
) -> Result<Metadata> {
    let (volumes, skipped, sizes) = (&sources.volumes, &sources.skipped, &sources.sizes);
    let mut entries =
        vec![archive::EntryInfo { path: archive::METADATA.into(), what: "this description of the archive".into() }];
    for db in &databases {
        entries.extend(dump_entries(db));
    }
    let infos: Vec<VolumeInfo> = volumes
        .iter()
        .map(|v| {
            entries.push(archive::EntryInfo {
                path: archive::volume_prefix(&v.name),
                what: match &v.bind {
                    Some(path) => format!("the files of the bind mount {path} (role {})", v.role.as_str()),
                    None => format!("the files of volume {} (role {})", v.name, v.role.as_str()),
                },
            });
            volume_info(plan, v, sizes)
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
        postgres: None,
        databases,
        volumes: infos,
        skipped: skipped.to_vec(),
        project_dir: Some(ctx.stack.project_dir.display().to_string()),
    })
}

/// What each dump entry of a service is, for the metadata's `entries`.
fn dump_entries(db: &DbInfo) -> Vec<archive::EntryInfo> {
    use archive::DbEngine;
    let (globals, each) = match db.engine {
        DbEngine::Postgres => ("PostgreSQL roles and tablespaces (pg_dumpall --globals-only)", "plain SQL pg_dump"),
        DbEngine::Mariadb => ("MariaDB users and grants (mariadb-dump --system=users)", "mariadb-dump"),
        DbEngine::Mysql => ("", "mysqldump"),
        DbEngine::Hook => ("", "output of the xtask.dump command"),
    };
    let mut out: Vec<archive::EntryInfo> = db
        .globals_entry
        .iter()
        .map(|g| archive::EntryInfo { path: g.clone(), what: format!("{globals} of service {}", db.service) })
        .collect();
    for d in &db.databases {
        let what = match db.engine {
            DbEngine::Hook => format!("{each} of service {}", db.service),
            _ => format!("{each} of database {} of service {}", d.name, db.service),
        };
        out.push(archive::EntryInfo { path: d.entry.clone(), what });
    }
    out
}

fn unprotected(skipped: &[Skipped]) -> Vec<String> {
    skipped.iter().filter(|s| s.reason.starts_with(UNPROTECTED)).map(|s| s.name.clone()).collect()
}

/// `SERVICE/DATABASE` for each dumped database (a hook's: `SERVICE/dump`).
fn dumped_names(dumps: &[dump::Dumped]) -> Vec<String> {
    dumps.iter().flat_map(|d| d.info.databases.iter().map(|x| format!("{}/{}", d.info.service, x.name))).collect()
}

/// Every database named with `--database` was found in some server.
fn check_requested_databases(opts: &Options, dumps: &[dump::Dumped]) -> Result<()> {
    for want in &opts.databases {
        if !dumps.iter().any(|d| d.info.databases.iter().any(|x| &x.name == want)) {
            bail!("--database {want}: no database server of the stack has a database of that name");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

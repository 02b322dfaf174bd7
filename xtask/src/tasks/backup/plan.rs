//! What a backup will copy, decided from the model alone (plain data, unit-tested): which
//! databases are dumped, which volumes and binds are copied, which are skipped and why, which
//! Redis servers are saved first.

use super::{Kind, Options};
use crate::archive::{self, grammar};
use crate::engine::db::{self, Detected};
use crate::model::binds::Bind;
use crate::model::compose::{MountKind, Project};
use crate::model::offsite::Encryption;
use crate::model::roles::{self, Priority, Role};
pub use crate::tasks::engines::DbSource;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

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
    /// Why an inferred `data` volume is copied (the inference was unsure), said in the plan.
    pub unsure: Option<String>,
    /// A bind's binds inside it (host paths): copied and restored as part of its tree.
    pub holds: Vec<String>,
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
    /// The codec and level of the archive's stream.
    pub compression: archive::Compression,
    pub push: Option<String>,
    /// Keep the local archive after a complete upload (always, without a push).
    pub keep_local: bool,
    /// `push` names a restic repository (its tar stream goes in while it is written).
    pub push_vault: bool,
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
        let choice = Choice {
            requested: &requested,
            excluded: &excluded,
            db_volumes: &db_volumes,
            all: opts.all,
            no_stop: opts.no_stop,
        };
        let mut volumes = choose_volumes(project, &classified, &choice, &mut skipped);
        for v in volumes.iter_mut() {
            if let Some((_, users)) = undumped.iter().find(|(name, _)| *name == v.name) {
                v.stop_for_copy = users.clone();
            }
        }
        let db_services: Vec<&str> = dbs.iter().map(|d| d.login.service.as_str()).collect();
        let chosen = choose_binds(binds, &choice, &db_services, &mut skipped);
        volumes.extend(fold_nested_binds(chosen, binds, &choice, &mut skipped));
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
        compression: archive::Compression::default(),
        push: opts.push.clone(),
        keep_local: opts.keep_local || opts.push.is_none(),
        push_vault: false,
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
        if dbs.iter().any(|d| d.volume.as_deref() == Some(v.name.as_str())) {
            continue;
        }
        let users: Vec<String> = project.mounts_of(&v.key).map(|(s, _)| s.name.clone()).collect();
        // Asked for by name (restore's safety backup does): copied with its users stopped all the
        // same, as consistent as any backup; with --no-stop copied live, as asked.
        if requested.contains(&v.name) {
            if !opts.no_stop {
                undumped.push((v.name.clone(), users));
            }
            continue;
        }
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
    /// `--no-stop`: a store no engine dumps is never stopped for its copy.
    no_stop: bool,
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
            unsure: (c.role_inferred && c.role == Role::Data).then(|| c.role_reason.clone()),
            holds: Vec::new(),
        });
    }
    volumes
}

/// The bind `wanted` names: its host path, or a path relative to the current directory.
fn bind_named<'a>(binds: &'a [Bind], wanted: &str) -> Option<&'a Bind> {
    let cwd = crate::environment::cwd();
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
        } else if undumped_store(b, dumped.is_some()) && choice.no_stop && !explicitly {
            Some(format!(
                "{UNPROTECTED}: the data of a store the tool cannot dump (mounted by {}), and --no-stop forbids \
                 stopping it for a copy",
                b.uses.iter().map(|u| u.service.as_str()).collect::<Vec<_>>().join(", ")
            ))
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
            stop_for_copy: if undumped_store(b, dumped.is_some()) && !choice.no_stop {
                b.uses.iter().map(|u| u.service.clone()).collect()
            } else {
                Vec::new()
            },
            unsure: (b.inferred && b.role == Role::Data).then(|| b.role_reason.clone()),
            holds: Vec::new(),
        });
    }
    out
}

/// A bind inside another bind this backup copies (mailcow's `./data/conf/dovecot/auth` inside
/// `./data/conf/dovecot`) is part of the outer tree: copied and restored with it (a restore
/// checks, before the services start, that nothing on the way to it is a symbolic link), so it
/// is not copied a second time unless named with `--volume`; the outer copy stops and saves
/// for its users too.
fn fold_nested_binds(
    chosen: Vec<VolumeChoice>,
    binds: &[Bind],
    choice: &Choice,
    skipped: &mut Skips,
) -> Vec<VolumeChoice> {
    let inside = |inner: &str, outer: &str| inner != outer && std::path::Path::new(inner).starts_with(outer);
    let outer_of = |v: &VolumeChoice| {
        let path = v.bind.as_deref()?;
        let named = choice.requested.iter().any(|r| r == path);
        chosen.iter().filter_map(|o| o.bind.clone()).find(|o| !named && inside(path, o))
    };
    let folded: Vec<(String, String)> =
        chosen.iter().filter_map(|v| outer_of(v).map(|o| (v.bind.clone().unwrap_or_default(), o))).collect();
    let mut out: Vec<VolumeChoice> =
        chosen.into_iter().filter(|v| !folded.iter().any(|(i, _)| v.bind.as_ref() == Some(i))).collect();
    for (inner, outer) in &folded {
        skipped.push((inner.clone(), format!("inside the bind {outer}: copied and restored as part of it")));
    }
    for v in out.iter_mut().filter(|v| v.bind.is_some()) {
        let path = v.bind.clone().unwrap_or_default();
        for b in binds.iter().filter(|b| inside(&b.host_path, &path)) {
            v.services.extend(b.uses.iter().map(|u| u.service.clone()));
            v.holds.push(b.host_path.clone());
        }
        v.services.sort();
        v.services.dedup();
    }
    out
}

/// Whether a bind holds a database no engine of the tool dumps (its role `database`, and no
/// dumped service uses it): copied with its users stopped, like such a volume.
fn undumped_store(b: &Bind, dumped: bool) -> bool {
    b.role == Role::Database && !dumped && b.never.is_none()
}

/// A plain name for a bind's folder in the archive, from its last path components.
pub(super) fn bind_id(host_path: &str) -> String {
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
            let record = l.engine.record();
            out.push_str(&match record.single_dump {
                Some(_) => format!("  - dump service {} with its xtask.dump command\n", l.service),
                None => format!(
                    "  - dump {} ({which}, with its {}) inside service {} as user {}\n",
                    record.name,
                    record.globals_words,
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
            out.push_str(&self.describe_volume(v));
        }
        for (name, why) in &self.skipped {
            out.push_str(&format!("  - skip {name}: {why}\n"));
        }
        let (codec, level) = (self.compression.codec, self.compression.level);
        out.push_str(&format!("  - compress the tar stream with {codec} level {level} (…{})\n", codec.extension()));
        if let Some(seal) = &self.seal {
            let n = seal.recipients.len();
            let file = seal.recipients_file.as_ref().map(|f| format!(" and those in {}", f.display()));
            out.push_str(&format!(
                "  - encrypt the archive with age to {n} recipient(s){} while it is written (…{}.age)\n",
                file.unwrap_or_default(),
                codec.extension()
            ));
        }
        match (&self.push, self.push_vault, self.keep_local) {
            (Some(r), false, keep) => {
                out.push_str(&format!("  - upload it to remote {r} while it is written, then its .sha256\n"));
                if !keep {
                    out.push_str("  - then remove the local copy (--no-keep-local)\n");
                }
            }
            (Some(r), true, keep) => {
                out.push_str(&format!(
                    "  - into the restic repository {r}: volumes and binds as file trees read by restic where \
                     they live (a local engine, a plain directory this user can read), so unchanged files are \
                     skipped; the others, the dumps and the metadata in a tar stream\n"
                ));
                if keep {
                    out.push_str(
                        "  - the local archive holds every volume; the repository's stream is written after it\n",
                    );
                } else {
                    out.push_str("  - no local copy (--no-keep-local): the stream goes only into the repository\n");
                }
            }
            (None, ..) => {}
        }
        out
    }

    /// One copied volume or bind in words: how it is copied, and why when unsure or nested.
    fn describe_volume(&self, v: &VolumeChoice) -> String {
        let mut out = String::new();
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
        if !v.holds.is_empty() {
            out.push_str(&format!(
                "      holds the binds {}: copied and restored as part of it (a restore checks that nothing on \
                 the way to them is a symbolic link before their services start)\n",
                v.holds.join(", ")
            ));
        }
        if let Some(why) = &v.unsure {
            out.push_str(&format!("      kept since unsure of its role: {why}\n"));
        }
        out
    }
}

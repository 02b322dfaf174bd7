//! Bind mounts as data: every host path the stack's services bind, grouped by path, with a
//! role and priority like a volume's (inferred from the image and target path, or set in the
//! compose file's `x-xtask: {binds: {"./media": {role: uploads, priority: critical}}}`, since a
//! bind has no labels), or a reason it is never copied: a system path (`/var/run/docker.sock`,
//! `/proc`, `/etc/localtime`…: never read or written), or configuration (a single file, or a
//! read-only mount). Pure: the host is asked nothing here except whether a path is a file.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_yaml::Value;

use crate::model::compose::{Mount, MountKind, Project, Service};
use crate::model::roles::{self, Priority, Role, PRIORITIES, ROLES};

/// Host paths (and everything under them) that are the machine's, not the stack's data.
const SYSTEM: [&str; 16] = [
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/run",
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr",
    "/etc",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/root/.ssh",
    "/home/*/.ssh",
];

/// One service's use of a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindUse {
    pub service: String,
    pub target: String,
    pub read_only: bool,
}

/// A host path the stack binds, and what the tool makes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Absolute and normalized, as Compose resolves it.
    pub host_path: String,
    pub uses: Vec<BindUse>,
    pub role: Role,
    pub priority: Priority,
    /// Role and priority came from inference, not from `x-xtask.binds`.
    pub inferred: bool,
    /// Why it has this role (the override, or the inference's reason).
    pub role_reason: String,
    /// Why it is never copied (system path, configuration), or None: data.
    pub never: Option<String>,
}

impl Bind {
    /// "system", "config", or the role's name.
    pub fn role_name(&self) -> &'static str {
        match self.never.as_deref() {
            Some(w) if w.starts_with("a system path") => "system",
            Some(_) => "config",
            None => self.role.as_str(),
        }
    }
}

/// `x-xtask.binds` entries: host path (resolved) -> (role, priority).
pub type Overrides = BTreeMap<String, (Option<Role>, Option<Priority>)>;

/// Reads `x-xtask.binds`, its keys resolved against the project directory like Compose does.
pub fn overrides(settings: Option<&Value>, project_dir: &Path) -> Result<Overrides> {
    let mut out = Overrides::new();
    let Some(map) = settings.and_then(|s| s.get("binds")) else { return Ok(out) };
    let map = map.as_mapping().context("x-xtask.binds must map host paths to {role, priority}")?;
    for (k, v) in map {
        let key = k.as_str().context("x-xtask.binds: every key must be a host path")?;
        let field = |name: &str| -> Result<Option<String>> {
            match v.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => bail!("x-xtask.binds.{key:?}.{name} must be a string"),
            }
        };
        let role = field("role")?
            .map(|r| {
                ROLES.into_iter().find(|x| x.as_str() == r).with_context(|| {
                    format!("x-xtask.binds.{key:?}.role is {r:?}; use one of {}", ROLES.map(Role::as_str).join(", "))
                })
            })
            .transpose()?;
        let priority = field("priority")?
            .map(|p| {
                PRIORITIES.into_iter().find(|x| x.as_str() == p).with_context(|| {
                    format!(
                        "x-xtask.binds.{key:?}.priority is {p:?}; use one of {}",
                        PRIORITIES.map(Priority::as_str).join(", ")
                    )
                })
            })
            .transpose()?;
        out.insert(normalize(&project_dir.join(key)), (role, priority));
    }
    Ok(out)
}

/// `a/./b/../c` -> `a/c`, lexically (as Compose resolves relative binds).
pub fn normalize(p: &Path) -> String {
    crate::model::compose::normalize(p).to_string_lossy().into_owned()
}

/// Why `path` is a system path, if it is.
pub fn system_path(path: &str) -> Option<String> {
    let under = |root: &str| {
        let segs: Vec<&str> = root.split('/').collect();
        let have: Vec<&str> = path.split('/').collect();
        have.len() >= segs.len() && segs.iter().zip(&have).all(|(s, h)| *s == "*" || s == h)
    };
    if path == "/" || path.is_empty() || SYSTEM.iter().any(|r| under(r)) {
        return Some(format!("a system path ({path}): never read or written"));
    }
    None
}

/// Host directories a restore replaces only when the user names the bind: a home directory, its
/// dot directories (`~/.config`, …), and the places that hold the host's own state (crontabs and
/// spools, package and service data, logs). A segment `*` is any name, `.*` any name starting
/// with a dot; a final `**` also holds everything below.
const HELD: [&str; 19] = [
    "/root",
    "/root/.*/**",
    "/home",
    "/home/*",
    "/home/*/.*/**",
    "/var",
    "/var/lib",
    "/var/lib/postgresql/**",
    "/var/lib/mysql/**",
    "/var/lib/dpkg/**",
    "/var/lib/systemd/**",
    "/var/spool/**",
    "/var/log",
    "/var/mail/**",
    "/var/backups/**",
    "/srv",
    "/opt",
    "/mnt",
    "/tmp",
];

/// Whether `path` matches the [`HELD`] pattern `pattern`, segment by segment.
fn matches_held(pattern: &str, path: &str) -> bool {
    let (mut p, mut h) = (pattern.split('/'), path.split('/'));
    loop {
        match (p.next(), h.next()) {
            (Some("**"), _) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || (x == ".*" && y.starts_with('.') && y.len() > 1) => {}
            _ => return false,
        }
    }
}

/// Why a restore writes the bind at `path` only when the user names it (None: it may write it
/// like any other bind): it is or holds a system path, it is a held directory ([`HELD`]) or
/// the home directory of an account (`homes`, from the password database), or it lies inside
/// the backup directory.
pub fn held(path: &str, homes: &[String], backup_dir: &Path) -> Option<String> {
    let holds =
        |inner: &str| path == "/" || inner == path || inner.starts_with(&format!("{}/", path.trim_end_matches('/')));
    if let Some(s) = SYSTEM.iter().find(|s| holds(s.split("/*").next().unwrap_or(s))) {
        return Some(format!("a directory that holds the system path {s}"));
    }
    if let Some(h) = HELD.iter().find(|h| matches_held(h, path)) {
        return Some(format!("the host directory {h}"));
    }
    if homes.iter().any(|h| h.trim_end_matches('/') == path) {
        return Some("an account's home directory".into());
    }
    if Path::new(path).starts_with(backup_dir) {
        return Some(format!("inside the backup directory {}", backup_dir.display()));
    }
    None
}

/// Every bind of the stack, grouped by host path, classified.
pub fn binds(project: &Project, overrides: &Overrides, is_file: &dyn Fn(&str) -> bool) -> Vec<Bind> {
    let mut by_path: BTreeMap<String, Vec<(&Service, &Mount)>> = BTreeMap::new();
    for s in &project.services {
        for m in s.mounts.iter().filter(|m| m.kind == MountKind::Bind) {
            let Some(src) = m.source.as_deref() else { continue };
            by_path.entry(normalize(Path::new(src))).or_default().push((s, m));
        }
    }
    by_path.into_iter().map(|(path, mounts)| classify(path, &mounts, overrides, is_file)).collect()
}

fn classify(
    path: String,
    mounts: &[(&Service, &Mount)],
    overrides: &Overrides,
    is_file: &dyn Fn(&str) -> bool,
) -> Bind {
    let uses = mounts
        .iter()
        .map(|(s, m)| BindUse { service: s.name.clone(), target: m.target.clone(), read_only: m.read_only })
        .collect();
    let basename = path.rsplit('/').next().unwrap_or_default().to_string();
    let (inferred_role, why) = roles::infer(&basename, mounts);
    let (role, priority, inferred, role_reason) = match overrides.get(&path) {
        Some((r, p)) => {
            let role = r.unwrap_or(inferred_role);
            let reason = if r.is_some() { "x-xtask.binds".to_string() } else { why };
            (role, p.unwrap_or(role.default_priority()), false, reason)
        }
        None => (inferred_role, inferred_role.default_priority(), true, why),
    };
    let never = if let Some(why) = system_path(&path) {
        Some(why)
    } else if !inferred {
        None
    } else if is_file(&path) {
        Some("a single file: configuration, not data (override in x-xtask.binds)".into())
    } else if mounts.iter().all(|(_, m)| m.read_only) {
        Some("mounted read-only: configuration, not data (override in x-xtask.binds)".into())
    } else {
        None
    };
    Bind { host_path: path, uses, role, priority, inferred, role_reason, never }
}

/// The binds of `stack_binds` that lie strictly inside the directory `path` (their host paths,
/// each once): restored as part of it, so a restore of `path` checks that nothing on the way to
/// them is a symbolic link before their services start.
pub fn inside<'a>(stack_binds: &'a [Bind], path: &str) -> Vec<&'a Bind> {
    stack_binds.iter().filter(|b| b.host_path != path && Path::new(&b.host_path).starts_with(path)).collect()
}

/// Where and how an archive recorded a bind: its host path, the project directory then (absent
/// in older archives) and its mounts as (service, target) (absent in older archives).
pub struct Recorded<'a> {
    pub path: &'a str,
    pub project_dir: Option<&'a str>,
    pub uses: &'a [(String, String)],
}

/// The bind of this stack a restore writes an archived bind into, chosen by this compose file
/// alone: the declared bind that one of the recorded (service, target) mounts names today, or,
/// for archives that recorded none, the declared bind at the recorded path. The recorded path
/// must name that same bind (the same path, or the same path inside a project directory that
/// moved): a path no service binds (`.git`, `.cargo`, the backup directory…) is refused, and
/// the archive's path text never picks a place. Refused too: a bind that is a system path,
/// never copied (configuration), mounted read-only by all its services, or that holds one of
/// `protected` (the project directory, the backup directory).
pub fn declared_target<'a>(
    recorded: &Recorded,
    stack_binds: &'a [Bind],
    project_dir: &Path,
    protected: &[&Path],
) -> Result<&'a Bind> {
    let named = |b: &&Bind| b.uses.iter().any(|u| recorded.uses.iter().any(|(s, t)| *s == u.service && *t == u.target));
    let matches: Vec<&Bind> = if recorded.uses.is_empty() {
        stack_binds.iter().filter(|b| b.host_path == recorded.path).collect()
    } else {
        stack_binds.iter().filter(named).collect()
    };
    let what = match recorded.uses {
        [] => format!("bind {}", recorded.path),
        uses => {
            let uses: Vec<String> = uses.iter().map(|(s, t)| format!("{s}:{t}")).collect();
            format!("bind {} (mounted as {})", recorded.path, uses.join(", "))
        }
    };
    let bind = match matches.as_slice() {
        [] => bail!("{what}: no service of this stack's compose file binds it; a restore writes binds only where the compose file declares them"),
        [one] => *one,
        _ => bail!("{what}: its recorded mounts name more than one bind of this stack; restore it by hand"),
    };
    let inside = |path: &str, dir: &str| Path::new(path).strip_prefix(dir).ok().map(Path::to_path_buf);
    let moved = recorded.project_dir.and_then(|rp| inside(recorded.path, rp)).is_some_and(|rel| {
        inside(&bind.host_path, &project_dir.to_string_lossy())
            .is_some_and(|now| now == rel && !rel.as_os_str().is_empty())
    });
    if bind.host_path != recorded.path && !moved {
        bail!(
            "{what}: no service of this stack's compose file binds it (this stack binds that mount at {}); a restore writes binds only where the compose file declares them",
            bind.host_path
        );
    }
    let path = &bind.host_path;
    if let Some(why) = bind.never.as_deref() {
        bail!("{what}: this stack binds it at {path}, which is {why}");
    }
    if bind.uses.iter().all(|u| u.read_only) {
        bail!("{what}: this stack mounts {path} read-only only: not data a restore writes");
    }
    if let Some(p) = protected.iter().find(|p| p.starts_with(path)) {
        bail!("{what}: this stack binds {path}, which holds {}: a restore never replaces it", p.display());
    }
    // Another bind inside this one (mailcow's `./data/conf/dovecot` holding
    // `./data/conf/dovecot/auth/x.php`) is restored as part of it: the restore checks, once the
    // new tree is in place and before its services start, that nothing on the way to the inner
    // bind is a symbolic link Docker would follow ([`inside`]).
    Ok(bind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_that_hold_the_hosts_own_state_are_held() {
        let homes = ["/srv/git".to_string()];
        let backups = Path::new("/srv/p/backups");
        let held = |p: &str| held(p, &homes, backups);
        let held_paths = [
            "/",
            "/var",
            "/usr/local/..",
            "/home",
            "/home/alice",
            "/home/alice/.config",
            "/home/alice/.local/share",
            "/root",
            "/root/.config",
            "/var/lib",
            "/var/spool/cron",
            "/var/spool/cron/crontabs",
            "/var/lib/postgresql/15/main",
            "/srv/git",
        ];
        for p in held_paths {
            assert!(held(&normalize(Path::new(p))).is_some(), "{p}");
        }
        assert!(held("/srv/p/backups/x").unwrap().contains("backup directory"));
        assert!(held("/var").unwrap().contains("holds the system path /var/"), "{:?}", held("/var"));
        let free = [
            "/srv/p/data",
            "/home/alice/app/uploads",
            "/var/lib/app-data-x",
            "/srv/gitea",
            "/opt/app/db",
            "/root/app/media",
        ];
        for p in free {
            assert_eq!(held(p), None, "{p}");
        }
    }

    fn project(mounts: &[(&str, &str, &str, bool)]) -> Project {
        let services = mounts
            .iter()
            .map(|(svc, src, target, ro)| Service {
                name: svc.to_string(),
                image: Some(if *svc == "db" { "postgres:16".into() } else { format!("{svc}:1") }),
                mounts: vec![Mount {
                    kind: MountKind::Bind,
                    source: Some(src.to_string()),
                    target: target.to_string(),
                    read_only: *ro,
                }],
                environment: Default::default(),
                labels: Default::default(),
                command: Vec::new(),
            })
            .collect();
        Project { name: "p".into(), volumes: vec![], services }
    }

    #[test]
    fn binds_are_classified_like_volumes_or_never_copied() {
        let p = project(&[
            ("immich", "/srv/photos/library", "/data", false),
            ("db", "/srv/p/pgdata", "/var/lib/postgresql/data", false),
            ("web", "/srv/p/media", "/app/media", false),
            ("web", "/srv/p/./nginx.conf", "/etc/nginx/nginx.conf", true),
            ("web", "/srv/p/conf", "/etc/app", true),
            ("web", "/etc/localtime", "/etc/localtime", true),
            ("agent", "/var/run/docker.sock", "/var/run/docker.sock", false),
            ("web", "/srv/p/logs", "/var/log/web", false),
        ]);
        let is_file = |p: &str| p.ends_with(".conf");
        let b = binds(&p, &Overrides::new(), &is_file);
        let by = |path: &str| b.iter().find(|x| x.host_path == path).unwrap();
        assert_eq!((by("/srv/p/pgdata").role, by("/srv/p/pgdata").priority), (Role::Database, Priority::Critical));
        assert_eq!(by("/srv/p/media").role, Role::Uploads);
        assert_eq!(by("/srv/photos/library").priority, Priority::Critical, "a library of photos is an upload store");
        assert_eq!(by("/srv/p/nginx.conf").role_name(), "config", "normalized and a file");
        assert_eq!(by("/srv/p/conf").role_name(), "config", "read-only");
        assert_eq!(by("/etc/localtime").role_name(), "system");
        assert_eq!(by("/var/run/docker.sock").role_name(), "system");
        assert_eq!(by("/srv/p/logs").priority, Priority::Optional);
        let mut o = Overrides::new();
        o.insert("/srv/p/conf".into(), (Some(Role::Data), Some(Priority::Critical)));
        o.insert("/var/run/docker.sock".into(), (Some(Role::Data), None));
        let b = binds(&p, &o, &is_file);
        let conf = b.iter().find(|x| x.host_path == "/srv/p/conf").unwrap();
        assert_eq!((conf.never.as_deref(), conf.priority, conf.inferred), (None, Priority::Critical, false));
        let sock = b.iter().find(|x| x.host_path == "/var/run/docker.sock").unwrap();
        assert!(sock.never.is_some(), "a system path stays untouchable whatever the override says");
    }

    #[test]
    fn overrides_resolve_relative_keys_and_refuse_unknown_roles() {
        let s: Value = serde_yaml::from_str("binds: {'./media': {role: uploads, priority: critical}}").unwrap();
        let o = overrides(Some(&s), Path::new("/srv/p")).unwrap();
        assert_eq!(o["/srv/p/media"], (Some(Role::Uploads), Some(Priority::Critical)));
        let bad: Value = serde_yaml::from_str("binds: {'./media': {role: photos}}").unwrap();
        let e = format!("{:#}", overrides(Some(&bad), Path::new("/p")).unwrap_err());
        assert!(e.contains("x-xtask.binds") && e.contains("photos"), "{e}");
    }

    #[test]
    fn restore_writes_only_where_the_compose_file_binds() {
        let p = project(&[
            ("web", "/srv/p/media", "/app/media", false),
            ("web", "/srv/photos", "/data", false),
            ("web", "/srv/p/conf", "/etc/app", true),
            ("dev", "/srv", "/src", false),
        ]);
        let b = binds(&p, &Overrides::new(), &|_| false);
        let guard = [Path::new("/srv/p"), Path::new("/srv/p/backups")];
        let uses = |s: &str, t: &str| vec![(s.to_string(), t.to_string())];
        let at = |path: &str, dir: Option<&str>, u: &[(String, String)]| {
            let r = Recorded { path, project_dir: dir, uses: u };
            declared_target(&r, &b, Path::new("/srv/p"), &guard).map(|b| b.host_path.clone())
        };
        let target = |path: &str, u: &[(String, String)]| at(path, Some("/srv/p"), u);
        assert_eq!(target("/srv/p/media", &[]).unwrap(), "/srv/p/media", "an older archive: the declared path");
        assert_eq!(target("/srv/p/media", &uses("web", "/app/media")).unwrap(), "/srv/p/media");
        let moved = at("/home/a/p/media", Some("/home/a/p"), &uses("web", "/app/media")).unwrap();
        assert_eq!(moved, "/srv/p/media", "a moved checkout: the compose file picks the place");
        let e = format!("{:#}", at("/home/a/p/.git", Some("/home/a/p"), &uses("web", "/app/media")).unwrap_err());
        assert!(e.contains("binds that mount at /srv/p/media"), "the recorded path must name the same bind: {e}");
        let e = format!("{:#}", at("/srv/photos", Some("/srv/x"), &uses("web", "/app/media")).unwrap_err());
        assert!(e.contains("no service of this stack"), "{e}");
        for (path, u) in [
            ("/srv/p/.git", vec![]),
            ("/srv/p/.cargo", vec![]),
            ("/srv/p/backups", vec![]),
            ("/srv/p/.git", uses("web", "/app/.git")),
            ("/etc/cron.d", vec![]),
        ] {
            let e = format!("{:#}", target(path, &u).unwrap_err());
            assert!(e.contains("no service of this stack's compose file binds it"), "{path}: {e}");
        }
        assert!(format!("{:#}", target("/srv/p/conf", &[]).unwrap_err()).contains("configuration"));
        let nested = project(&[("web", "/srv/q/data", "/data", false), ("web", "/srv/q/data/sub", "/sub", false)]);
        let nb = binds(&nested, &Overrides::new(), &|_| false);
        let r = Recorded { path: "/srv/q/data", project_dir: None, uses: &[] };
        let outer = declared_target(&r, &nb, Path::new("/srv/q"), &[]).expect("a bind holding another is restorable");
        let inner: Vec<&str> = inside(&nb, &outer.host_path).iter().map(|b| b.host_path.as_str()).collect();
        assert_eq!(inner, ["/srv/q/data/sub"], "restored as part of it, checked for links at the swap");
        assert!(inside(&nb, "/srv/q/data/sub").is_empty());
        assert!(inside(&nb, "/srv/q/dat").is_empty(), "a path prefix is not a parent directory");
        let e = format!("{:#}", at("/srv", None, &uses("dev", "/src")).unwrap_err());
        assert!(e.contains("holds /srv/p"), "a bind holding the project or backup directory: {e}");
    }
}

//! Bind mounts as data: every host path the stack's services bind, grouped by path, with a
//! role and priority like a volume's (inferred from the image and target path, or set in the
//! compose file's `x-xtask: {binds: {"./media": {role: uploads, priority: critical}}}`, since a
//! bind has no labels), or a reason it is never copied: a system path (`/var/run/docker.sock`,
//! `/proc`, `/etc/localtime`…: never read or written), or configuration (a single file, or a
//! read-only mount). Pure: the host is asked nothing here except whether a path is a file.

use std::collections::BTreeMap;
use std::path::{Component, Path};

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
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
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
    let inferred_role = roles::infer_role(&basename, mounts);
    let (role, priority, inferred) = match overrides.get(&path) {
        Some((r, p)) => {
            let role = r.unwrap_or(inferred_role);
            (role, p.unwrap_or(role.default_priority()), false)
        }
        None => (inferred_role, inferred_role.default_priority(), true),
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
    Bind { host_path: path, uses, role, priority, inferred, never }
}

/// Whether a restore may write `host_path`: never a system path; outside the project
/// directory only when the stack itself binds exactly that path.
pub fn writable(host_path: &str, project_dir: &Path, stack_binds: &[Bind]) -> Result<()> {
    if let Some(why) = system_path(host_path) {
        bail!("bind {host_path}: {why}");
    }
    let canonical = normalize(Path::new(host_path)) == host_path && host_path.starts_with('/');
    if !canonical {
        bail!("bind path {host_path:?} is not absolute and normalized");
    }
    let inside = Path::new(host_path).starts_with(project_dir) && Path::new(host_path) != project_dir;
    let named = stack_binds.iter().any(|b| b.host_path == host_path && b.never.is_none());
    if !inside && !named {
        bail!(
            "bind path {host_path} is outside the project directory {} and no service of this stack binds it",
            project_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(by("/srv/photos/library").priority, Priority::Important);
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
    fn restore_writes_only_project_paths_or_the_stacks_own_binds() {
        let p = project(&[("web", "/srv/photos", "/data", false)]);
        let b = binds(&p, &Overrides::new(), &|_| false);
        let dir = Path::new("/srv/p");
        assert!(writable("/srv/p/media", dir, &b).is_ok());
        assert!(writable("/srv/photos", dir, &b).is_ok(), "named by the stack");
        assert!(writable("/srv/other", dir, &b).is_err());
        assert!(writable("/srv/p/../other", dir, &b).is_err());
        assert!(writable("/etc/cron.d", dir, &b).is_err());
        assert!(writable("/var/run/docker.sock", dir, &b).is_err());
        assert!(writable("/srv/p", dir, &b).is_err(), "not the project directory itself");
    }
}

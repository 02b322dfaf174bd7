//! What each volume is for (its role) and how much losing it would hurt (its backup priority).
//! Read from the volume labels `xtask.role` / `xtask.priority` in the compose file; where a
//! stack has no labels, inferred from the images and mount paths and marked as inferred.

use anyhow::{bail, Result};

use crate::model::compose::{Mount, Project, Service, VolumeDecl};

pub const ROLE_LABEL: &str = "xtask.role";
pub const PRIORITY_LABEL: &str = "xtask.priority";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Database,
    Cache,
    Uploads,
    Static,
    Dependencies,
    Logs,
    /// Anything else: persistent data of unknown kind, treated as worth keeping.
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Losing it loses user data: always backed up.
    Critical,
    /// Costly to lose: backed up by default.
    Important,
    /// Rebuilt from source by a build or install step: not backed up by default.
    Regenerable,
    /// Nice to have (logs): not backed up by default.
    Optional,
}

pub const ROLES: [Role; 7] =
    [Role::Database, Role::Cache, Role::Uploads, Role::Static, Role::Dependencies, Role::Logs, Role::Data];
pub const PRIORITIES: [Priority; 4] =
    [Priority::Critical, Priority::Important, Priority::Regenerable, Priority::Optional];

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Database => "database",
            Role::Cache => "cache",
            Role::Uploads => "uploads",
            Role::Static => "static",
            Role::Dependencies => "dependencies",
            Role::Logs => "logs",
            Role::Data => "data",
        }
    }

    /// The priority a volume of this role gets when its label does not say.
    pub fn default_priority(self) -> Priority {
        match self {
            Role::Database | Role::Uploads => Priority::Critical,
            Role::Cache | Role::Data => Priority::Important,
            Role::Static | Role::Dependencies => Priority::Regenerable,
            Role::Logs => Priority::Optional,
        }
    }
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Important => "important",
            Priority::Regenerable => "regenerable",
            Priority::Optional => "optional",
        }
    }
}

fn parse<T: Copy>(all: &[T], name: fn(T) -> &'static str, value: &str) -> Option<T> {
    all.iter().copied().find(|x| name(*x) == value)
}

/// A volume's role and priority, and whether each came from a label or was inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub role: Role,
    pub role_inferred: bool,
    pub priority: Priority,
    pub priority_inferred: bool,
}

/// Classifies `vol` from its labels, else from how the project's services mount it.
pub fn classify(project: &Project, vol: &VolumeDecl) -> Result<Classification> {
    let at = || {
        let file = vol.origin.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
        format!("{file}key volumes.{}.labels", vol.key)
    };
    let role = match vol.labels.get(ROLE_LABEL) {
        Some(v) => match parse(&ROLES, Role::as_str, v) {
            Some(r) => Some(r),
            None => bail!("{}: {ROLE_LABEL} is {v:?}; use one of {}", at(), ROLES.map(Role::as_str).join(", ")),
        },
        None => None,
    };
    let priority = match vol.labels.get(PRIORITY_LABEL) {
        Some(v) => match parse(&PRIORITIES, Priority::as_str, v) {
            Some(p) => Some(p),
            None => {
                bail!("{}: {PRIORITY_LABEL} is {v:?}; use one of {}", at(), PRIORITIES.map(Priority::as_str).join(", "))
            }
        },
        None => None,
    };
    let mounts: Vec<(&Service, &Mount)> = project.mounts_of(&vol.key).collect();
    let (role, role_inferred) = match role {
        Some(r) => (r, false),
        None => (infer_role(&vol.key, &mounts), true),
    };
    let (priority, priority_inferred) = match priority {
        Some(p) => (p, false),
        None => (role.default_priority(), true),
    };
    Ok(Classification { role, role_inferred, priority, priority_inferred })
}

/// Infers a role from the images that mount the volume and where they mount it.
pub fn infer_role(key: &str, mounts: &[(&Service, &Mount)]) -> Role {
    let image_base = |s: &Service| {
        let image = s.image.as_deref().unwrap_or_default().to_lowercase();
        let no_tag =
            image.rsplit('/').next().unwrap_or_default().split([':', '@']).next().unwrap_or_default().to_string();
        no_tag
    };
    let any = |pred: &dyn Fn(&Service, &Mount) -> bool| mounts.iter().any(|(s, m)| pred(s, m));
    let target_has = |words: &[&str]| {
        any(&|_, m| {
            let t = m.target.to_lowercase();
            words.iter().any(|w| t.split('/').any(|seg| seg == *w))
        })
    };
    if any(&|s, _| {
        ["postgres", "postgis", "mysql", "mariadb", "mongo", "timescaledb"].iter().any(|d| image_base(s).contains(d))
    }) {
        Role::Database
    } else if any(&|s, _| ["redis", "valkey", "memcached", "keydb"].iter().any(|c| image_base(s).contains(c))) {
        Role::Cache
    } else if any(&|_, m| m.target.starts_with("/var/log")) || target_has(&["log", "logs"]) {
        Role::Logs
    } else if target_has(&["node_modules", "vendor", ".venv", "site-packages"]) {
        Role::Dependencies
    } else if target_has(&["static", "staticfiles", "assets", "public"]) {
        Role::Static
    } else if target_has(&["media", "uploads", "upload"]) {
        Role::Uploads
    } else if key.contains("cache") {
        Role::Cache
    } else {
        Role::Data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::compose::MountKind;

    fn svc(image: &str, target: &str) -> (Service, Mount) {
        let m = Mount { kind: MountKind::Volume, source: Some("v".into()), target: target.into(), read_only: false };
        (
            Service {
                name: "s".into(),
                image: Some(image.into()),
                mounts: vec![m.clone()],
                environment: Default::default(),
                labels: Default::default(),
            },
            m,
        )
    }

    fn infer(image: &str, target: &str) -> Role {
        let (s, m) = svc(image, target);
        infer_role("v", &[(&s, &m)])
    }

    #[test]
    fn inference_from_images_and_paths() {
        assert_eq!(infer("postgres:16", "/var/lib/postgresql/data"), Role::Database);
        assert_eq!(infer("registry.local:5000/library/postgres@sha256:abc", "/data"), Role::Database);
        assert_eq!(infer("xtask-test/postgres:local", "/var/lib/postgresql/data"), Role::Database);
        assert_eq!(infer("redis:7", "/data"), Role::Cache);
        assert_eq!(infer("nginx", "/var/log/nginx"), Role::Logs);
        assert_eq!(infer("node:20", "/app/node_modules"), Role::Dependencies);
        assert_eq!(infer("python", "/app/staticfiles"), Role::Static);
        assert_eq!(infer("python", "/app/media"), Role::Uploads);
        assert_eq!(infer("python", "/srv/things"), Role::Data);
        assert_eq!(infer_role("build-cache", &[]), Role::Cache);
    }

    #[test]
    fn labels_win_and_bad_labels_are_errors() {
        let (s, _) = svc("redis", "/data");
        let mut vol = VolumeDecl {
            key: "v".into(),
            name: "p_v".into(),
            external: false,
            driver: None,
            labels: [(ROLE_LABEL.to_string(), "uploads".to_string())].into(),
            origin: Some("compose.yaml".into()),
        };
        let project = Project { name: "p".into(), volumes: vec![vol.clone()], services: vec![s] };
        let c = classify(&project, &vol).unwrap();
        assert_eq!(
            (c.role, c.role_inferred, c.priority, c.priority_inferred),
            (Role::Uploads, false, Priority::Critical, true)
        );
        vol.labels.remove(ROLE_LABEL);
        let c = classify(&project, &vol).unwrap();
        assert_eq!((c.role, c.role_inferred), (Role::Cache, true));
        vol.labels.insert(PRIORITY_LABEL.into(), "vital".into());
        let e = classify(&project, &vol).unwrap_err().to_string();
        assert!(
            e.contains("compose.yaml")
                && e.contains("volumes.v.labels")
                && e.contains("vital")
                && e.contains("critical"),
            "{e}"
        );
    }

    #[test]
    fn every_role_has_a_default_priority_and_names_round_trip() {
        for r in ROLES {
            assert_eq!(parse(&ROLES, Role::as_str, r.as_str()), Some(r));
            let _ = r.default_priority();
        }
        for p in PRIORITIES {
            assert_eq!(parse(&PRIORITIES, Priority::as_str, p.as_str()), Some(p));
        }
    }
}

//! What each volume is for (its role) and how much losing it would hurt (its backup priority).
//! Read from the volume labels `xtask.role` / `xtask.priority` in the compose file; where a
//! stack has no labels, inferred from the images and mount paths and marked as inferred.

use anyhow::{bail, Result};

use crate::model::compose::{Mount, Project, Service, VolumeDecl};
use crate::model::db;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub role: Role,
    pub role_inferred: bool,
    /// Why it has this role: its label, or the inference's reason.
    pub role_reason: String,
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
    let (role, role_inferred, role_reason) = match role {
        Some(r) => (r, false, format!("its label {ROLE_LABEL}")),
        None => {
            let (r, why) = infer(&vol.key, &mounts);
            (r, true, why)
        }
    };
    let (priority, priority_inferred) = match priority {
        Some(p) => (p, false),
        None => (role.default_priority(), true),
    };
    Ok(Classification { role, role_inferred, role_reason, priority, priority_inferred })
}

/// Directory names that hold what users put there (Mastodon's `public/system`, Rails'
/// `storage`, Immich's `upload`, Synapse's `media_store`…): such a store wins over a `public`,
/// `static` or `assets` above it.
const UPLOAD_STORES: [&str; 16] = [
    "system",
    "uploads",
    "upload",
    "media",
    "media_store",
    "storage",
    "files",
    "library",
    "attachments",
    "photos",
    "originals",
    "documents",
    "avatars",
    "userdata",
    "user_files",
    "pictures",
];

/// Where database images keep their data (an image whose name says nothing, e.g. pgvecto-rs).
const DATABASE_DIRS: [&str; 5] =
    ["/var/lib/postgresql", "/var/lib/mysql", "/var/lib/mariadb", "/var/lib/mongodb", "/data/db"];

/// Infers a role from the images that mount the volume and where they mount it.
pub fn infer_role(key: &str, mounts: &[(&Service, &Mount)]) -> Role {
    infer(key, mounts).0
}

/// [`infer_role`] with the reason, for `volumes` (`role_reason`). When unsure it says data,
/// which is backed up: regenerable needs a strong signal (node_modules, a build output such as
/// `static`/`staticfiles`/`assets`, or a label), and an upload store beats `public`.
pub fn infer(key: &str, mounts: &[(&Service, &Mount)]) -> (Role, String) {
    let image_base = |s: &Service| db::image_base(s.image.as_deref().unwrap_or_default());
    let segments = |m: &Mount| m.target.to_lowercase().split('/').map(str::to_string).collect::<Vec<_>>();
    let first_target =
        |pred: &dyn Fn(&Mount) -> bool| mounts.iter().find(|(_, m)| pred(m)).map(|(_, m)| m.target.clone());
    let with_segment = |words: &[&str]| first_target(&|m| segments(m).iter().any(|s| words.contains(&s.as_str())));
    let image_of = |names: &[&str]| {
        mounts
            .iter()
            .map(|(s, _)| (s.image.clone().unwrap_or_default(), image_base(s)))
            .find(|(_, b)| names.iter().any(|n| b.contains(n)))
    };
    let run_dir = first_target(&|m| {
        ["/run", "/var/run", "/tmp"].iter().any(|r| m.target == *r || m.target.starts_with(&format!("{r}/")))
    });
    if let Some(t) = run_dir.filter(|_| mounts.iter().all(|(_, m)| run_dir_of(&m.target))) {
        return (Role::Cache, format!("mounted at {t}: a runtime (socket or pid) directory, not data"));
    }
    if let Some((image, _)) = image_of(&db::dumped_words().collect::<Vec<_>>()) {
        return (Role::Database, format!("mounted by the database image {image}"));
    }
    if let Some((image, _)) = image_of(&db::UNDUMPABLE_IMAGES) {
        return (Role::Database, format!("mounted by the database image {image} (copied with it stopped)"));
    }
    if let Some(t) =
        first_target(&|m| DATABASE_DIRS.iter().any(|d| m.target == *d || m.target.starts_with(&format!("{d}/"))))
    {
        return (Role::Database, format!("mounted at {t}, where database servers keep their data"));
    }
    if let Some((image, _)) = image_of(&[&db::REDIS_IMAGES[..], &db::CACHE_IMAGES[..]].concat()) {
        return (Role::Cache, format!("mounted by the cache image {image}"));
    }
    if let Some(t) = with_segment(&UPLOAD_STORES) {
        return (Role::Uploads, format!("mounted at {t}: a directory of what users upload"));
    }
    if let Some(t) = first_target(&|m| m.target.starts_with("/var/log")).or_else(|| with_segment(&["log", "logs"])) {
        return (Role::Logs, format!("mounted at {t}: logs"));
    }
    if let Some(t) = with_segment(&["node_modules", "vendor", ".venv", "site-packages", "bower_components"]) {
        return (Role::Dependencies, format!("mounted at {t}: installed dependencies, rebuilt by an install"));
    }
    if let Some(t) = with_segment(&["static", "staticfiles", "assets", "collectstatic", "packs"]) {
        return (Role::Static, format!("mounted at {t}: a build output, rebuilt by a build"));
    }
    if let Some(t) = with_segment(&["cache", ".cache"]) {
        return (Role::Cache, format!("mounted at {t}: a cache"));
    }
    let key_words: Vec<String> = key.to_lowercase().split(['-', '_', '.']).map(str::to_string).collect();
    if key_words.iter().any(|w| UPLOAD_STORES.contains(&w.as_str())) {
        return (Role::Uploads, format!("its name {key} names an upload store"));
    }
    if key_words.iter().any(|w| w == "cache") {
        return (Role::Cache, format!("its name {key} says cache"));
    }
    (Role::Data, "no rule matched: data, backed up (label it to say otherwise)".into())
}

/// Whether `target` is a runtime directory (sockets, pid files) rather than data.
fn run_dir_of(target: &str) -> bool {
    ["/run", "/var/run", "/tmp"].iter().any(|r| target == *r || target.starts_with(&format!("{r}/")))
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
                command: Vec::new(),
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

    /// Mounts as public applications' own compose files write them: (image, target, role).
    const REAL_STACKS: [(&str, &str, Role); 42] = [
        ("docker.elastic.co/elasticsearch/elasticsearch:8.15.0", "/usr/share/elasticsearch/data", Role::Database),
        ("rabbitmq:3-management", "/var/lib/rabbitmq", Role::Database),
        ("ghcr.io/mastodon/mastodon:v4.3", "/mastodon/public/system", Role::Uploads),
        ("postgres:14-alpine", "/var/lib/postgresql/data", Role::Database),
        ("redis:7-alpine", "/data", Role::Cache),
        ("ghcr.io/immich-app/immich-server:release", "/usr/src/app/upload", Role::Uploads),
        ("ghcr.io/immich-app/immich-machine-learning:release", "/cache", Role::Cache),
        ("tensorchord/pgvecto-rs:pg14-v0.2.0", "/var/lib/postgresql/data", Role::Database),
        ("nextcloud:29-apache", "/var/www/html", Role::Data),
        ("nextcloud:29-apache", "/var/www/html/data", Role::Data),
        ("mariadb:10.11", "/var/lib/mysql", Role::Database),
        ("ghcr.io/paperless-ngx/paperless-ngx:latest", "/usr/src/paperless/media", Role::Uploads),
        ("ghcr.io/paperless-ngx/paperless-ngx:latest", "/usr/src/paperless/data", Role::Data),
        ("ghcr.io/paperless-ngx/paperless-ngx:latest", "/usr/src/paperless/consume", Role::Data),
        ("mattermost/mattermost-team-edition:9", "/mattermost/data", Role::Data),
        ("mattermost/mattermost-team-edition:9", "/mattermost/logs", Role::Logs),
        ("mattermost/mattermost-team-edition:9", "/mattermost/plugins", Role::Data),
        ("gitea/gitea:1.22", "/data", Role::Data),
        ("registry.rocket.chat/rocketchat/rocket.chat:6", "/app/uploads", Role::Uploads),
        ("mongo:6", "/data/db", Role::Database),
        ("bitnami/mongodb:6.0", "/bitnami/mongodb", Role::Database),
        ("clickhouse/clickhouse-server:24", "/var/lib/clickhouse", Role::Database),
        ("ghcr.io/mailcow/mailcow-dockerized/dovecot", "/var/vmail", Role::Data),
        ("mariadb:10.5", "/var/run/mysqld/", Role::Cache),
        ("wordpress:6", "/var/www/html", Role::Data),
        ("wordpress:6", "/var/www/html/wp-content/uploads", Role::Uploads),
        ("ghost:5", "/var/lib/ghost/content", Role::Data),
        ("strapi/strapi", "/opt/app/public/uploads", Role::Uploads),
        ("ruby:3.3", "/app/public/assets", Role::Static),
        ("ruby:3.3", "/app/public", Role::Data),
        ("ruby:3.3", "/rails/storage", Role::Uploads),
        ("python:3.12", "/app/staticfiles", Role::Static),
        ("node:20", "/app/node_modules", Role::Dependencies),
        ("php:8.3-fpm", "/var/www/vendor", Role::Dependencies),
        ("nginx:1.27", "/var/log/nginx", Role::Logs),
        ("grafana/grafana:11", "/var/lib/grafana", Role::Data),
        ("jellyfin/jellyfin", "/cache", Role::Cache),
        ("matrixdotorg/synapse:latest", "/data/media_store", Role::Uploads),
        ("fireflyiii/core", "/var/www/html/storage/upload", Role::Uploads),
        ("valkey/valkey:8", "/data", Role::Cache),
        ("vaultwarden/server", "/data", Role::Data),
        ("nodebb/docker", "/usr/src/app/public/uploads", Role::Uploads),
    ];

    #[test]
    fn real_stacks_mounts_get_the_role_that_keeps_their_data() {
        for (image, target, want) in REAL_STACKS {
            let (s, m) = svc(image, target);
            let (got, why) = super::infer("v", &[(&s, &m)]);
            assert_eq!(got, want, "{image} at {target}: {why}");
            assert!(!why.is_empty());
        }
        assert_eq!(infer_role("rails-uploads", &[]), Role::Uploads, "the volume's name");
        assert_eq!(infer_role("vendor-data", &[]), Role::Data);
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

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

/// Path words that often name a build's output but as often an application's own files
/// (OpenProject's attachments in `/var/openproject/assets`, uploads under `public`): never
/// enough alone to call a mount regenerable.
const WEAK_BUILD_WORDS: [&str; 5] = ["static", "assets", "public", "packs", "dist"];

/// Whether a mount's path segments name the output of a known build tool, the strong evidence a
/// mount is regenerable: Django's `collectstatic` target (`staticfiles`, `collectstatic`),
/// Webpacker's `public/packs`, Next.js's `.next`.
fn build_output(segments: &[String]) -> bool {
    let has = |w: &str| segments.iter().any(|s| s == w);
    let pair = |a: &str, b: &str| segments.windows(2).any(|p| p[0] == a && p[1] == b);
    has("staticfiles") || has("collectstatic") || has(".next") || pair("public", "packs")
}

/// Where database images keep their data (an image whose name says nothing, e.g. pgvecto-rs).
const DATABASE_DIRS: [&str; 5] =
    ["/var/lib/postgresql", "/var/lib/mysql", "/var/lib/mariadb", "/var/lib/mongodb", "/data/db"];

/// Infers a role from the images that mount the volume and where they mount it.
pub fn infer_role(key: &str, mounts: &[(&Service, &Mount)]) -> Role {
    infer(key, mounts).0
}

/// [`infer_role`] with the reason, for `volumes` (`role_reason`). When unsure it says data,
/// which is backed up: regenerable needs strong evidence (a label, `node_modules` and the other
/// install directories of a known tool, a known build tool's output such as Django's
/// `staticfiles`), never a path word like `static`, `assets` or `public` alone; and an upload
/// store beats them.
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
    let logs = first_target(&|m| m.target.starts_with("/var/log")).or_else(|| with_segment(&["log", "logs"]));
    let dumped = image_of(&db::dumped_words().collect::<Vec<_>>());
    let undumped = image_of(&db::UNDUMPABLE_IMAGES);
    // Kafka's "logs" are its data: a directory its environment names in `*LOG_DIRS` is not logs.
    let data_logs = mounts.iter().any(|(s, m)| {
        s.environment.iter().any(|(k, v)| k.ends_with("LOG_DIRS") && v.split(',').any(|d| d.trim() == m.target))
    });
    let server_logs = logs.as_ref().filter(|_| !data_logs);
    if let (Some((image, _)), Some(t)) = (dumped.as_ref().or(undumped.as_ref()), server_logs) {
        return (Role::Logs, format!("mounted at {t} by the database image {image}: its logs, not its database"));
    }
    if let Some((image, _)) = dumped {
        return (Role::Database, format!("mounted by the database image {image}"));
    }
    if let Some((image, _)) = undumped {
        return (Role::Database, format!("mounted by the database image {image} (copied with its users stopped)"));
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
    if let Some(t) = logs {
        return (Role::Logs, format!("mounted at {t}: logs"));
    }
    if let Some(t) = with_segment(&["node_modules", "vendor", ".venv", "site-packages", "bower_components"]) {
        return (Role::Dependencies, format!("mounted at {t}: installed dependencies, rebuilt by an install"));
    }
    if let Some(t) = first_target(&|m| build_output(&segments(m))) {
        return (Role::Static, format!("mounted at {t}: a build tool's output, rebuilt by a build"));
    }
    if let Some(t) = with_segment(&["cache", ".cache"]) {
        return (Role::Cache, format!("mounted at {t}: a cache"));
    }
    infer_from_key(key, with_segment(&WEAK_BUILD_WORDS))
}

/// The last rules of [`infer`]: the volume's key, then data; `weak` is a mount whose path has a
/// word of [`WEAK_BUILD_WORDS`], said in the reason since it is backed up though it may be a
/// build output.
fn infer_from_key(key: &str, weak: Option<String>) -> (Role, String) {
    let key_words: Vec<String> = key.to_lowercase().split(['-', '_', '.']).map(str::to_string).collect();
    if key_words.iter().any(|w| UPLOAD_STORES.contains(&w.as_str())) {
        return (Role::Uploads, format!("its name {key} names an upload store"));
    }
    if key_words.iter().any(|w| w == "cache") {
        return (Role::Cache, format!("its name {key} says cache"));
    }
    if let Some(t) = weak {
        return (
            Role::Data,
            format!(
                "mounted at {t}: a word like static/assets/public alone does not prove a build output (OpenProject \
                 keeps attachments in /var/openproject/assets), so it is backed up; label it {ROLE_LABEL}: static \
                 if a build makes it"
            ),
        );
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

    /// Mounts as public applications' own compose files write them (a comment names the file the
    /// rows below it come from): (image, volume key, target, role, priority).
    const REAL_STACKS: [(&str, &str, &str, Role, Priority); 107] = [
        (
            "docker.elastic.co/elasticsearch/elasticsearch:8.15.0",
            "v",
            "/usr/share/elasticsearch/data",
            Role::Database,
            Priority::Critical,
        ),
        ("rabbitmq:3-management", "v", "/var/lib/rabbitmq", Role::Database, Priority::Critical),
        // mastodon/mastodon docker-compose.yml
        ("ghcr.io/mastodon/mastodon:v4.3", "v", "/mastodon/public/system", Role::Uploads, Priority::Critical),
        ("postgres:14-alpine", "v", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("redis:7-alpine", "v", "/data", Role::Cache, Priority::Important),
        // immich-app/immich docker/docker-compose.yml
        ("ghcr.io/immich-app/immich-server:release", "v", "/usr/src/app/upload", Role::Uploads, Priority::Critical),
        (
            "ghcr.io/immich-app/immich-machine-learning:release",
            "model-cache",
            "/cache",
            Role::Cache,
            Priority::Important,
        ),
        ("tensorchord/pgvecto-rs:pg14-v0.2.0", "v", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        // nextcloud/docker .examples
        ("nextcloud:29-apache", "v", "/var/www/html", Role::Data, Priority::Important),
        ("nextcloud:29-apache", "v", "/var/www/html/data", Role::Data, Priority::Important),
        ("mariadb:10.11", "v", "/var/lib/mysql", Role::Database, Priority::Critical),
        // paperless-ngx docker/compose
        (
            "ghcr.io/paperless-ngx/paperless-ngx:latest",
            "v",
            "/usr/src/paperless/media",
            Role::Uploads,
            Priority::Critical,
        ),
        ("ghcr.io/paperless-ngx/paperless-ngx:latest", "v", "/usr/src/paperless/data", Role::Data, Priority::Important),
        (
            "ghcr.io/paperless-ngx/paperless-ngx:latest",
            "v",
            "/usr/src/paperless/consume",
            Role::Data,
            Priority::Important,
        ),
        // mattermost/docker
        ("mattermost/mattermost-team-edition:9", "v", "/mattermost/data", Role::Data, Priority::Important),
        ("mattermost/mattermost-team-edition:9", "v", "/mattermost/logs", Role::Logs, Priority::Optional),
        ("mattermost/mattermost-team-edition:9", "v", "/mattermost/plugins", Role::Data, Priority::Important),
        // gitea docs
        ("gitea/gitea:1.22", "v", "/data", Role::Data, Priority::Important),
        // RocketChat/Docker.Official.Image
        ("registry.rocket.chat/rocketchat/rocket.chat:6", "v", "/app/uploads", Role::Uploads, Priority::Critical),
        ("mongo:6", "v", "/data/db", Role::Database, Priority::Critical),
        ("bitnami/mongodb:6.0", "v", "/bitnami/mongodb", Role::Database, Priority::Critical),
        ("clickhouse/clickhouse-server:24", "v", "/var/lib/clickhouse", Role::Database, Priority::Critical),
        // mailcow/mailcow-dockerized
        ("ghcr.io/mailcow/mailcow-dockerized/dovecot", "v", "/var/vmail", Role::Data, Priority::Important),
        ("mariadb:10.5", "v", "/var/run/mysqld/", Role::Cache, Priority::Important),
        // docker-library/wordpress
        ("wordpress:6", "v", "/var/www/html", Role::Data, Priority::Important),
        ("wordpress:6", "v", "/var/www/html/wp-content/uploads", Role::Uploads, Priority::Critical),
        // docker-library/ghost
        ("ghost:5", "v", "/var/lib/ghost/content", Role::Data, Priority::Important),
        // strapi
        ("strapi/strapi", "v", "/opt/app/public/uploads", Role::Uploads, Priority::Critical),
        // a Rails app: precompiled assets, but `assets` alone is no proof
        ("ruby:3.3", "v", "/app/public/assets", Role::Data, Priority::Important),
        ("ruby:3.3", "v", "/app/public", Role::Data, Priority::Important),
        ("ruby:3.3", "v", "/rails/storage", Role::Uploads, Priority::Critical),
        // Django collectstatic
        ("python:3.12", "v", "/app/staticfiles", Role::Static, Priority::Regenerable),
        ("node:20", "v", "/app/node_modules", Role::Dependencies, Priority::Regenerable),
        // composer
        ("php:8.3-fpm", "v", "/var/www/vendor", Role::Dependencies, Priority::Regenerable),
        ("nginx:1.27", "v", "/var/log/nginx", Role::Logs, Priority::Optional),
        ("grafana/grafana:11", "v", "/var/lib/grafana", Role::Data, Priority::Important),
        ("jellyfin/jellyfin", "v", "/cache", Role::Cache, Priority::Important),
        ("matrixdotorg/synapse:latest", "v", "/data/media_store", Role::Uploads, Priority::Critical),
        ("fireflyiii/core", "v", "/var/www/html/storage/upload", Role::Uploads, Priority::Critical),
        ("valkey/valkey:8", "v", "/data", Role::Cache, Priority::Important),
        ("vaultwarden/server", "v", "/data", Role::Data, Priority::Important),
        ("nodebb/docker", "v", "/usr/src/app/public/uploads", Role::Uploads, Priority::Critical),
        // opf/openproject-docker-compose docker-compose.yml
        ("postgres:13", "pgdata", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("openproject/openproject:14-slim", "opdata", "/var/openproject/assets", Role::Data, Priority::Important),
        // getsentry/self-hosted docker-compose.yml
        ("registry.gitlab.com/egos-tech/smtp", "sentry-smtp", "/var/spool/exim4", Role::Data, Priority::Important),
        ("registry.gitlab.com/egos-tech/smtp", "sentry-smtp-log", "/var/log/exim4", Role::Logs, Priority::Optional),
        ("valkey/valkey:8.1.9-alpine", "sentry-redis", "/data", Role::Cache, Priority::Important),
        ("postgres:14.24-bookworm", "sentry-postgres", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        (
            "clickhouse-self-hosted-local",
            "sentry-clickhouse",
            "/var/lib/clickhouse",
            Role::Database,
            Priority::Critical,
        ),
        (
            "clickhouse-self-hosted-local",
            "sentry-clickhouse-log",
            "/var/log/clickhouse-server",
            Role::Logs,
            Priority::Optional,
        ),
        ("confluentinc/cp-kafka:7.6.13", "sentry-kafka", "/var/lib/kafka/data", Role::Database, Priority::Critical),
        ("confluentinc/cp-kafka:7.6.13", "sentry-kafka-log", "/var/lib/kafka/log", Role::Logs, Priority::Optional),
        ("confluentinc/cp-kafka:7.6.13", "sentry-secrets", "/etc/kafka/secrets", Role::Database, Priority::Critical),
        ("chrislusf/seaweedfs:4.40_large_disk", "sentry-seaweedfs", "/data", Role::Database, Priority::Critical),
        ("getsentry/symbolicator:nightly", "sentry-symbolicator", "/data", Role::Data, Priority::Important),
        ("sentry-self-hosted-local", "sentry-data", "/data", Role::Data, Priority::Important),
        ("nginx:1.31.3-alpine", "sentry-nginx-cache", "/var/cache/nginx", Role::Cache, Priority::Important),
        ("nginx:1.31.3-alpine", "sentry-nginx-www", "/var/www", Role::Data, Priority::Important),
        ("getsentry/taskbroker:nightly", "sentry-taskbroker", "/opt/sqlite", Role::Data, Priority::Important),
        ("getsentry/vroom:nightly", "sentry-vroom", "/var/vroom/sentry-profiles", Role::Data, Priority::Important),
        // zulip/docker-zulip compose.yaml
        ("zulip/zulip-postgresql:14", "postgresql-14", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("rabbitmq:4.2", "rabbitmq", "/var/lib/rabbitmq", Role::Database, Priority::Critical),
        ("redis:alpine", "redis", "/data", Role::Cache, Priority::Important),
        ("ghcr.io/zulip/zulip-server:12.1-0", "zulip", "/data", Role::Data, Priority::Important),
        // saleor/saleor-platform docker-compose.yml
        ("ghcr.io/saleor/saleor:3.22", "saleor-media", "/app/media", Role::Uploads, Priority::Critical),
        ("library/postgres:15-alpine", "saleor-db", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("valkey/valkey:8.1-alpine", "saleor-cache", "/data", Role::Cache, Priority::Important),
        // makeplane/plane deployments/cli/community/docker-compose.yml
        ("makeplane/plane-backend:stable", "logs_api", "/code/plane/logs", Role::Logs, Priority::Optional),
        ("postgres:15.7-alpine", "pgdata", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("valkey/valkey:7.2.11-alpine", "redisdata", "/data", Role::Cache, Priority::Important),
        ("rabbitmq:3.13.6-management-alpine", "rabbitmq_data", "/var/lib/rabbitmq", Role::Database, Priority::Critical),
        ("minio/minio:latest", "uploads", "/export", Role::Database, Priority::Critical),
        ("makeplane/plane-proxy:stable", "proxy_config", "/config", Role::Data, Priority::Important),
        ("makeplane/plane-proxy:stable", "proxy_data", "/data", Role::Data, Priority::Important),
        // n8n-io/n8n-hosting docker-compose/withPostgresAndWorker/docker-compose.yml
        ("postgres:16", "db_storage", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("redis:7-alpine", "redis_storage", "/data", Role::Cache, Priority::Important),
        ("docker.n8n.io/n8nio/n8n:1", "n8n_storage", "/home/node/.n8n", Role::Uploads, Priority::Critical),
        // zammad/zammad-docker-compose docker-compose.yml
        ("ghcr.io/zammad/zammad:7.1.1-0035", "zammad-backup", "/var/tmp/zammad", Role::Data, Priority::Important),
        (
            "ghcr.io/zammad/zammad:7.1.1-0035",
            "zammad-storage",
            "/opt/zammad/storage",
            Role::Uploads,
            Priority::Critical,
        ),
        (
            "elasticsearch:9.4.3",
            "elasticsearch-data",
            "/usr/share/elasticsearch/data",
            Role::Database,
            Priority::Critical,
        ),
        ("postgres:17.10-alpine", "postgresql-data", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        ("redis:8.8-alpine", "redis-data", "/data", Role::Cache, Priority::Important),
        // jitsi/docker-jitsi-meet docker-compose.yml
        ("ghcr.io/jitsi/web:unstable", "web", "/config", Role::Data, Priority::Important),
        ("ghcr.io/jitsi/web:unstable", "web", "/storage", Role::Uploads, Priority::Critical),
        (
            "ghcr.io/jitsi/web:unstable",
            "web-load-test",
            "/usr/share/jitsi-meet/load-test",
            Role::Data,
            Priority::Important,
        ),
        ("ghcr.io/jitsi/prosody:unstable", "prosody", "/var/lib/prosody", Role::Data, Priority::Important),
        (
            "ghcr.io/jitsi/prosody:unstable",
            "prosody-plugins-custom",
            "/prosody-plugins-custom",
            Role::Data,
            Priority::Important,
        ),
        ("ghcr.io/jitsi/jvb:unstable", "jvb", "/config", Role::Data, Priority::Important),
        // Kong/docker-kong compose/docker-compose.yml
        ("kong:latest", "kong_prefix_vol", "/var/run/kong", Role::Cache, Priority::Important),
        ("kong:latest", "kong_tmp_vol", "/tmp", Role::Cache, Priority::Important),
        ("postgres:9.5", "kong_data", "/var/lib/postgresql/data", Role::Database, Priority::Critical),
        // netbox-community/netbox-docker docker-compose.yml
        (
            "docker.io/netboxcommunity/netbox:v4.1-3.0.2",
            "netbox-media-files",
            "/opt/netbox/netbox/media",
            Role::Uploads,
            Priority::Critical,
        ),
        (
            "docker.io/netboxcommunity/netbox:v4.1-3.0.2",
            "netbox-reports-files",
            "/opt/netbox/netbox/reports",
            Role::Uploads,
            Priority::Critical,
        ),
        (
            "docker.io/netboxcommunity/netbox:v4.1-3.0.2",
            "netbox-scripts-files",
            "/opt/netbox/netbox/scripts",
            Role::Uploads,
            Priority::Critical,
        ),
        ("docker.io/valkey/valkey:8.0-alpine", "netbox-redis-cache-data", "/data", Role::Cache, Priority::Important),
        // appwrite/appwrite docker-compose.yml
        ("appwrite/appwrite:latest", "appwrite-uploads", "/storage/uploads", Role::Uploads, Priority::Critical),
        ("appwrite/appwrite:latest", "appwrite-cache", "/storage/cache", Role::Uploads, Priority::Critical),
        ("appwrite/appwrite:latest", "appwrite-config", "/storage/config", Role::Uploads, Priority::Critical),
        (
            "appwrite/appwrite:latest",
            "appwrite-certificates",
            "/storage/certificates",
            Role::Uploads,
            Priority::Critical,
        ),
        ("appwrite/appwrite:latest", "appwrite-functions", "/storage/functions", Role::Uploads, Priority::Critical),
        ("appwrite/appwrite:latest", "appwrite-builds", "/storage/builds", Role::Uploads, Priority::Critical),
        ("appwrite/embedding:0.1.0", "appwrite-models", "/home/embedder/models", Role::Data, Priority::Important),
        (
            "appwrite/postgres:0.1.0",
            "appwrite-postgresql",
            "/var/lib/postgresql/18/data",
            Role::Database,
            Priority::Critical,
        ),
        ("mariadb:10.11", "appwrite-mariadb", "/var/lib/mysql", Role::Database, Priority::Critical),
        ("mongo:8.2.5", "appwrite-mongodb", "/data/db", Role::Database, Priority::Critical),
        ("mongo:8.2.5", "appwrite-mongodb-keyfile", "/data/keyfile", Role::Database, Priority::Critical),
        ("redis:7.4.7-alpine", "appwrite-redis", "/data", Role::Cache, Priority::Important),
    ];

    #[test]
    fn real_stacks_mounts_get_the_role_that_keeps_their_data() {
        let mut wrong = Vec::new();
        for (image, key, target, want, priority) in REAL_STACKS {
            let (s, m) = svc(image, target);
            let (got, why) = super::infer(key, &[(&s, &m)]);
            if (got, got.default_priority()) != (want, priority) || why.is_empty() {
                wrong.push(format!("{image} at {target} ({key}): {got:?} {:?}: {why}", got.default_priority()));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert_eq!(infer_role("rails-uploads", &[]), Role::Uploads, "the volume's name");
        assert_eq!(infer_role("vendor-data", &[]), Role::Data);
    }

    /// Stores no engine of the tool dumps, by image, copied with their users stopped; their log
    /// directories are logs, unless the environment names them as the data (Kafka's log dirs).
    #[test]
    fn undumpable_stores_are_known_by_image_and_their_logs_are_not_their_database() {
        for (image, target) in [
            ("confluentinc/cp-zookeeper:7.6", "/var/lib/zookeeper/data"),
            ("bitnami/kafka:3.7", "/bitnami/kafka"),
            ("minio/minio:RELEASE.2024-01-01T00-00-00Z", "/data"),
            ("chrislusf/seaweedfs", "/data"),
            ("prom/prometheus:v2.53", "/prometheus"),
            ("grafana/loki:3.0", "/loki"),
            ("opensearchproject/opensearch:2", "/usr/share/opensearch/data"),
            ("influxdb:2.7", "/var/lib/influxdb2"),
            ("quay.io/coreos/etcd:v3.5", "/etcd-data"),
            ("cassandra:5", "/var/lib/cassandra"),
            ("couchdb:3", "/opt/couchdb/data"),
            ("getmeili/meilisearch:v1.9", "/meili_data"),
            ("victoriametrics/victoria-metrics:v1.102", "/victoria-metrics-data"),
        ] {
            let (s, m) = svc(image, target);
            let (role, why) = super::infer("v", &[(&s, &m)]);
            assert_eq!(role, Role::Database, "{image} at {target}: {why}");
            assert!(why.contains("stopped"), "{why}");
        }
        assert_eq!(
            infer("docker.elastic.co/elasticsearch/elasticsearch:8", "/usr/share/elasticsearch/logs"),
            Role::Logs
        );
        assert_eq!(infer("cassandra:5", "/var/log/cassandra"), Role::Logs);
        let (mut s, m) = svc("bitnami/kafka:3.7", "/var/lib/kafka/logs");
        assert_eq!(super::infer("v", &[(&s, &m)]).0, Role::Logs);
        s.environment.insert("KAFKA_CFG_LOG_DIRS".into(), "/var/lib/kafka/logs".into());
        assert_eq!(super::infer("v", &[(&s, &m)]).0, Role::Database, "its log dirs are its data");
    }

    #[test]
    fn a_path_word_alone_never_makes_a_mount_regenerable() {
        for target in ["/var/openproject/assets", "/app/static", "/srv/public", "/app/public/assets", "/app/dist"] {
            let (s, m) = svc("someapp:1", target);
            let (role, why) = super::infer("v", &[(&s, &m)]);
            assert_eq!(role, Role::Data, "{target}");
            assert_ne!(role.default_priority(), Priority::Regenerable);
            assert!(why.contains("backed up") && why.contains(ROLE_LABEL), "{why}");
        }
        for target in ["/app/staticfiles", "/app/public/packs", "/app/.next"] {
            assert_eq!(infer("someapp:1", target).default_priority(), Priority::Regenerable, "{target}");
        }
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

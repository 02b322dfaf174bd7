//! The database services' kinds as the model knows them: which engine made a service's dumps
//! (and so how they are checked and loaded), and the names a database may have here. The engine
//! layer drives them; the archive format records them.

use serde::{Deserialize, Serialize};

/// How a database service's dumps were made, and so how they are checked and loaded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbEngine {
    /// Plain-SQL `pg_dump` per database, `pg_dumpall --globals-only` for the roles.
    #[default]
    Postgres,
    /// `mariadb-dump` per database, `--system=users` for users and grants.
    Mariadb,
    /// The same with MySQL's `mysqldump` and `mysql`, without users (mysqldump cannot dump them).
    Mysql,
    /// The service's own `xtask.dump` command: one opaque dump, loaded by `xtask.load`.
    Hook,
}

impl DbEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            DbEngine::Postgres => "postgres",
            DbEngine::Mariadb => "mariadb",
            DbEngine::Mysql => "mysql",
            DbEngine::Hook => "hook",
        }
    }

    /// The entry of the cluster-wide dump (roles, users and grants), if the engine has one.
    pub fn globals_file(self) -> Option<&'static str> {
        match self {
            DbEngine::Postgres => Some("globals.sql"),
            DbEngine::Mariadb => Some("users.sql"),
            DbEngine::Mysql | DbEngine::Hook => None,
        }
    }
}

/// A database or role name the tool archives: `[A-Za-z0-9_][A-Za-z0-9_.-]*`, at most 63 bytes
/// (PostgreSQL's limit); no space, quote, `=` or backslash that a client could reinterpret.
pub fn is_db_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Words in an image's base name (`ghcr.io/immich-app/postgres:14` -> `postgres`) that say which
/// engine dumps it: the one list the role inference (model/roles.rs) and the engine detection
/// (engine/db) read. Checked in order (MariaDB before MySQL).
pub const DUMPED_IMAGES: [(&str, DbEngine); 7] = [
    ("postgres", DbEngine::Postgres),
    ("postgis", DbEngine::Postgres),
    ("timescaledb", DbEngine::Postgres),
    ("pgvecto", DbEngine::Postgres),
    ("mariadb", DbEngine::Mariadb),
    ("mysql", DbEngine::Mysql),
    ("percona", DbEngine::Mysql),
];

/// Database images no engine of the tool dumps (matched as words in the image's base name, like
/// [`DUMPED_IMAGES`]): document stores, brokers and their coordinators, object stores, time
/// series, search and vector indexes. Their volumes are copied with the servers that use them
/// stopped, by `backup` and by restore's safety backup alike (or reported NOT PROTECTED under
/// `--no-stop`); a log directory of such a server is not its database (model/roles.rs).
pub const UNDUMPABLE_IMAGES: [&str; 30] = [
    "mongo",
    "clickhouse",
    "elasticsearch",
    "opensearch",
    "influxdb",
    "rabbitmq",
    "cassandra",
    "scylla",
    "couchdb",
    "couchbase",
    "neo4j",
    "arangodb",
    "kafka",
    "redpanda",
    "zookeeper",
    "pulsar",
    "minio",
    "seaweedfs",
    "garage",
    "prometheus",
    "victoria-metrics",
    "loki",
    "tempo",
    "mimir",
    "etcd",
    "meilisearch",
    "typesense",
    "qdrant",
    "weaviate",
    "solr",
];

/// Redis and the servers that speak its protocol and its `SAVE` (saved before their volume is
/// copied).
pub const REDIS_IMAGES: [&str; 3] = ["redis", "valkey", "keydb"];

/// Caches whose volumes hold nothing to keep (beside the Redis kin).
pub const CACHE_IMAGES: [&str; 2] = ["memcached", "dragonfly"];

/// The base name of an image, lower case: no registry, path, tag or digest.
pub fn image_base(image: &str) -> String {
    let image = image.to_lowercase();
    image.rsplit('/').next().unwrap_or_default().split([':', '@']).next().unwrap_or_default().to_string()
}

/// The engine whose dumps an image's name promises, if any.
pub fn dumped_by(image: &str) -> Option<DbEngine> {
    let base = image_base(image);
    DUMPED_IMAGES.iter().find(|(word, _)| base.contains(word)).map(|(_, e)| *e)
}

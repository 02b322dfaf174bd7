//! The database services' kinds as the model knows them: which engine made a service's dumps
//! (and so how they are checked and loaded), and the names a database may have here. Each
//! engine is one [`Record`] of data in a file of its own here (its image words, dump file names,
//! dump dialect, table names); its steps are its driver's (`tasks/engines/`). The engine layer
//! logs in with it; the archive format records it.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::model::compose::Service;

pub use dumpscan::Dialect;
pub use login::{login, value_or_file, Login, Secret};

pub mod hook;
mod login;
pub mod mariadb;
pub mod postgres;

/// How a database service's dumps were made, and so how they are checked and loaded: the name
/// archives record and the label `xtask.engine` says (its [`Record`] says the rest).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbEngine {
    #[default]
    Postgres,
    Mariadb,
    Mysql,
    Hook,
}

/// What the tool knows of one engine, as data: everything but its steps.
pub struct Record {
    pub engine: DbEngine,
    /// Its name in archives and in the label `xtask.engine` (serde's name of the variant).
    pub name: &'static str,
    /// Words in an image's base name that say this engine dumps it (see [`dumped_by`]).
    pub images: &'static [&'static str],
    /// The entry of the cluster-wide dump (roles, users and grants), if the engine has one.
    pub globals_file: Option<&'static str>,
    /// `Some(name)`: one opaque dump of that name per service, not one per database.
    pub single_dump: Option<&'static str>,
    /// How its dumps are lexed by the dump checker.
    pub dialect: Dialect,
    /// The program whose completion trailer ends each dump (for messages).
    pub dump_tool: &'static str,
    /// What the globals entry and each dump are, for the metadata's `entries`.
    pub globals_what: &'static str,
    pub each_what: &'static str,
    /// What the cluster-wide dump holds, in a plan's words.
    pub globals_words: &'static str,
    /// A table name as its dump checker reports it (the archive's grammar checks every one).
    pub is_table: fn(&str) -> bool,
    /// Fills `login` (service and engine set) by the image's conventions: user, password,
    /// commands; an error says what the service's environment lacks.
    pub fill_login: fn(&Service, &mut Login) -> Result<()>,
    /// The environment variable its client reads the password from.
    pub password_var: &'static str,
    /// The OS user its clients run as inside the container (None: the image's own).
    pub os_user: Option<&'static str>,
}

/// Every engine, once, in detection order (MariaDB before MySQL).
pub const RECORDS: [&Record; 4] = [&postgres::RECORD, &mariadb::MARIADB, &mariadb::MYSQL, &hook::RECORD];

impl DbEngine {
    /// The engine's record.
    pub fn record(self) -> &'static Record {
        RECORDS.iter().copied().find(|r| r.engine == self).expect("every DbEngine has a record in RECORDS")
    }

    pub fn as_str(self) -> &'static str {
        self.record().name
    }

    /// The entry of the cluster-wide dump (roles, users and grants), if the engine has one.
    pub fn globals_file(self) -> Option<&'static str> {
        self.record().globals_file
    }
}

impl Record {
    /// The file name of the dump of `database` (under `databases/<service>/`).
    pub fn dump_file(&self, database: &str) -> String {
        match self.single_dump {
            Some(name) => name.to_string(),
            None => format!("{database}.sql"),
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

/// Database images no engine of the tool dumps (matched as words in the image's base name, like
/// the dumped engines' words): document stores, brokers and their coordinators, object stores, time
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

/// Every word of [`Record::images`], in detection order: the one list the role inference
/// (model/roles.rs) and the engine detection (engine/db) read.
pub fn dumped_words() -> impl Iterator<Item = &'static str> {
    RECORDS.iter().flat_map(|r| r.images.iter().copied())
}

/// The engine whose dumps an image's name promises, if any (the first word found, in
/// [`RECORDS`]' order).
pub fn dumped_by(image: &str) -> Option<DbEngine> {
    let base = image_base(image);
    RECORDS.iter().find(|r| r.images.iter().any(|w| base.contains(w))).map(|r| r.engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_is_its_engines_and_named_as_archives_record_it() {
        for r in RECORDS {
            assert_eq!(r.engine.record().name, r.name);
            assert_eq!(serde_json::to_string(&r.engine).unwrap(), format!("\"{}\"", r.name));
        }
        let words: Vec<&str> = dumped_words().collect();
        assert_eq!(words, ["postgres", "postgis", "timescaledb", "pgvecto", "mariadb", "mysql", "percona"]);
    }
}

//! What an archive says about itself: `metadata.json` (format, project, when, what each volume,
//! bind and database dump is) and the entry names of the format; read only by the strict
//! grammar, from the first entry of one open file.

use super::*;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

pub const FORMAT: &str = "xtask-backup";

/// Version 3: bind mounts under `binds/<id>/` (a volume entry with its host path). Version 2:
/// every database service under `databases/<service>/` (version 1 had one PostgreSQL server
/// under `postgres/`). Readers take all three.
pub const FORMAT_VERSION: u32 = 4;
/// The first format version whose archives carry the index (archive/index.rs).
pub const INDEXED_SINCE: u32 = 4;

pub const METADATA: &str = "metadata.json";

pub const CHECKSUMS: &str = "SHA256SUMS";
/// The index's name (format version 4 and later; archive/index.rs): the entry before `SHA256SUMS`.
pub const INDEX: &str = "index.jsonl";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub format: String,
    pub format_version: u32,
    /// "full" or "db".
    pub kind: String,
    pub project: String,
    pub compose_files: Vec<String>,
    /// SHA-256 of `docker compose config --format json` at backup time.
    pub model_sha256: String,
    pub environment: Option<String>,
    /// UTC, RFC 3339.
    pub created_at: String,
    pub tool_version: String,
    pub tag: Option<String>,
    /// What every entry (or entry prefix) of the archive is.
    pub entries: Vec<EntryInfo>,
    /// Version 1's one PostgreSQL server; moved into `databases` when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<DbInfo>,
    /// Every dumped database service (version 2).
    #[serde(default)]
    pub databases: Vec<DbInfo>,
    pub volumes: Vec<VolumeInfo>,
    pub skipped: Vec<Skipped>,
    /// The project directory at backup time (absent in older archives): a bind inside it goes
    /// back to the same place inside today's project directory, wherever the checkout moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryInfo {
    pub path: String,
    pub what: String,
}

/// One database service's dumps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DbInfo {
    pub service: String,
    #[serde(default)]
    pub engine: DbEngine,
    /// The database volume the dump stands for.
    pub volume: Option<String>,
    pub server_version: String,
    pub user: String,
    /// Roles (PostgreSQL) or users and grants (MariaDB/MySQL); none for a hook.
    #[serde(default)]
    pub globals_entry: Option<String>,
    pub databases: Vec<DbDump>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DbDump {
    pub name: String,
    pub entry: String,
    /// Rows per table in the dump (`"schema"."table"` or `` `table` `` -> rows).
    pub tables: BTreeMap<String, u64>,
    /// What the database itself had, which its dump does not carry (absent in archives made
    /// before this field, and for a hook: a restore then keeps today's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<DbProperties>,
}

/// A database's own properties beyond its dump: PostgreSQL's owner, connection limit, comment,
/// privileges on the database and settings; MariaDB/MySQL's default character set and collation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DbProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The privileges on the database (`datacl`); absent: those of a new database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<DbGrant>>,
    /// `ALTER DATABASE … SET` and `ALTER ROLE … IN DATABASE … SET`, in the server's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings: Vec<DbSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
}

/// One privilege on a database: `CONNECT`, `CREATE` or `TEMPORARY`, to a role (absent: PUBLIC).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub privilege: String,
    #[serde(default)]
    pub grantable: bool,
}

/// One setting of a database (`role` absent) or of a role in it: a parameter's name and its
/// value as the server stores it (`name=value` in `pg_db_role_setting`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbSetting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub name: String,
    pub value: String,
}

impl DbInfo {
    /// Where its entries live: `databases/<service>/` (version 2), `postgres/` (version 1).
    pub fn prefix(&self, format_version: u32) -> String {
        if format_version == 1 {
            "postgres/".into()
        } else {
            format!("databases/{}/", self.service)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeInfo {
    pub key: String,
    pub name: String,
    pub role: String,
    pub priority: String,
    pub driver: String,
    pub labels: BTreeMap<String, String>,
    /// The entry prefix, `volumes/<name>/`.
    pub entry: String,
    /// How the copy was made consistent: "live", "stopped", or "redis-save".
    pub consistency: String,
    /// Its size on disk when it was backed up (what a restore must have room for); absent in
    /// archives made before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// A bind mount's host path (version 3): the entry is then `binds/<id>/`, the name
    /// `binds/<id>` and the key the host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// A bind's mounts when it was backed up: which service bound it where. A restore writes the
    /// bind only into the bind this stack's compose file declares for one of them (absent in
    /// archives made before this field: then the compose file must bind exactly `bind`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bind_mounts: Vec<BindMount>,
    /// Pushed to a restic repository as a file tree (docs/archive-format.md, "In a restic
    /// repository"): the absolute path its files have in the archive's trees snapshot. Its
    /// entries are then not in the archive's own tar stream; a reader of the repository puts
    /// them under `entry` (a local archive never has this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
}

/// One service's mount of a bind, as recorded in an archive.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BindMount {
    pub service: String,
    pub target: String,
}

impl VolumeInfo {
    /// The recorded mounts as (service, target) pairs.
    pub fn bind_uses(&self) -> Vec<(String, String)> {
        self.bind_mounts.iter().map(|m| (m.service.clone(), m.target.clone())).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

impl Metadata {
    /// Metadata of a full archive of `project` holding `volumes` (compose key, name), for tests.
    #[cfg(test)]
    pub fn sample(project: &str, volumes: &[(&str, &str)]) -> Metadata {
        Metadata {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            kind: "full".into(),
            project: project.into(),
            compose_files: vec![],
            model_sha256: String::new(),
            environment: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            tool_version: "test".into(),
            tag: None,
            entries: vec![],
            postgres: None,
            databases: vec![],
            volumes: volumes
                .iter()
                .map(|(key, name)| VolumeInfo {
                    key: key.to_string(),
                    name: name.to_string(),
                    role: "uploads".into(),
                    priority: "critical".into(),
                    driver: "local".into(),
                    labels: BTreeMap::new(),
                    entry: volume_prefix(name),
                    consistency: "live".into(),
                    size_bytes: None,
                    bind: None,
                    bind_mounts: vec![],
                    tree: None,
                })
                .collect(),
            skipped: vec![],
            project_dir: None,
        }
    }

    /// The dump entries the metadata names, with their engine: per service its cluster-wide
    /// dump, then one per database.
    pub fn dump_entries(&self) -> Vec<(String, DbEngine)> {
        let mut out = Vec::new();
        for db in &self.databases {
            out.extend(db.globals_entry.iter().map(|g| (g.clone(), db.engine)));
            out.extend(db.databases.iter().map(|d| (d.entry.clone(), db.engine)));
        }
        out
    }

    /// The database service `service` dumped, if any.
    pub fn database(&self, service: &str) -> Option<&DbInfo> {
        self.databases.iter().find(|d| d.service == service)
    }
}

pub fn volume_prefix(name: &str) -> String {
    if name.starts_with(BINDS) {
        format!("{name}/")
    } else {
        format!("volumes/{name}/")
    }
}

/// Where bind mounts live in an archive: `binds/<id>/`.
pub const BINDS: &str = "binds/";

/// The archive name of the bind with id `id`.
pub fn bind_name(id: &str) -> String {
    format!("{BINDS}{id}")
}

/// Reads only the first entry, `metadata.json`, by the grammar (bounded, checked).
pub fn read_metadata_from(src: &Source) -> Result<Metadata> {
    let mut archive = src.head()?;
    let mut entries = archive.entries().context("not a zstd- or gzip-compressed tar archive")?;
    let mut first = entries
        .next()
        .context("the archive is empty")?
        .context("its first entry cannot be read (a damaged archive, a wrong key or a failed download)")?;
    grammar::Grammar::new(false).check(&mut first)?;
    let mut text = Vec::new();
    first.read_to_end(&mut text).context("read metadata.json")?;
    let meta = parse_metadata(&text)?;
    grammar::check_metadata(&meta)?;
    Ok(src.as_read(meta))
}

pub fn parse_metadata(text: &[u8]) -> Result<Metadata> {
    #[derive(Deserialize)]
    struct Head {
        format: Option<String>,
        format_version: Option<u32>,
    }
    let head: Head = serde_json::from_slice(text).context("metadata.json is not valid JSON")?;
    if head.format.as_deref() != Some(FORMAT) {
        bail!("metadata.json: format is {:?}, expected {FORMAT:?}: not an xtask archive", head.format);
    }
    match head.format_version {
        Some(1 | 2 | 3 | FORMAT_VERSION) => {}
        Some(v) if v > FORMAT_VERSION => bail!(
            "metadata.json: archive format version {v} is newer than this tool understands ({FORMAT_VERSION}); update the xtask (git pull) and retry"
        ),
        v => bail!("metadata.json: unknown archive format version {v:?}"),
    }
    let mut meta: Metadata = serde_json::from_slice(text)
        .with_context(|| format!("metadata.json does not match format version {}", head.format_version.unwrap_or(0)))?;
    match meta.format_version {
        1 => {
            if !meta.databases.is_empty() {
                bail!("metadata.json: format version 1 has no `databases` key");
            }
            meta.databases.extend(meta.postgres.take());
        }
        _ if meta.postgres.is_some() => bail!("metadata.json: the `postgres` key belongs to format version 1 only"),
        _ => {}
    }
    if meta.format_version < 3 && meta.volumes.iter().any(|v| v.bind.is_some()) {
        bail!("metadata.json: bind mounts came with format version 3; this archive says {}", meta.format_version);
    }
    Ok(meta)
}

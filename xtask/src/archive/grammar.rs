//! The strict grammar of an archive (docs/archive-format.md, "Grammar"): which entries may stand
//! where, with which names, types and sizes, and which names the metadata may hold. One checker,
//! [`Grammar`], is fed every entry in order by `verify` and again by every extraction, so what
//! restore writes is judged by exactly the rules `verify` applied. An archive is untrusted input:
//! any entry outside the grammar is refused with its name and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::{Metadata, CHECKSUMS, METADATA};

/// The most `metadata.json` or `SHA256SUMS` may hold; larger ones are refused unread.
pub const MAX_TEXT_ENTRY: u64 = 16 << 20;
/// Longest entry name (bytes) and longest name component.
const MAX_NAME: usize = 4096;
const MAX_COMPONENT: usize = 255;

/// Top-level names in a volume that restore uses while it swaps content in (named by the
/// engine's staging): an archive may not hold them; backups leave them out.
pub use crate::engine::staging::RESERVED;

/// What an entry is, from its parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

/// Where an entry belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Metadata,
    Checksums,
    /// The index (format version 4 and later), right before `SHA256SUMS`.
    Index,
    /// A database dump named by the metadata (`databases/<service>/<name>.sql`, or version 1's
    /// `postgres/<name>.sql`), made by `engine`.
    Dump {
        engine: super::DbEngine,
    },
    /// Inside volume `volume`; `rel` is the path below its root (empty for the root itself).
    Volume {
        volume: String,
        rel: Vec<u8>,
    },
}

/// One entry as the grammar accepted it: everything an extraction needs, from the parsed
/// header only (never raw header bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The canonical name, without a directory's trailing `/`.
    pub name: Vec<u8>,
    pub place: Place,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Symlink target (as stored) or hard link target (canonical archive name).
    pub link: Option<Vec<u8>>,
}

impl Checked {
    /// A fingerprint of the entry's facts and (for files) its content digest: what `verify`
    /// records per entry and every extraction compares, so restore writes exactly what was verified.
    pub fn fingerprint(&self, content: Option<&[u8; 32]>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(&self.name);
        h.update([0, self.kind as u8]);
        for n in [self.size, u64::from(self.mode), self.uid, self.gid, self.mtime] {
            h.update(n.to_le_bytes());
        }
        h.update(self.link.as_deref().unwrap_or(b"\0none"));
        h.update(content.map(|c| &c[..]).unwrap_or(b"\0no content"));
        h.finalize().into()
    }
}

/// The state of one pass over an archive's entries.
#[derive(Debug, Default)]
pub struct Grammar {
    /// Allow character and block devices and FIFOs in volumes (`--allow-special-files`).
    pub allow_special: bool,
    index: u64,
    after_sums: bool,
    /// The metadata's format version carries an index; whether it came.
    indexed: bool,
    index_seen: bool,
    volumes: BTreeSet<String>,
    dumps: BTreeMap<String, super::DbEngine>,
    /// Every name seen (canonical), to refuse duplicates, with what it is (directory, regular
    /// file): kept as keyed hashes, not the names, so memory stays small for many entries.
    names: Names,
    /// Volumes whose root entry came.
    pub started: BTreeSet<String>,
}

/// A set of names with what each is, as keyed 62-bit SipHash values with the kind in the low
/// two bits, under keys drawn at random for this pass (std's `RandomState`): an archive's author
/// cannot aim at a collision, and a name costs about 9 bytes instead of itself (about 400 bytes
/// an entry in all before, with the tree nodes and the copies).
#[derive(Debug, Default)]
struct Names {
    keys: std::collections::hash_map::RandomState,
    set: std::collections::HashSet<u64, BuildIdentity>,
}

impl Names {
    const OTHER: u64 = 0;
    const DIR: u64 = 1;
    const FILE: u64 = 2;

    fn key(&self, name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.keys.hash_one(name) & !3
    }

    /// Records `name` as `what`; false if it was there already (as anything).
    fn insert(&mut self, name: &[u8], what: u64) -> bool {
        let key = self.key(name);
        if [Self::OTHER, Self::DIR, Self::FILE].iter().any(|k| self.set.contains(&(key | k))) {
            return false;
        }
        self.set.insert(key | what)
    }

    fn is(&self, name: &[u8], what: u64) -> bool {
        self.set.contains(&(self.key(name) | what))
    }
}

/// The keys are hashes already: the map uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
struct BuildIdentity;

impl std::hash::BuildHasher for BuildIdentity {
    type Hasher = Identity;
    fn build_hasher(&self) -> Identity {
        Identity(0)
    }
}

#[derive(Debug, Default)]
struct Identity(u64);

impl std::hash::Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The name as text for messages (never used as a path).
pub fn shown(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name))
}

impl Grammar {
    pub fn new(allow_special: bool) -> Grammar {
        Grammar { allow_special, ..Grammar::default() }
    }

    /// Learns which volumes and dumps may follow, once `metadata.json` has been read and checked.
    pub fn expect(&mut self, meta: &Metadata) {
        self.volumes = meta.volumes.iter().map(|v| v.name.clone()).collect();
        self.dumps = meta.dump_entries().into_iter().collect();
        self.indexed = meta.format_version >= super::INDEXED_SINCE;
    }

    /// Checks the next entry; the error names the entry and the rule it breaks.
    pub fn check<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Checked> {
        let name = entry.path_bytes().into_owned();
        let res = self.check_inner(entry, &name);
        self.index += 1;
        match res {
            Ok(c) => Ok(c),
            Err(e) => bail!("entry {}: {e}", shown(&name)),
        }
    }

    fn check_inner<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> Result<Checked> {
        if entry.pax_extensions()?.is_some() {
            bail!("has a PAX extended header; this tool never writes one (it could give readers another size or name)");
        }
        let h = entry.header();
        let kind = kind_of(h.entry_type())?;
        let size = entry.size();
        if kind != Kind::File && size != 0 {
            bail!("a {kind:?} entry carries {size} bytes of data; only regular files may");
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        // An empty owner, mode or time field (this tool's own files have no owner) reads as 0.
        let (uid, gid, mtime) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0), h.mtime().unwrap_or(0));
        let mode = h.mode().unwrap_or(0) & 0o7777;
        let name = canonical(raw, kind == Kind::Dir)?.to_vec();
        let place = self.place_once(&name, kind, size, link.as_deref())?;
        Ok(Checked { name, place, kind, size, mode, uid, gid, mtime, link })
    }

    /// An entry as an index lists it (name canonical, its facts), by the same rules as one read
    /// from the stream: in its place, of an allowed type, its parent an earlier directory, a hard
    /// link to an earlier file of its volume, named once. The index's own entries (metadata
    /// first) come in the stream's order, so a listing is judged as the stream would be.
    pub fn check_listed(&mut self, name: &[u8], kind: Kind, size: u64, link: Option<&[u8]>) -> Result<Place> {
        let res = self.place_once(name, kind, size, link);
        self.index += 1;
        res.with_context(|| format!("entry {}", shown(name)))
    }

    fn place_once(&mut self, name: &[u8], kind: Kind, size: u64, link: Option<&[u8]>) -> Result<Place> {
        let place = self.place(name, kind, size, link)?;
        let what = match kind {
            Kind::Dir => Names::DIR,
            Kind::File => Names::FILE,
            _ => Names::OTHER,
        };
        if !self.names.insert(name, what) {
            bail!("appears twice; every name may appear once");
        }
        Ok(place)
    }

    fn place(&mut self, name: &[u8], kind: Kind, size: u64, link: Option<&[u8]>) -> Result<Place> {
        let is_meta = name == METADATA.as_bytes();
        if self.index == 0 && !is_meta {
            bail!("comes first, where {METADATA} must be: not an xtask archive");
        }
        if self.after_sums {
            bail!("comes after {CHECKSUMS}, which must be the last entry");
        }
        if self.index_seen && name != CHECKSUMS.as_bytes() {
            bail!("comes after {}, where {CHECKSUMS} must", super::INDEX);
        }
        if name == super::INDEX.as_bytes() && self.indexed {
            if kind != Kind::File {
                bail!("must be a regular file");
            }
            self.index_seen = true;
            return Ok(Place::Index);
        }
        if name == CHECKSUMS.as_bytes() && self.indexed && !self.index_seen {
            bail!(
                "comes where the index {} must (right before it): the archive is incomplete or altered",
                super::INDEX
            );
        }
        if is_meta || name == CHECKSUMS.as_bytes() {
            if is_meta && self.index != 0 {
                bail!("{METADATA} must be the first entry and appear once");
            }
            if kind != Kind::File || size > MAX_TEXT_ENTRY {
                bail!("must be a regular file of at most {} MiB", MAX_TEXT_ENTRY >> 20);
            }
            self.after_sums = !is_meta;
            return Ok(if is_meta { Place::Metadata } else { Place::Checksums });
        }
        let parts: Vec<&[u8]> = name.split(|&b| b == b'/').collect();
        match parts[0] {
            b"postgres" | b"databases" => {
                let engine = self.dumps.get(&*String::from_utf8_lossy(name)).copied();
                match engine {
                    Some(engine) if kind == Kind::File => Ok(Place::Dump { engine }),
                    _ => bail!("is not a regular file the metadata names as a database dump"),
                }
            }
            b"volumes" | b"binds" if parts.len() >= 2 => self.volume_place(name, &parts, kind, link),
            _ => {
                bail!("stands outside {METADATA}, {CHECKSUMS}, databases/<service>/, volumes/<volume>/ and binds/<id>/")
            }
        }
    }

    fn volume_place(&mut self, name: &[u8], parts: &[&[u8]], kind: Kind, link: Option<&[u8]>) -> Result<Place> {
        let id = String::from_utf8_lossy(parts[1]).into_owned();
        let volume = if parts[0] == b"binds" { super::bind_name(&id) } else { id };
        if !self.volumes.contains(&volume) {
            bail!("volume {volume:?} is not listed in the metadata");
        }
        let prefix_len = parts[0].len() + 1 + parts[1].len();
        if parts.len() == 2 {
            if kind != Kind::Dir || self.started.contains(&volume) {
                bail!("the root of volume {volume:?} must be its first entry, a directory");
            }
            self.started.insert(volume.clone());
            return Ok(Place::Volume { volume, rel: Vec::new() });
        }
        if parts.len() == 3 && RESERVED.iter().any(|r| parts[2].starts_with(r.as_bytes())) {
            bail!("is named like restore's staging directories ({}), which are reserved", RESERVED.join(", "));
        }
        let parent = &name[..name.len() - parts[parts.len() - 1].len() - 1];
        if !self.names.is(parent, Names::DIR) {
            bail!("its parent is not an earlier directory entry (refused: it could be written through a symlink)");
        }
        match kind {
            Kind::Char | Kind::Block | Kind::Fifo if !self.allow_special => {
                bail!("is a {kind:?} node; pass --allow-special-files to restore device nodes and FIFOs")
            }
            Kind::HardLink => {
                let target = link.unwrap_or_default();
                let inside = target.len() > prefix_len && target[..=prefix_len] == name[..=prefix_len];
                if !inside || !self.names.is(target, Names::FILE) {
                    bail!("hard link to {} is not a regular file earlier in the same volume", shown(target));
                }
            }
            Kind::Symlink if link.is_none_or(|l| l.is_empty()) => bail!("symlink without a target"),
            _ => {}
        }
        Ok(Place::Volume { volume, rel: name[prefix_len + 1..].to_vec() })
    }

    /// After the last entry: every volume the metadata lists came, and `SHA256SUMS` closed it.
    pub fn finish(&self) -> Result<()> {
        if let Some(v) = self.volumes.iter().find(|v| !self.started.contains(*v)) {
            bail!("volume {v} named by the metadata has no entries");
        }
        if !self.after_sums {
            bail!("the checksum entry {CHECKSUMS} is missing: the archive is incomplete");
        }
        if self.indexed && !self.index_seen {
            bail!("the index {} is missing: the archive is incomplete", super::INDEX);
        }
        Ok(())
    }
}

pub fn kind_of(t: tar::EntryType) -> Result<Kind> {
    Ok(match t {
        tar::EntryType::Regular => Kind::File,
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::HardLink,
        tar::EntryType::Char => Kind::Char,
        tar::EntryType::Block => Kind::Block,
        tar::EntryType::Fifo => Kind::Fifo,
        other => bail!("has entry type {other:?}, which an archive may not hold"),
    })
}

/// A canonical relative name: no `/` at the start, no empty, `.` or `..` component, a
/// directory's single trailing `/` removed (others may not end in `/`). Returns it trimmed.
pub fn canonical(name: &[u8], is_dir: bool) -> Result<&[u8]> {
    let trimmed = match (is_dir, name.strip_suffix(b"/")) {
        (true, Some(t)) => t,
        (true, None) => bail!("a directory's name must end in '/'"),
        (false, Some(_)) => bail!("only a directory's name may end in '/'"),
        (false, None) => name,
    };
    if trimmed.is_empty() || trimmed.len() > MAX_NAME {
        bail!("name is empty or longer than {MAX_NAME} bytes");
    }
    if trimmed.starts_with(b"/") {
        bail!("absolute path: refused, it would write outside the restore target");
    }
    for c in trimmed.split(|&b| b == b'/') {
        match c {
            b"" => bail!("empty path component ('//'): names must be canonical"),
            b"." => bail!("'.' path component: names must be canonical"),
            b".." => bail!("path with '..': refused, it would write outside the restore target"),
            c if c.len() > MAX_COMPONENT => bail!("a path component is longer than {MAX_COMPONENT} bytes"),
            c if c.contains(&0) => bail!("NUL byte in the name"),
            _ => {}
        }
    }
    Ok(trimmed)
}

/// A name of the stack (volume, compose key, service, project, role, tag):
/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 bytes.
pub fn is_plain_name(s: &str) -> bool {
    s.len() <= 128
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

pub use crate::model::db::is_db_name;

pub use crate::model::db::mariadb::is_my_table_name;
pub use crate::model::db::postgres::is_table_name;

/// Free text from the metadata (reasons, versions, file names): printable, bounded.
fn is_text(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

/// Checks every name and value in the metadata against the documented character sets, so that
/// nothing read from an archive can be reinterpreted by a shell, a client or SQL.
pub fn check_metadata(m: &Metadata) -> Result<()> {
    let bad = |what: &str, v: &str| -> Result<()> {
        bail!("metadata.json: {what} {v:?} is outside the allowed characters (docs/archive-format.md)")
    };
    if !matches!(m.kind.as_str(), "full" | "db") {
        bad("kind", &m.kind)?;
    }
    if !is_plain_name(&m.project) {
        bad("project", &m.project)?;
    }
    for (what, v) in [("tag", &m.tag), ("environment", &m.environment)] {
        if let Some(v) = v.as_deref().filter(|v| !is_plain_name(v)) {
            bad(what, v)?;
        }
    }
    if let Some(dir) = &m.project_dir {
        let normalized = crate::model::binds::normalize(std::path::Path::new(dir)) == *dir;
        if !dir.starts_with('/') || !normalized || !is_text(dir, 1024) || dir.contains(['\n', '\\']) {
            bail!("metadata.json: project_dir {dir:?} is not an absolute, normalized path");
        }
    }
    for t in std::iter::once(&m.created_at).chain(&m.compose_files).chain([&m.tool_version, &m.model_sha256]) {
        if !is_text(t, 4096) {
            bad("text", t)?;
        }
    }
    let mut services = BTreeSet::new();
    for db in &m.databases {
        if !services.insert(&db.service) {
            bail!("metadata.json: database service {:?} is listed twice", db.service);
        }
        check_database(db, m.format_version)?;
    }
    let mut names = BTreeSet::new();
    for v in &m.volumes {
        let (name, key) = match &v.bind {
            Some(path) => (v.name.strip_prefix(super::BINDS).unwrap_or("/"), check_bind(v, path)?),
            None if !v.bind_mounts.is_empty() => {
                bail!("metadata.json: volume {:?} lists bind mounts but is no bind", v.name)
            }
            None => (v.name.as_str(), v.key.as_str()),
        };
        for (what, s) in [("volume", name), ("volume key", key), ("role", &v.role), ("priority", &v.priority)] {
            if !is_plain_name(s) {
                bad(what, s)?;
            }
        }
        if !names.insert(&v.name) || v.entry != super::volume_prefix(&v.name) {
            bad("volume entry", &v.entry)?;
        }
    }
    for s in &m.skipped {
        if !is_text(&s.name, 256) || !is_text(&s.reason, 1024) {
            bad("skipped entry", &s.name)?;
        }
    }
    Ok(())
}

/// A bind's host path: absolute, normalized, printable, never a system path; its key is the
/// path. Returns a plain stand-in for the key's character check.
fn check_bind<'a>(v: &'a super::VolumeInfo, path: &str) -> Result<&'a str> {
    let normalized = crate::model::binds::normalize(std::path::Path::new(path)) == path;
    if !path.starts_with('/') || !normalized || !is_text(path, 1024) || path.contains(['\n', '\\']) {
        bail!("metadata.json: bind path {path:?} is not an absolute, normalized path");
    }
    if let Some(why) = crate::model::binds::system_path(path) {
        bail!("metadata.json: bind {path:?} is {why}: refused");
    }
    if v.key != path {
        bail!("metadata.json: bind {path:?} has the key {:?}; a bind's key is its path", v.key);
    }
    for m in &v.bind_mounts {
        let target_ok = m.target.starts_with('/')
            && crate::model::binds::normalize(std::path::Path::new(&m.target)) == m.target
            && is_text(&m.target, 1024)
            && !m.target.contains(['\n', '\\']);
        if !is_plain_name(&m.service) || !target_ok {
            bail!("metadata.json: bind {path:?}: the mount {:?}:{:?} is not a service name and an absolute, normalized path", m.service, m.target);
        }
    }
    Ok("bind")
}

fn check_database(db: &super::DbInfo, format_version: u32) -> Result<()> {
    use super::DbEngine;
    let bad = |what: &str, v: &str| -> Result<()> {
        bail!("metadata.json: {what} {v:?} is outside the allowed characters (docs/archive-format.md)")
    };
    if !is_plain_name(&db.service) {
        bad("database service", &db.service)?;
    }
    if !is_db_name(&db.user) {
        bad("database user", &db.user)?;
    }
    if db.volume.as_deref().is_some_and(|v| !is_plain_name(v)) || !is_text(&db.server_version, 128) {
        bad("database volume or version", &db.server_version)?;
    }
    if format_version == 1 && db.engine != DbEngine::Postgres {
        bad("engine of a version 1 archive", db.engine.as_str())?;
    }
    let prefix = db.prefix(format_version);
    let record = db.engine.record();
    let globals = record.globals_file.map(|f| format!("{prefix}{f}"));
    if db.globals_entry != globals {
        bad("roles or users entry", db.globals_entry.as_deref().unwrap_or("(none)"))?;
    }
    if let Some(one) = record.single_dump.filter(|one| db.databases.len() != 1 || db.databases[0].name != *one) {
        bail!("metadata.json: the {} dump of service {:?} must be one entry named {one}", record.name, db.service);
    }
    let mut entries: BTreeSet<String> = globals.into_iter().collect();
    for d in &db.databases {
        if !is_db_name(&d.name) {
            bad("database name", &d.name)?;
        }
        let file = record.dump_file(&d.name);
        if d.entry != format!("{prefix}{file}") || !entries.insert(d.entry.clone()) {
            bad("dump entry", &d.entry)?;
        }
        if let Some(t) = d.tables.keys().find(|t| !(record.is_table)(t)) {
            bad("table", t)?;
        }
        if let Some(p) = &d.properties {
            check_properties(p, db.engine).with_context(|| format!("metadata.json: database {:?}", d.name))?;
        }
    }
    Ok(())
}

/// A PostgreSQL role name as an archive may give it: 1 to 63 bytes, no NUL, as PostgreSQL's own
/// (it reaches SQL only as data the server quotes, and is printed only escaped; refusing more
/// would fail the backup of a server that has such a role).
fn is_role_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('\0')
}

/// Text an archive gives a database (a comment, a setting's value): at most 64 KiB, no NUL
/// (it reaches SQL only as data, quoted by the server, and is never printed raw).
fn is_db_text(s: &str) -> bool {
    s.len() <= 65536 && !s.contains('\0')
}

/// A database's own properties (docs/archive-format.md): PostgreSQL's for a PostgreSQL
/// service, MariaDB/MySQL's character set and collation for theirs, nothing for a hook.
fn check_properties(p: &super::DbProperties, engine: super::DbEngine) -> Result<()> {
    use super::DbEngine;
    let pg = [p.owner.is_some(), p.connection_limit.is_some(), p.comment.is_some(), p.grants.is_some()];
    let pg = pg.contains(&true) || !p.settings.is_empty();
    let my = p.charset.is_some() || p.collation.is_some();
    match engine {
        DbEngine::Postgres if my => bail!("a character set or collation on a PostgreSQL database"),
        DbEngine::Mariadb | DbEngine::Mysql if pg => bail!("PostgreSQL properties on a {} database", engine.as_str()),
        DbEngine::Hook if pg || my => bail!("properties on a hook's dump"),
        _ => {}
    }
    if let Some(o) = p.owner.as_deref().filter(|o| !is_role_name(o)) {
        bail!("owner {o:?} is not a role name (1 to 63 bytes, no NUL)");
    }
    if p.connection_limit.is_some_and(|n| n < -1) || p.comment.as_deref().is_some_and(|c| !is_db_text(c)) {
        bail!("a connection limit below -1, or a comment over 64 KiB or with a NUL");
    }
    for g in p.grants.iter().flatten() {
        if !matches!(g.privilege.as_str(), "CONNECT" | "CREATE" | "TEMPORARY") {
            bail!("privilege {:?} on a database (CONNECT, CREATE or TEMPORARY)", g.privilege);
        }
        if g.to.as_deref().is_some_and(|r| !is_role_name(r)) {
            bail!("grantee {:?} is not a role name", g.to);
        }
    }
    for s in &p.settings {
        let name_ok = !s.name.is_empty()
            && s.name.len() <= 128
            && s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !name_ok || !is_db_text(&s.value) || s.role.as_deref().is_some_and(|r| !is_role_name(r)) {
            bail!("setting {:?} (role {:?}): a parameter name is [A-Za-z0-9_.], a role a role name", s.name, s.role);
        }
    }
    let charset_ok =
        |c: &str| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if let Some(c) = p.charset.iter().chain(&p.collation).find(|c| !charset_ok(c)) {
        bail!("character set or collation {c:?} is outside [A-Za-z0-9_]");
    }
    Ok(())
}

/// Per entry name, its fingerprint ([`Checked::fingerprint`]): what one verification saw.
pub type Manifest = BTreeMap<Vec<u8>, [u8; 32]>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_databases_properties_are_read_strictly() {
        use crate::archive::{DbEngine, DbGrant, DbProperties, DbSetting};
        let pg = DbProperties {
            owner: Some("app role".into()),
            connection_limit: Some(7),
            comment: Some("it's\nmultiline".into()),
            grants: Some(vec![DbGrant { to: None, privilege: "CONNECT".into(), grantable: false }]),
            settings: vec![DbSetting { role: Some("r".into()), name: "app.tenant".into(), value: "x y".into() }],
            ..Default::default()
        };
        check_properties(&pg, DbEngine::Postgres).unwrap();
        let my = DbProperties {
            charset: Some("utf8mb4".into()),
            collation: Some("utf8mb4_unicode_ci".into()),
            ..Default::default()
        };
        check_properties(&my, DbEngine::Mariadb).unwrap();
        assert!(check_properties(&my, DbEngine::Postgres).is_err() && check_properties(&pg, DbEngine::Mysql).is_err());
        assert!(check_properties(&my, DbEngine::Hook).is_err());
        let bad = |f: &dyn Fn(&mut DbProperties)| {
            let mut p = pg.clone();
            f(&mut p);
            check_properties(&p, DbEngine::Postgres).is_err()
        };
        assert!(bad(&|p| p.owner = Some(String::new())));
        assert!(bad(&|p| p.owner = Some("x".repeat(64))));
        assert!(bad(&|p| p.owner = Some("a\0b".into())));
        assert!(bad(&|p| p.connection_limit = Some(-2)));
        assert!(bad(&|p| p.comment = Some("a\0b".into())));
        assert!(bad(&|p| p.grants = Some(vec![DbGrant { to: None, privilege: "ALL".into(), grantable: false }])));
        assert!(bad(&|p| p.settings[0].name = "work_mem = 1; x".into()));
        assert!(bad(&|p| p.settings[0].value = "x".repeat(65537)));
        let mut evil = my.clone();
        evil.collation = Some("x COLLATE y".into());
        assert!(check_properties(&evil, DbEngine::Mariadb).is_err());
    }

    #[test]
    fn canonical_names_only() {
        assert_eq!(canonical(b"volumes/v/a/b", false).unwrap(), b"volumes/v/a/b");
        assert_eq!(canonical(b"volumes/v/d/", true).unwrap(), b"volumes/v/d");
        for (bad, rule) in [
            (&b"/etc/passwd"[..], "absolute"),
            (b"volumes/v/../x", "'..'"),
            (b"volumes/v/./evil/x", "'.'"),
            (b"volumes/v//evil/x", "empty"),
            (b"volumes/v/x/", "only a directory"),
            (b"", "empty"),
        ] {
            let err = canonical(bad, false).unwrap_err().to_string();
            assert!(err.contains(rule), "{bad:?}: {err}");
        }
        assert!(canonical(b"volumes/v/d", true).is_err(), "a directory without its '/'");
    }

    #[test]
    fn name_character_sets() {
        assert!(is_plain_name("app-backend-media") && is_plain_name("app_1.x"));
        assert!(!is_plain_name("-x") && !is_plain_name("a b") && !is_plain_name("a/b") && !is_plain_name(""));
        assert!(is_db_name("app") && is_db_name("_x") && is_db_name("my-app.v2"));
        for bad in ["host=evil port=1 dbname=x", "dbname=template1", "a b", "a'b", "x\\y", ""] {
            assert!(!is_db_name(bad), "{bad}");
        }
        assert!(is_table_name("\"public\".\"items\"") && is_table_name("\"odd schema\".\"T\""));
        for bad in ["public.items", "\"a\".\"b\"; DROP TABLE x", "\"a\"\"b\".\"c\"", "\"a\".\"\"", "\"a\""] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }
}

//! The archive format, version 2 (docs/archive-format.md): one gzip stream holding one tar;
//! `metadata.json` first, then `databases/<service>/…` dumps and `volumes/<volume-name>/…`
//! files, and `SHA256SUMS` last (`sha256sum -c` format); the whole optionally encrypted by age
//! (`….tar.gz.age`). Owns writing an archive atomically (temporary name, fsync, rename; removed
//! on error) and reading one back, from a file or a remote, to verify it.

pub mod dumpstats;
pub mod extract;
pub mod grammar;
mod inflate;
pub mod pgz;
pub mod signature;
pub mod sink;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::crypt;
pub use crate::model::db::DbEngine;
use crate::model::offsite::Encryption;
use sink::{Mirror, Sink};

pub const FORMAT: &str = "xtask-backup";
/// Version 3: bind mounts under `binds/<id>/` (a volume entry with its host path). Version 2:
/// every database service under `databases/<service>/` (version 1 had one PostgreSQL server
/// under `postgres/`). Readers take all three.
pub const FORMAT_VERSION: u32 = 3;
pub const METADATA: &str = "metadata.json";
pub const CHECKSUMS: &str = "SHA256SUMS";

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

/// Counts of what a volume stream added.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StreamStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Reads through to a SHA-256, counting the bytes.
pub(crate) struct HashingReader<R> {
    inner: R,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// An archive being written under a temporary name next to its final one. Dropped without
/// `commit`, it removes the temporary file: no half-written archive ever has the final name.
pub struct ArchiveWriter {
    final_path: PathBuf,
    temp_path: PathBuf,
    builder: Option<tar::Builder<pgz::ParallelGzWriter<BufWriter<Sink>>>>,
    sums: Vec<(Vec<u8>, [u8; 32])>,
    pub stats: StreamStats,
}

impl ArchiveWriter {
    pub fn create(final_path: &Path, level: u32, threads: usize) -> Result<ArchiveWriter> {
        ArchiveWriter::create_sealed(final_path, level, threads, None, None)
    }

    /// [`ArchiveWriter::create`], the gzip stream encrypted by age to `seal`'s recipients on
    /// its way to the file (the plaintext never reaches the disk), and the bytes as stored also
    /// written to `mirror` (an upload while the archive is written).
    pub fn create_sealed(
        final_path: &Path,
        level: u32,
        threads: usize,
        seal: Option<&Encryption>,
        mirror: Option<Mirror>,
    ) -> Result<ArchiveWriter> {
        let dir = final_path.parent().context("archive path has no directory")?;
        let name = final_path.file_name().context("archive path has no file name")?.to_string_lossy();
        let temp_path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = crate::files::create_private(&temp_path)?;
        let sink = Sink::new(file, seal, mirror).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp_path);
        })?;
        let gz = pgz::ParallelGzWriter::new(BufWriter::with_capacity(1 << 20, sink), level, threads)?;
        let mut builder = tar::Builder::new(gz);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        Ok(ArchiveWriter {
            final_path: final_path.to_path_buf(),
            temp_path,
            builder: Some(builder),
            sums: Vec::new(),
            stats: StreamStats::default(),
        })
    }

    #[cfg(test)]
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    fn builder(&mut self) -> Result<&mut tar::Builder<pgz::ParallelGzWriter<BufWriter<Sink>>>> {
        self.builder.as_mut().context("archive already committed")
    }

    /// Adds a regular file (mode 0600, mtime now) from a reader of known size.
    pub fn add_file(&mut self, path: &str, size: u64, data: impl Read) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        );
        let mut reader = HashingReader::new(data);
        self.builder()?.append_data(&mut header, path, &mut reader).with_context(|| format!("write entry {path}"))?;
        if reader.bytes != size {
            bail!("entry {path}: expected {size} bytes, got {}", reader.bytes);
        }
        self.sums.push((path.as_bytes().to_vec(), reader.hasher.finalize().into()));
        self.stats.entries += 1;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Copies every entry of the tar stream `source` (a volume's root, as `tar -c -C ROOT .`
    /// makes it) under `volumes/<name>/`, keeping type, mode, owner, mtime and link targets;
    /// hard links are re-pointed into the same prefix. Calls `progress(bytes)` as data passes.
    pub fn add_volume_tar(
        &mut self,
        name: &str,
        source: impl Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<StreamStats> {
        let prefix = volume_prefix(name);
        let mut stats = StreamStats::default();
        // Large reads: the tar's 512-byte headers must not each become a syscall.
        let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, source));
        let entries = archive.entries().context("read the volume's tar stream")?;
        for entry in entries {
            let mut entry = entry.context("read the volume's tar stream")?;
            let rel = relative_in_volume(&entry.path_bytes())
                .with_context(|| format!("volume {name}: unsafe path in helper output"))?;
            // Left by an interrupted restore (reserved names): not data, never archived.
            let top = rel.split(|&b| b == b'/').next().unwrap_or_default();
            if grammar::RESERVED.iter().any(|r| top.starts_with(r.as_bytes())) {
                continue;
            }
            let mut dest = prefix.as_bytes().to_vec();
            dest.extend_from_slice(&rel);
            self.append_volume_entry(name, &prefix, &mut entry, dest, &mut stats, progress)?;
            stats.entries += 1;
        }
        // Drain the end-of-archive blocks so the writer is not cut off mid-stream.
        io::copy(&mut archive.into_inner(), &mut io::sink()).ok();
        self.stats.entries += stats.entries;
        self.stats.files += stats.files;
        self.stats.bytes += stats.bytes;
        Ok(stats)
    }

    /// One entry of a volume's tar stream, renamed to `dest` (below the volume's prefix) and
    /// added with its header kept; a regular file's SHA-256 recorded for `SHA256SUMS`.
    fn append_volume_entry<R: Read>(
        &mut self,
        name: &str,
        prefix: &str,
        entry: &mut tar::Entry<'_, R>,
        dest: Vec<u8>,
        stats: &mut StreamStats,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let mut header = entry.header().clone();
        if header.entry_type() == tar::EntryType::Continuous {
            header.set_entry_type(tar::EntryType::Regular);
        }
        let kind = header.entry_type();
        let dest_path = Path::new(OsStr::from_bytes(&dest)).to_path_buf();
        let builder = self.builder.as_mut().context("archive already committed")?;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size()?;
                let mut reader = HashingReader::new(entry);
                builder
                    .append_data(&mut header, &dest_path, &mut reader)
                    .with_context(|| format!("write entry {}", dest_path.display()))?;
                self.sums.push((dest.clone(), reader.hasher.finalize().into()));
                stats.files += 1;
                stats.bytes += size;
                progress(size);
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().context("hard link without target")?.into_owned();
                let mut t = prefix.as_bytes().to_vec();
                t.extend_from_slice(&relative_in_volume(&target)?);
                builder.append_link(&mut header, &dest_path, Path::new(OsStr::from_bytes(&t)))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().context("symlink without target")?.into_owned();
                builder.append_link(&mut header, &dest_path, Path::new(OsStr::from_bytes(&target)))?;
            }
            tar::EntryType::Directory => {
                if !dest_path.as_os_str().as_bytes().ends_with(b"/") {
                    let mut d = dest.clone();
                    d.push(b'/');
                    builder.append_data(&mut header, Path::new(OsStr::from_bytes(&d)), io::empty())?;
                } else {
                    builder.append_data(&mut header, &dest_path, io::empty())?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                builder.append_data(&mut header, &dest_path, io::empty())?;
            }
            other => bail!("volume {name}: entry {} has an unsupported type {other:?}", dest_path.display()),
        }
        Ok(())
    }

    /// Writes `SHA256SUMS`, finishes the streams, fsyncs, renames to the final name and fsyncs
    /// the directory. Returns the archive's size.
    pub fn commit(self) -> Result<u64> {
        self.commit_all().map(|c| c.size)
    }

    /// [`ArchiveWriter::commit`], returning also the SHA-256 of the bytes as stored and the
    /// mirror (still open, for its owner to finish) or why it dropped out.
    pub fn commit_all(mut self) -> Result<Committed> {
        let sums = format_sums(&self.sums);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(sums.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        );
        let mut builder = self.builder.take().context("archive already committed")?;
        builder.append_data(&mut header, CHECKSUMS, &sums[..]).context("write SHA256SUMS")?;
        let gz = builder.into_inner().context("finish the tar stream")?;
        let buffered = gz.finish().context("finish the gzip stream")?;
        let sink = buffered.into_inner().map_err(|e| e.into_error()).context("flush the archive")?;
        let finished = sink.finish()?;
        let file = finished.file;
        file.sync_all().context("fsync the archive")?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path)
            .with_context(|| format!("rename {} to {}", self.temp_path.display(), self.final_path.display()))?;
        if let Some(dir) = self.final_path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(Committed { size, sha256: finished.sha256, mirror: finished.mirror, mirror_error: finished.mirror_error })
    }
}

/// A committed archive: its size and digest as stored, and its mirror (still open) with the
/// error that made it stop taking bytes, if any.
pub struct Committed {
    pub size: u64,
    pub sha256: [u8; 32],
    pub mirror: Option<Mirror>,
    pub mirror_error: Option<io::Error>,
}

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        if self.builder.is_some() {
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

/// Adds `metadata.json` as the first entry.
pub fn write_metadata(w: &mut ArchiveWriter, meta: &Metadata) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta)?;
    w.add_file(METADATA, json.len() as u64, &json[..])
}

/// `./a/b` -> `a/b`, `.` / `./` -> empty (the volume root); absolute paths and `..` are refused.
fn relative_in_volume(p: &[u8]) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    if p.starts_with(b"/") {
        bail!("absolute path {:?}", String::from_utf8_lossy(p));
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("path with '..': {:?}", String::from_utf8_lossy(p)),
            other => parts.push(other),
        }
    }
    Ok(parts.join(&b'/'))
}

/// `sha256sum` output: `<hex>  <name>`; names holding `\` or a newline are escaped and the line
/// starts with `\`, as GNU coreutils does.
pub fn format_sums(sums: &[(Vec<u8>, [u8; 32])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, digest) in sums {
        let escape = name.iter().any(|&b| b == b'\\' || b == b'\n');
        if escape {
            out.push(b'\\');
        }
        out.extend_from_slice(hex(digest).as_bytes());
        out.extend_from_slice(b"  ");
        for &b in name {
            match b {
                b'\\' if escape => out.extend_from_slice(b"\\\\"),
                b'\n' if escape => out.extend_from_slice(b"\\n"),
                _ => out.push(b),
            }
        }
        out.push(b'\n');
    }
    out
}

/// Parses `format_sums` output back into name -> hex digest.
pub fn parse_sums(text: &[u8]) -> Result<BTreeMap<Vec<u8>, String>> {
    let mut map = BTreeMap::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (escaped, line) = match line.strip_prefix(b"\\") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        if line.len() < 66 || &line[64..66] != b"  " {
            bail!("{CHECKSUMS} line {}: not `<sha256>  <name>`", n + 1);
        }
        let digest = String::from_utf8_lossy(&line[..64]).to_string();
        let raw = &line[66..];
        let name = if escaped {
            let mut out = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                match (raw[i], raw.get(i + 1)) {
                    (b'\\', Some(b'n')) => {
                        out.push(b'\n');
                        i += 2
                    }
                    (b'\\', Some(b'\\')) => {
                        out.push(b'\\');
                        i += 2
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1
                    }
                }
            }
            out
        } else {
            raw.to_vec()
        };
        if !digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            bail!("{CHECKSUMS} line {}: not a lower-case hex SHA-256", n + 1);
        }
        if map.insert(name, digest).is_some() {
            bail!("{CHECKSUMS} line {}: a second checksum for the same name", n + 1);
        }
    }
    Ok(map)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An archive opened once. Every later read (verify, then each extraction of a restore) comes
/// from this one descriptor, so renaming or replacing the path meanwhile changes nothing; only
/// a regular file is accepted (not a FIFO, device or directory). An age-encrypted archive is
/// decrypted while it streams (the plaintext never reaches the disk); a remote one streams from
/// the remote, its bytes checked against the SHA-256 its push recorded.
pub struct Source {
    origin: Origin,
    /// The identity to decrypt with: Some for an encrypted archive.
    identity: Option<PathBuf>,
    /// The archive as shown to the user (a path, or `REMOTE:NAME`).
    pub path: PathBuf,
}

enum Origin {
    File(File),
    Remote { remote: std::sync::Arc<crate::engine::remote::Remote>, object: String, sha256: [u8; 32] },
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
        if !meta.file_type().is_file() {
            bail!("{} is not a regular file: refused as an archive", path.display());
        }
        let identity = if starts_sealed(&file) { Some(crypt::identity(&path.display().to_string())?) } else { None };
        Ok(Source { origin: Origin::File(file), identity, path: path.to_path_buf() })
    }

    /// The object `name` of `remote`, whose bytes must hash to `sha256` (its sidecar).
    pub fn remote(
        remote: std::sync::Arc<crate::engine::remote::Remote>,
        name: &str,
        sha256: [u8; 32],
    ) -> Result<Source> {
        let shown = remote.shown(name);
        let identity = if name.ends_with(crypt::SUFFIX) { Some(crypt::identity(&shown)?) } else { None };
        Ok(Source { origin: Origin::Remote { remote, object: name.to_string(), sha256 }, identity, path: shown.into() })
    }

    pub fn encrypted(&self) -> bool {
        self.identity.is_some()
    }

    /// The size and SHA-256 of a local archive's bytes as stored, read through its own open
    /// descriptor (whatever happens to its name, later reads see the bytes hashed here); None for
    /// a remote one, whose bytes are checked against its sidecar as they arrive.
    pub fn stored_digest(&self) -> Result<Option<(u64, [u8; 32])>> {
        let Origin::File(_) = &self.origin else { return Ok(None) };
        let mut hashing = HashingReader::new(self.raw()?);
        let size = io::copy(&mut hashing, &mut io::sink()).with_context(|| format!("read {}", self.path.display()))?;
        Ok(Some((size, hashing.hasher.finalize().into())))
    }

    /// A fresh reader of the archive's gzip bytes from the start (a positioned read of the
    /// file, independent of other readers; or a new download). A failure to start is
    /// reported by the reader's first read.
    pub fn reader(&self) -> Box<dyn Read + Send> {
        match self.raw_and_plain() {
            Ok(r) => r,
            Err(e) => Box::new(Failing(Some(io::Error::other(format!("{e:#}"))))),
        }
    }

    fn raw_and_plain(&self) -> Result<Box<dyn Read + Send>> {
        let raw = self.raw()?;
        match &self.identity {
            None => Ok(raw),
            Some(id) => {
                Ok(Box::new(crypt::decrypt(raw, id).with_context(|| format!("decrypt {}", self.path.display()))?))
            }
        }
    }

    /// The archive's bytes as stored (still encrypted, if it is): a remote's checked against
    /// the SHA-256 its push recorded. For `pull`.
    pub fn raw_reader(&self) -> Box<dyn Read + Send> {
        match self.raw() {
            Ok(r) => r,
            Err(e) => Box::new(Failing(Some(io::Error::other(format!("{e:#}"))))),
        }
    }

    fn raw(&self) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.origin {
            Origin::File(f) => Box::new(PosReader {
                file: f.try_clone().with_context(|| format!("duplicate the descriptor of {}", self.path.display()))?,
                pos: 0,
            }),
            Origin::Remote { remote, object, sha256 } => Box::new(DigestChecked {
                inner: HashingReader::new(remote.cat(object)?),
                expected: *sha256,
                name: self.path.display().to_string(),
                checked: false,
            }),
        })
    }

    /// A second handle on the same archive (a duplicated descriptor, never a reopening).
    pub fn duplicate(&self) -> Result<Source> {
        let origin = match &self.origin {
            Origin::File(f) => Origin::File(
                f.try_clone().with_context(|| format!("duplicate the descriptor of {}", self.path.display()))?,
            ),
            Origin::Remote { remote, object, sha256 } => {
                Origin::Remote { remote: remote.clone(), object: object.clone(), sha256: *sha256 }
            }
        };
        Ok(Source { origin, identity: self.identity.clone(), path: self.path.clone() })
    }

    /// The archive's tar stream, decompressed, from the start.
    /// Inflated on a thread of its own; it ends only where the archive's bytes end.
    pub fn tar(&self) -> tar::Archive<Inflated> {
        tar::Archive::new(inflate::inflate(self.reader()))
    }
}

/// Whether the file at `path` starts like an age file (an encrypted archive).
pub fn is_sealed(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path) else {
        return false;
    };
    f.metadata().is_ok_and(|m| m.is_file()) && starts_sealed(&f)
}

/// Whether the file's first bytes are age's header.
fn starts_sealed(file: &File) -> bool {
    let mut head = [0u8; 19];
    let n = std::os::unix::fs::FileExt::read_at(file, &mut head, 0).unwrap_or(0);
    head[..n] == *crypt::MAGIC
}

pub use inflate::Inflated;

/// A reader that fails at once (a source that could not be started).
struct Failing(Option<io::Error>);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self.0.take().unwrap_or_else(|| io::Error::other("the archive could not be read")))
    }
}

/// Hashes what it passes on; at the end, a digest other than the expected one is a read error.
struct DigestChecked<R> {
    inner: HashingReader<R>,
    expected: [u8; 32],
    name: String,
    /// The end was reached and the digest matched: later reads only repeat the end.
    checked: bool,
}

impl<R: Read> Read for DigestChecked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.checked {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let got: [u8; 32] = std::mem::take(&mut self.inner.hasher).finalize().into();
            if got != self.expected {
                return Err(io::Error::other(format!(
                    "{}: its bytes hash to {}, not to the SHA-256 its push recorded ({}): the object was changed \
                     or cut short",
                    self.name,
                    hex(&got),
                    hex(&self.expected)
                )));
            }
            self.checked = true;
        }
        Ok(n)
    }
}

/// What a consumer of an entry's data took instead of the verification reading it: the content
/// digest, the bytes, and for a dump its statistics.
pub struct Taken {
    pub digest: [u8; 32],
    pub bytes: u64,
    pub dump: Option<dumpstats::DumpStats>,
}

/// Called for every entry that passed the grammar; `Some` when it consumed the entry's data.
pub type Hook<'h> = dyn FnMut(&mut tar::Entry<'_, Inflated>, &grammar::Checked) -> Result<Option<Taken>> + 'h;

/// Reads positionally from the archive's file (a duplicated descriptor): never moves a shared offset.
pub struct PosReader {
    file: File,
    pos: u64,
}

impl Read for PosReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub metadata: Option<Metadata>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Bytes of file data per volume (what a restore writes into it).
    pub volume_bytes: BTreeMap<String, u64>,
    pub problems: Vec<String>,
    /// Every entry's fingerprint: what an extraction from the same descriptor must find again.
    #[serde(skip)]
    pub manifest: grammar::Manifest,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Options of a verification.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Accept device nodes and FIFOs in volumes (`--allow-special-files`).
    pub allow_special: bool,
}

/// Opens and reads the whole archive by the strict grammar (archive/grammar.rs): gzip and tar
/// integrity, metadata first and within its character sets, every entry canonical, in its
/// place, of an allowed type and unique, every file's SHA-256 equal to `SHA256SUMS` (the
/// last entry), and the database dumps complete, plain SQL, with the recorded row counts.
#[cfg(test)]
pub fn verify(path: &Path, rules: Rules) -> Report {
    match Source::open(path) {
        Ok(src) => verify_source(&src, rules),
        Err(e) => Report { path: path.to_path_buf(), problems: vec![format!("{e:#}")], ..Report::default() },
    }
}

/// [`verify`] of an archive already open. Keeps no per-entry record: memory stays small
/// whatever the entry count (see [`verify_source_for_reading`] for the one that does).
pub fn verify_source(src: &Source, rules: Rules) -> Report {
    verify_source_with(src, rules, &mut |_, _| Ok(None))
}

/// [`verify_source`], keeping each entry's fingerprint (`Report::manifest`) for a later pass
/// that must read exactly what was verified (`--in-place`, the way back, `verify --deep`).
pub fn verify_source_for_reading(src: &Source, rules: Rules) -> Report {
    verify_with(src, rules, &mut |_, _| Ok(None), true)
}

/// [`verify_source`] in which `hook` may consume entries' data as they pass (restore stages
/// volumes and spools dumps this way, in the one pass that verifies them).
pub fn verify_source_with(src: &Source, rules: Rules, hook: &mut Hook) -> Report {
    verify_with(src, rules, hook, false)
}

fn verify_with(src: &Source, rules: Rules, hook: &mut Hook, keep_manifest: bool) -> Report {
    let mut report = Report { path: src.path.clone(), ..Report::default() };
    if let Err(e) = verify_into(src, rules, &mut report, hook, keep_manifest) {
        report.problems.push(format!("{e:#}"));
    }
    report
}

/// What one pass over the entries collected.
#[derive(Default)]
struct Seen {
    digests: BTreeMap<Vec<u8>, [u8; 32]>,
    recorded: Option<BTreeMap<Vec<u8>, String>>,
    dumps: BTreeMap<String, dumpstats::DumpStats>,
}

fn verify_into(src: &Source, rules: Rules, report: &mut Report, hook: &mut Hook, keep_manifest: bool) -> Result<()> {
    let mut archive = src.tar();
    let mut grammar = grammar::Grammar::new(rules.allow_special);
    let mut seen = Seen::default();
    let entries = archive.entries().context("the archive is not a gzip-compressed tar")?;
    for entry in entries {
        let mut entry = entry.context("the archive is truncated or corrupt (gzip or tar stream broken)")?;
        report.entries += 1;
        let checked = grammar.check(&mut entry)?;
        let content = match hook(&mut entry, &checked)? {
            Some(taken) => Some(record_taken(&checked, taken, report, &mut seen)),
            None => read_entry(&mut entry, &checked, report, &mut seen)?,
        };
        if checked.place == grammar::Place::Metadata {
            grammar.expect(report.metadata.as_ref().context("metadata missing")?);
        }
        if keep_manifest {
            report.manifest.insert(checked.name.clone(), checked.fingerprint(content.as_ref()));
        }
    }
    // Reading the tar's end does not reach the gzip trailer: read on, so that its CRC is checked
    // and the bytes are read to their very end (see `inflate`).
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("the end of the archive")?;
    grammar.finish()?;
    compare_sums(&seen, report);
    check_dumps(&seen, report);
    Ok(())
}

/// Reads one entry's data (files only): hashes it, and parses what must be parsed.
fn read_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    c: &grammar::Checked,
    report: &mut Report,
    seen: &mut Seen,
) -> Result<Option<[u8; 32]>> {
    if c.kind != grammar::Kind::File {
        return Ok(None);
    }
    let shown = grammar::shown(&c.name);
    let mut text = Vec::new();
    let mut hasher = Sha256::new();
    let mut stats = match c.place {
        grammar::Place::Dump { engine } => dumpstats::new(engine),
        _ => dumpstats::DumpStats::default(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = entry.read(&mut buf).with_context(|| format!("entry {shown}: the archive is truncated or corrupt"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        match &c.place {
            grammar::Place::Metadata | grammar::Place::Checksums => text.extend_from_slice(&buf[..n]),
            grammar::Place::Dump { .. } => stats.feed(&buf[..n]),
            grammar::Place::Volume { volume, .. } => {
                *report.volume_bytes.entry(volume.clone()).or_default() += n as u64
            }
        }
        report.bytes += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    report.files += u64::from(c.place != grammar::Place::Checksums);
    match &c.place {
        grammar::Place::Metadata => {
            let meta = parse_metadata(&text)?;
            grammar::check_metadata(&meta)?;
            report.metadata = Some(meta);
        }
        grammar::Place::Checksums => {
            seen.recorded = Some(parse_sums(&text)?);
            return Ok(Some(digest));
        }
        grammar::Place::Dump { .. } => {
            seen.dumps.insert(String::from_utf8_lossy(&c.name).into_owned(), stats);
        }
        grammar::Place::Volume { .. } => {}
    }
    seen.digests.insert(c.name.clone(), digest);
    Ok(Some(digest))
}

/// Records what a hook consumed as [`read_entry`] would have.
fn record_taken(c: &grammar::Checked, taken: Taken, report: &mut Report, seen: &mut Seen) -> [u8; 32] {
    report.files += 1;
    report.bytes += taken.bytes;
    if let grammar::Place::Volume { volume, .. } = &c.place {
        *report.volume_bytes.entry(volume.clone()).or_default() += taken.bytes;
    }
    if let Some(stats) = taken.dump {
        seen.dumps.insert(String::from_utf8_lossy(&c.name).into_owned(), stats);
    }
    seen.digests.insert(c.name.clone(), taken.digest);
    taken.digest
}

fn compare_sums(seen: &Seen, report: &mut Report) {
    let Some(recorded) = &seen.recorded else { return };
    for (name, digest) in &seen.digests {
        let shown = grammar::shown(name);
        match recorded.get(name) {
            None => report.problems.push(format!("entry {shown} has no checksum in {CHECKSUMS}")),
            Some(d) if *d != hex(digest) => {
                report.problems.push(format!("entry {shown}: checksum mismatch (content altered)"))
            }
            Some(_) => {}
        }
    }
    for name in recorded.keys().filter(|n| !seen.digests.contains_key(*n)) {
        report.problems.push(format!("{CHECKSUMS} lists {}, which is not in the archive", grammar::shown(name)));
    }
}

fn check_dumps(seen: &Seen, report: &mut Report) {
    let Some(meta) = report.metadata.clone() else { return };
    for db in &meta.databases {
        check_service_dumps(db, seen, report);
    }
}

/// One service's dumps: there, plain SQL its client runs as SQL only, complete, and holding
/// the rows the metadata records.
fn check_service_dumps(db: &DbInfo, seen: &Seen, report: &mut Report) {
    for entry in db.globals_entry.iter().chain(db.databases.iter().map(|d| &d.entry)) {
        match seen.dumps.get(entry) {
            None => report.problems.push(format!("entry {entry:?} named by the metadata is missing")),
            Some(stats) => {
                if let Some(v) = stats.violation() {
                    report.problems.push(format!("entry {entry:?}: {v}; refused, nothing of it is loaded"));
                }
                if let Some(why) = stats.out_of_bounds(Some(entry) == db.globals_entry.as_ref()) {
                    report.problems.push(format!("entry {entry:?}: {why}; refused, nothing of it is loaded"));
                }
                // The roles are loaded without ON_ERROR_STOP (existing roles fail harmlessly): a
                // COPY there could turn its data lines into commands, so none may stand in it.
                if Some(entry) == db.globals_entry.as_ref() && !stats.tables().is_empty() {
                    report.problems.push(format!("entry {entry:?}: the roles or users dump holds table data; refused"));
                }
            }
        }
    }
    for d in &db.databases {
        let Some(stats) = seen.dumps.get(&d.entry) else { continue };
        if !stats.complete() {
            report.problems.push(format!(
                "entry {:?}: the dump lacks {}'s completion trailer",
                d.entry,
                dump_tool(db.engine)
            ));
        }
        if *stats.tables() != d.tables {
            report.problems.push(format!("entry {:?}: row counts differ from the metadata's", d.entry));
        }
    }
}

fn dump_tool(engine: DbEngine) -> &'static str {
    match engine {
        DbEngine::Postgres => "pg_dump",
        DbEngine::Mariadb => "mariadb-dump",
        DbEngine::Mysql => "mysqldump",
        DbEngine::Hook => "the dump hook",
    }
}

/// Reads only the first entry, `metadata.json`, by the grammar (bounded, checked).
pub fn read_metadata_from(src: &Source) -> Result<Metadata> {
    let mut archive = src.tar();
    let mut entries = archive.entries().context("not a tar.gz archive")?;
    let mut first = entries
        .next()
        .context("the archive is empty")?
        .context("its first entry cannot be read (a damaged archive, a wrong key or a failed download)")?;
    grammar::Grammar::new(false).check(&mut first)?;
    let mut text = Vec::new();
    first.read_to_end(&mut text).context("read metadata.json")?;
    let meta = parse_metadata(&text)?;
    grammar::check_metadata(&meta)?;
    Ok(meta)
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
        Some(1 | 2 | FORMAT_VERSION) => {}
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

#[cfg(test)]
mod tests;

//! The archive format, version 1 (docs/archive-format.md): one gzip stream holding one tar;
//! `metadata.json` first, then `postgres/…` dumps and `volumes/<volume-name>/…` files, and
//! `SHA256SUMS` last (`sha256sum -c` format). Owns writing an archive atomically (temporary
//! name, fsync, rename; removed on error) and reading one back to verify it.

pub mod dumpstats;
pub mod pgz;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const FORMAT: &str = "xtask-backup";
pub const FORMAT_VERSION: u32 = 1;
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
    pub postgres: Option<PgInfo>,
    pub volumes: Vec<VolumeInfo>,
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryInfo {
    pub path: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PgInfo {
    pub service: String,
    /// The database volume the dump stands for.
    pub volume: Option<String>,
    pub server_version: String,
    pub user: String,
    pub globals_entry: String,
    pub databases: Vec<PgDatabase>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PgDatabase {
    pub name: String,
    pub entry: String,
    /// Rows per table in the dump (`schema.table` -> rows).
    pub tables: BTreeMap<String, u64>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

pub fn volume_prefix(name: &str) -> String {
    format!("volumes/{name}/")
}

/// Counts of what a volume stream added.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StreamStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// Reads through to a SHA-256.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
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
    builder: Option<tar::Builder<pgz::ParallelGzWriter<BufWriter<File>>>>,
    sums: Vec<(Vec<u8>, [u8; 32])>,
    pub stats: StreamStats,
}

impl ArchiveWriter {
    pub fn create(final_path: &Path, level: u32, threads: usize) -> Result<ArchiveWriter> {
        let dir = final_path.parent().context("archive path has no directory")?;
        let name = final_path.file_name().context("archive path has no file name")?.to_string_lossy();
        let temp_path = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .with_context(|| format!("create {}", temp_path.display()))?;
        let gz = pgz::ParallelGzWriter::new(BufWriter::with_capacity(1 << 20, file), level, threads)?;
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

    fn builder(&mut self) -> Result<&mut tar::Builder<pgz::ParallelGzWriter<BufWriter<File>>>> {
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
        let mut reader = HashingReader { inner: data, hasher: Sha256::new(), bytes: 0 };
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
            let mut dest = prefix.as_bytes().to_vec();
            dest.extend_from_slice(&rel);
            let mut header = entry.header().clone();
            let kind = header.entry_type();
            let dest_path = Path::new(OsStr::from_bytes(&dest)).to_path_buf();
            let builder = self.builder.as_mut().context("archive already committed")?;
            match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = header.size()?;
                    let mut reader = HashingReader { inner: &mut entry, hasher: Sha256::new(), bytes: 0 };
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
            stats.entries += 1;
        }
        // Drain the end-of-archive blocks so the writer is not cut off mid-stream.
        io::copy(&mut archive.into_inner(), &mut io::sink()).ok();
        self.stats.entries += stats.entries;
        self.stats.files += stats.files;
        self.stats.bytes += stats.bytes;
        Ok(stats)
    }

    /// Writes `SHA256SUMS`, finishes the streams, fsyncs, renames to the final name and fsyncs
    /// the directory. Returns the archive's size.
    pub fn commit(mut self) -> Result<u64> {
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
        let file = buffered.into_inner().map_err(|e| e.into_error()).context("flush the archive")?;
        file.sync_all().context("fsync the archive")?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(&self.temp_path, &self.final_path)
            .with_context(|| format!("rename {} to {}", self.temp_path.display(), self.final_path.display()))?;
        if let Some(dir) = self.final_path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        Ok(size)
    }
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
        map.insert(name, digest);
    }
    Ok(map)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub metadata: Option<Metadata>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads the whole archive: gzip and tar integrity, metadata first and understood, every
/// entry's path safe (no absolute path, no `..`, nothing outside `volumes/<name>/` of a volume
/// the metadata lists, nothing written through a symlink, hard links inside their volume),
/// every file's SHA-256 equal to `SHA256SUMS` (the last entry), and the database dumps complete
/// with the row counts the metadata recorded.
pub fn verify(path: &Path) -> Report {
    let mut report = Report { path: path.to_path_buf(), ..Report::default() };
    if let Err(e) = verify_into(path, &mut report) {
        report.problems.push(format!("{e:#}"));
    }
    report
}

fn verify_into(path: &Path, report: &mut Report) -> Result<()> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let gz = flate2::read::GzDecoder::new(io::BufReader::with_capacity(1 << 20, file));
    let mut archive = tar::Archive::new(gz);
    let mut sums_seen: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    let mut recorded: Option<BTreeMap<Vec<u8>, String>> = None;
    let mut symlinks: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut seen: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut dumps: BTreeMap<String, dumpstats::DumpStats> = BTreeMap::new();
    let mut after_sums = false;
    let entries = archive.entries().context("the archive is not a gzip-compressed tar")?;
    for (i, entry) in entries.enumerate() {
        let mut entry = entry.context("the archive is truncated or corrupt (gzip or tar stream broken)")?;
        let name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&name).into_owned();
        report.entries += 1;
        if after_sums {
            report.problems.push(format!("entry {shown:?} comes after {CHECKSUMS}, which must be last"));
        }
        if i == 0 {
            if name != METADATA.as_bytes() {
                bail!("the first entry is {shown:?}, not {METADATA}: not an xtask archive");
            }
            let mut text = Vec::new();
            entry.read_to_end(&mut text).context("read metadata.json")?;
            let meta = parse_metadata(&text)?;
            sums_seen.insert(name.clone(), hex(&Sha256::digest(&text)));
            report.files += 1;
            report.metadata = Some(meta);
            seen.insert(name);
            continue;
        }
        let meta = report.metadata.as_ref().context("metadata missing")?;
        if let Err(e) = check_entry_path(&name, meta, &symlinks) {
            report.problems.push(format!("entry {shown:?}: {e}"));
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Symlink => {
                symlinks.insert(trim_slash(&name).to_vec());
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let same_volume = volume_of(&name) == volume_of(&target) && volume_of(&name).is_some();
                if !same_volume || check_entry_path(&target, meta, &symlinks).is_err() || !seen.contains(&target) {
                    report.problems.push(format!(
                        "entry {shown:?}: hard link to {:?} points outside its volume or to nothing before it",
                        String::from_utf8_lossy(&target)
                    ));
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if name == CHECKSUMS.as_bytes() {
                    let mut text = Vec::new();
                    entry.read_to_end(&mut text).context("read SHA256SUMS")?;
                    match parse_sums(&text) {
                        Ok(m) => recorded = Some(m),
                        Err(e) => report.problems.push(format!("{e:#}")),
                    }
                    after_sums = true;
                    continue;
                }
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                let is_dump = name.starts_with(b"postgres/") && name.ends_with(b".sql");
                let mut stats = dumpstats::DumpStats::default();
                loop {
                    let n = entry
                        .read(&mut buf)
                        .with_context(|| format!("entry {shown:?}: the archive is truncated or corrupt"))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    if is_dump {
                        stats.feed(&buf[..n]);
                    }
                    report.bytes += n as u64;
                }
                if is_dump {
                    dumps.insert(shown.clone(), stats);
                }
                report.files += 1;
                sums_seen.insert(name.clone(), hex(&hasher.finalize()));
            }
            _ => {}
        }
        seen.insert(trim_slash(&name).to_vec());
        seen.insert(name);
    }
    // Reading the tar's end does not reach the gzip trailer: read on so its CRC is checked.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).context("the archive is truncated or corrupt (gzip trailer)")?;
    let Some(recorded) = recorded else {
        report.problems.push(format!("the checksum entry {CHECKSUMS} is missing: the archive is incomplete"));
        return Ok(());
    };
    for (name, digest) in &sums_seen {
        let shown = String::from_utf8_lossy(name);
        match recorded.get(name) {
            None => report.problems.push(format!("entry {shown:?} has no checksum in {CHECKSUMS}")),
            Some(d) if d != digest => {
                report.problems.push(format!("entry {shown:?}: checksum mismatch (content altered)"))
            }
            Some(_) => {}
        }
    }
    for name in recorded.keys().filter(|n| !sums_seen.contains_key(*n)) {
        report
            .problems
            .push(format!("{CHECKSUMS} lists {:?}, which is not in the archive", String::from_utf8_lossy(name)));
    }
    let meta = report.metadata.clone().context("metadata missing")?;
    if let Some(pg) = &meta.postgres {
        for entry in std::iter::once(&pg.globals_entry).chain(pg.databases.iter().map(|d| &d.entry)) {
            if !sums_seen.contains_key(entry.as_bytes()) {
                report.problems.push(format!("entry {entry:?} named by the metadata is missing"));
            }
        }
        for db in &pg.databases {
            let Some(stats) = dumps.get(&db.entry) else { continue };
            if !stats.complete {
                report.problems.push(format!("entry {:?}: the dump lacks pg_dump's completion trailer", db.entry));
            }
            if stats.tables != db.tables {
                report.problems.push(format!("entry {:?}: row counts differ from the metadata's", db.entry));
            }
        }
    }
    for v in &meta.volumes {
        if !seen.iter().any(|s| s.starts_with(trim_slash(v.entry.as_bytes()))) {
            report.problems.push(format!("volume {} named by the metadata has no entries", v.name));
        }
    }
    Ok(())
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
        Some(FORMAT_VERSION) => {}
        Some(v) if v > FORMAT_VERSION => bail!(
            "metadata.json: archive format version {v} is newer than this tool understands ({FORMAT_VERSION}); update the xtask (git pull) and retry"
        ),
        v => bail!("metadata.json: unknown archive format version {v:?}"),
    }
    serde_json::from_slice(text).context("metadata.json does not match format version 1")
}

fn trim_slash(p: &[u8]) -> &[u8] {
    p.strip_suffix(b"/").unwrap_or(p)
}

fn volume_of(p: &[u8]) -> Option<&[u8]> {
    let rest = p.strip_prefix(b"volumes/")?;
    Some(rest.split(|&b| b == b'/').next().unwrap_or_default())
}

/// Where an entry may be: the fixed names, `postgres/<file>`, or inside a listed volume; never
/// absolute, never `..`, never below an earlier symlink entry.
fn check_entry_path(name: &[u8], meta: &Metadata, symlinks: &BTreeSet<Vec<u8>>) -> Result<()> {
    if name.starts_with(b"/") {
        bail!("absolute path: refused, it would write outside the restore target");
    }
    let parts: Vec<&[u8]> = name.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == b"..") {
        bail!("path with '..': refused, it would write outside the restore target");
    }
    match parts.as_slice() {
        [n] if *n == METADATA.as_bytes() || *n == CHECKSUMS.as_bytes() => {}
        [b"postgres", _] => {}
        [b"volumes", vol, ..] => {
            if !meta.volumes.iter().any(|v| v.name.as_bytes() == *vol) {
                bail!("volume {:?} is not listed in the metadata", String::from_utf8_lossy(vol));
            }
        }
        _ => bail!("unexpected entry outside metadata.json, SHA256SUMS, postgres/ and volumes/"),
    }
    for i in 1..parts.len() {
        let ancestor = parts[..i].join(&b'/');
        if symlinks.contains(&ancestor) {
            bail!("would be written through the symlink {:?}: refused", String::from_utf8_lossy(&ancestor));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

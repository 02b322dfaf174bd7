//! Writing an archive atomically: a temporary name beside the final one (0600), the zstd
//! (multi-threaded) or gzip (in parallel blocks) stream optionally sealed by age, entries in a stable order, `SHA256SUMS` last,
//! fsync, rename; removed on error or drop.

use super::*;
use crate::model::offsite::Encryption;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::Digest;
use sink::{Mirror, Sink};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use tap::{Tapped, TarOut};

/// Counts of what a volume stream added.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct StreamStats {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

/// An archive being written under a temporary name next to its final one. Dropped without
/// `commit`, it removes the temporary file: no half-written archive ever has the final name.
pub struct ArchiveWriter {
    final_path: PathBuf,
    /// None: no local file (the tar stream goes only to a tap).
    temp_path: Option<PathBuf>,
    builder: Option<tar::Builder<TarOut<Compressed>>>,
    sums: Vec<(Vec<u8>, [u8; 32])>,
    /// The index's lines so far (format version 4 and later: set by [`write_metadata`]).
    index: Option<IndexSpool>,
    /// The index's SHA-256 once written (what a signature names).
    index_sha256: Option<[u8; 32]>,
    pub stats: StreamStats,
}

/// The index being written: its lines in a private unnamed file beside the archive (an index
/// of a million entries is a few hundred MiB), batched.
struct IndexSpool {
    file: crate::files::Unnamed,
    batch: Vec<u8>,
    len: u64,
}

impl IndexSpool {
    fn push(&mut self, entry: &index::Entry) -> Result<()> {
        self.batch.extend_from_slice(&index::to_line(entry));
        if self.batch.len() >= 1 << 20 {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        use std::io::Write;
        self.file.writer().write_all(&self.batch).context("write the archive's index")?;
        self.len += self.batch.len() as u64;
        self.batch.clear();
        Ok(())
    }
}

impl ArchiveWriter {
    /// The archive `final_path` (whose name, when it says a codec, must say `compression`'s),
    /// compressed on `threads` cores.
    pub fn create(final_path: &Path, compression: Compression, threads: usize) -> Result<ArchiveWriter> {
        ArchiveWriter::create_with(final_path, compression, threads, Outputs { local: true, ..Outputs::default() })
    }

    /// [`ArchiveWriter::create`] with `out`: the compressed stream encrypted by age to the seal's
    /// recipients on its way to the file (the plaintext never reaches the disk), the bytes as
    /// stored also written to a mirror (an upload while the archive is written), the tar stream
    /// also to a tap; without `local`, only to the tap (no file at all).
    pub fn create_with(
        final_path: &Path,
        compression: Compression,
        threads: usize,
        out: Outputs,
    ) -> Result<ArchiveWriter> {
        let dir = final_path.parent().context("archive path has no directory")?;
        let name = final_path.file_name().context("archive path has no file name")?.to_string_lossy();
        if let Some(named) = Codec::of_name(&name).filter(|c| *c != compression.codec) {
            bail!("archive {name}: its name says {named}, but it would be written with {}", compression.codec);
        }
        let temp_path = out.local.then(|| dir.join(format!(".{name}.tmp-{}", std::process::id())));
        let gz = match &temp_path {
            Some(temp_path) => {
                let file = crate::files::create_private(temp_path)?;
                let sink = Sink::new(file, out.seal, out.mirror).inspect_err(|_| {
                    let _ = std::fs::remove_file(temp_path);
                })?;
                Some(compression::Encoder::new(BufWriter::with_capacity(1 << 20, sink), compression, threads)?)
            }
            None => None,
        };
        let mut builder = tar::Builder::new(TarOut::new(gz, out.tap)?);
        builder.mode(tar::HeaderMode::Complete);
        builder.follow_symlinks(false);
        Ok(ArchiveWriter {
            final_path: final_path.to_path_buf(),
            temp_path,
            builder: Some(builder),
            sums: Vec::new(),
            index: None,
            index_sha256: None,
            stats: StreamStats::default(),
        })
    }

    #[cfg(test)]
    pub fn temp_path(&self) -> &Path {
        self.temp_path.as_deref().expect("a local archive")
    }

    fn builder(&mut self) -> Result<&mut tar::Builder<TarOut<Compressed>>> {
        self.builder.as_mut().context("archive already committed")
    }

    /// An entry starts: where in the tar stream (a zstd frame may end here).
    fn begin_entry(&mut self) -> Result<u64> {
        let out = self.builder()?.get_mut();
        if let Some(encoder) = out.compress_mut() {
            encoder.boundary().context("write the archive")?;
        }
        Ok(out.position())
    }

    /// The index line of the entry just written with `header` as `name` (canonical as the
    /// grammar reads it back: a directory without its `/`).
    fn record(
        &mut self,
        h: &tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        sha256: Option<[u8; 32]>,
        at: u64,
    ) -> Result<()> {
        let Some(spool) = self.index.as_mut() else { return Ok(()) };
        let kind = grammar::kind_of(h.entry_type())?;
        let entry = index::Entry {
            name: grammar::canonical(name, kind == grammar::Kind::Dir)?.to_vec(),
            kind,
            size: if kind == grammar::Kind::File { h.size()? } else { 0 },
            mode: h.mode().unwrap_or(0) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            link: link.map(<[u8]>::to_vec),
            sha256,
            at,
        };
        spool.push(&entry)
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
        let at = self.begin_entry()?;
        self.builder()?.append_data(&mut header, path, &mut reader).with_context(|| format!("write entry {path}"))?;
        if reader.bytes != size {
            bail!("entry {path}: expected {size} bytes, got {}", reader.bytes);
        }
        let digest: [u8; 32] = reader.hasher.finalize().into();
        self.record(&header, path.as_bytes(), None, Some(digest), at)?;
        self.sums.push((path.as_bytes().to_vec(), digest));
        self.stats.entries += 1;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    /// Copies every entry of the tar stream `source` (a volume's root, as `tar -c -C ROOT .`
    /// makes it) under `volumes/<name>/`, keeping type, mode, owner, mtime and link targets;
    /// hard links are re-pointed into the same prefix. Calls `progress(bytes)` after each file;
    /// its error (the copy was interrupted) stops the copy.
    pub fn add_volume_tar(
        &mut self,
        name: &str,
        source: impl Read,
        progress: &mut dyn FnMut(u64) -> Result<()>,
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
        progress: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<()> {
        let mut header = entry.header().clone();
        if header.entry_type() == tar::EntryType::Continuous {
            header.set_entry_type(tar::EntryType::Regular);
        }
        let kind = header.entry_type();
        let dest_path = Path::new(OsStr::from_bytes(&dest)).to_path_buf();
        let at = self.begin_entry()?;
        let builder = self.builder.as_mut().context("archive already committed")?;
        let (mut link, mut digest, mut written) = (None, None, dest.clone());
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = header.size()?;
                let mut reader = HashingReader::new(entry);
                builder
                    .append_data(&mut header, &dest_path, &mut reader)
                    .with_context(|| format!("write entry {}", dest_path.display()))?;
                let sha: [u8; 32] = reader.hasher.finalize().into();
                self.sums.push((dest.clone(), sha));
                digest = Some(sha);
                stats.files += 1;
                stats.bytes += size;
                progress(size)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().context("hard link without target")?.into_owned();
                let mut t = prefix.as_bytes().to_vec();
                t.extend_from_slice(&relative_in_volume(&target)?);
                builder.append_link(&mut header, &dest_path, Path::new(OsStr::from_bytes(&t)))?;
                link = Some(t);
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().context("symlink without target")?.into_owned();
                builder.append_link(&mut header, &dest_path, Path::new(OsStr::from_bytes(&target)))?;
                link = Some(target);
            }
            tar::EntryType::Directory => {
                if !written.ends_with(b"/") {
                    written.push(b'/');
                }
                builder.append_data(&mut header, Path::new(OsStr::from_bytes(&written)), io::empty())?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                builder.append_data(&mut header, &dest_path, io::empty())?;
            }
            other => bail!("volume {name}: entry {} has an unsupported type {other:?}", dest_path.display()),
        }
        self.record(&header, &written, link.as_deref(), digest, at)
    }

    /// Writes `SHA256SUMS`, finishes the streams, fsyncs, renames to the final name and fsyncs
    /// the directory. Returns the archive's size.
    pub fn commit(self) -> Result<u64> {
        self.commit_all().map(|c| c.size)
    }

    /// [`ArchiveWriter::commit`], returning also the SHA-256 of the bytes as stored and the
    /// mirror (still open, for its owner to finish) or why it dropped out.
    pub fn commit_all(mut self) -> Result<Committed> {
        let index_at = self.write_index()?;
        let sums_at = self.begin_entry()?;
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
        let (compressed, tapped) = builder.into_inner().context("finish the tar stream")?.finish();
        let (Some(compressed), Some(temp_path)) = (compressed, &self.temp_path) else {
            let tapped = tapped.context("an archive without a file has a tap")?;
            let (size, sha256) = (tapped.bytes, tapped.sha256);
            let index_sha256 = self.index_sha256;
            return Ok(Committed {
                size,
                sha256,
                mirror: None,
                mirror_error: None,
                tapped: Some(tapped),
                index_sha256,
            });
        };
        let marks = compression::Marks { index_at, sums_at };
        let buffered = compressed.finish(marks).context("finish the compressed stream")?;
        let sink = buffered.into_inner().map_err(|e| e.into_error()).context("flush the archive")?;
        let finished = sink.finish()?;
        let file = finished.file;
        file.sync_all().context("fsync the archive")?;
        let size = file.metadata()?.len();
        drop(file);
        std::fs::rename(temp_path, &self.final_path)
            .with_context(|| format!("rename {} to {}", temp_path.display(), self.final_path.display()))?;
        if let Some(dir) = self.final_path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        let (mirror, mirror_error) = (finished.mirror, finished.mirror_error);
        Ok(Committed { size, sha256: finished.sha256, mirror, mirror_error, tapped, index_sha256: self.index_sha256 })
    }
}

impl ArchiveWriter {
    /// Starts the index (format version 4 and later): every entry from here on gets its line.
    fn start_index(&mut self) -> Result<()> {
        let near = self.final_path.parent().context("archive path has no directory")?;
        let file = crate::files::Unnamed::create(near).context("a private file for the archive's index")?;
        self.index = Some(IndexSpool { file, batch: Vec::new(), len: 0 });
        Ok(())
    }

    /// Adds the index entry (when there is one); returns where it starts in the tar stream.
    fn write_index(&mut self) -> Result<u64> {
        let Some(mut spool) = self.index.take() else { return Ok(0) };
        spool.spill()?;
        let at = self.builder()?.get_ref().position();
        self.add_file(index::INDEX, spool.len, spool.file.reader())?;
        self.index_sha256 = self.sums.last().map(|(_, d)| *d);
        Ok(at)
    }
}

/// A committed archive: its size and digest as stored, and its mirror (still open) with the
/// error that made it stop taking bytes, if any.
pub struct Committed {
    /// Of the file as stored; without a file, of the tar stream the tap took.
    pub size: u64,
    pub sha256: [u8; 32],
    pub mirror: Option<Mirror>,
    pub mirror_error: Option<io::Error>,
    pub tapped: Option<Tapped>,
    /// The index's SHA-256 (format version 4 and later).
    pub index_sha256: Option<[u8; 32]>,
}

/// Where [`ArchiveWriter::create_with`] sends an archive.
#[derive(Default)]
pub struct Outputs<'a> {
    /// Write the local file (else only the tap gets the stream).
    pub local: bool,
    pub seal: Option<&'a Encryption>,
    pub mirror: Option<Mirror>,
    pub tap: Option<crate::engine::process::ToolWriter>,
}

type Compressed = compression::Encoder<BufWriter<Sink>>;

impl Drop for ArchiveWriter {
    fn drop(&mut self) {
        if let (Some(_), Some(temp_path)) = (&self.builder, &self.temp_path) {
            let _ = std::fs::remove_file(temp_path);
        }
    }
}

/// Adds `metadata.json` as the first entry.
pub fn write_metadata(w: &mut ArchiveWriter, meta: &Metadata) -> Result<()> {
    let json = serde_json::to_vec_pretty(meta)?;
    if meta.format_version >= INDEXED_SINCE {
        w.start_index()?;
    }
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

//! The tree form of an archive in a restic repository, read back as one tar stream of the
//! archive's own layout, so that the one strict grammar (verify, pull, the restore's one pass)
//! decides what is used. The archive is then two snapshots: its record (the tar stream of
//! `metadata.json`, the dumps, the volumes kept in the stream form and `SHA256SUMS`), and its
//! trees (each volume and bind whose metadata names a `tree` path, read by restic where it
//! lived). [`merge`] writes the record's entries in order, then each tree's entries renamed
//! under its volume's prefix, then `SHA256SUMS` with a line for every file. The record's index
//! (format version 4) lists its own entries only: the merged archive is read as version 3,
//! without one.
//! Nothing here trusts the trees: a name that leaves its volume, a hard link out of it, an
//! unsupported type fail the merge, and the grammar judges the rest (special files, modes).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use anyhow::{bail, Context, Result};
use sha2::Digest;

use super::{format_sums, grammar, parse_metadata, volume_prefix, HashingReader, Metadata, VolumeInfo};
use super::{CHECKSUMS, INDEX, INDEXED_SINCE, METADATA};

/// Where the trees of an archive come from: made ready once the record was read whole (its
/// digest checked), then each tree's files as a tar stream of its root (`tar -c -C ROOT .`).
/// `go_on` fails once nobody reads the merged stream any more (a read of the metadata alone):
/// preparing stops there.
pub trait Trees {
    fn prepare(&mut self, meta: &Metadata, go_on: &dyn Fn() -> Result<()>) -> Result<()>;
    fn tar(&mut self, volume: &VolumeInfo) -> Result<Box<dyn Read + Send>>;
}

/// Writes the archive the record stream `record` and its `trees` make into `out` (see the
/// module's header). The record is read to its very end before any tree is touched.
/// With `only` (volume names: a restore of some volumes), the trees of the others are left out,
/// from the metadata too: the merged archive is then a view that holds those volumes alone.
pub fn merge(
    record: impl Read,
    trees: &mut dyn Trees,
    out: impl Write,
    (go_on, only): (&dyn Fn() -> Result<()>, Option<&BTreeSet<String>>),
) -> Result<()> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, record));
    let (mut meta, mut sums_header, mut sums) = (None, None, Vec::new());
    for entry in archive.entries().context("read the archive's record")? {
        let mut entry = entry.context("read the archive's record")?;
        let path = entry.path_bytes().into_owned();
        if sums_header.is_some() {
            bail!("the archive's record has an entry after {CHECKSUMS}: refused");
        }
        if path == CHECKSUMS.as_bytes() {
            sums_header = Some(entry.header().clone());
        } else if path == INDEX.as_bytes() {
            // It lists the record's entries only; the merged archive has none (see `as_merged`).
        } else if path == METADATA.as_bytes() && meta.is_none() {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).context("read the record's metadata.json")?;
            let merged = as_merged(parse_metadata(&text).context("read the record's metadata.json")?, only);
            let json = serde_json::to_vec_pretty(&merged)?;
            let mut header = entry.header().clone();
            header.set_size(json.len() as u64);
            builder.append_data(&mut header, METADATA, &json[..]).context("write metadata.json")?;
            sums.push((path, sha2::Sha256::digest(&json).into()));
            meta = Some(merged);
        } else if let Some(digest) = copy_entry(&mut builder, &mut entry, path.clone(), None)? {
            sums.push((path, digest));
        }
    }
    // To its end: a record read from restic is checked against its digest there.
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("read the archive's record to its end")?;
    let meta = meta.context("the archive's record has no metadata.json")?;
    let mut header = sums_header.context("the archive's record has no SHA256SUMS")?;
    builder.get_mut().flush().context("hand on the archive's record")?;
    trees.prepare(&meta, go_on)?;
    for v in meta.volumes.iter().filter(|v| v.tree.is_some()) {
        let source = trees.tar(v)?;
        add_tree(&mut builder, &v.name, source, &mut sums).with_context(|| format!("read the tree of {}", v.name))?;
    }
    let text = format_sums(&sums);
    header.set_size(text.len() as u64);
    builder.append_data(&mut header, CHECKSUMS, &text[..]).context("write SHA256SUMS")?;
    builder.into_inner().context("finish the archive's tar stream")?.flush()?;
    Ok(())
}

/// The record's metadata as the merged archive's: an index (format version 4) would list the
/// record's entries only, so the merged archive is read as version 3, without one (every file
/// still in `SHA256SUMS`; `ls` and `cat` read it whole, as any restic archive).
/// With `only`, the tree volumes not in it are left out ([`leave_out`]).
pub fn as_merged(mut meta: Metadata, only: Option<&BTreeSet<String>>) -> Metadata {
    if meta.format_version >= INDEXED_SINCE {
        meta.format_version = INDEXED_SINCE - 1;
        meta.entries.retain(|e| e.path != INDEX);
    }
    leave_out(meta, only)
}

/// The metadata of a merged archive read with `only` (volume names): the tree volumes not in it
/// left out (the stream-form ones are in the record and stay). The same on metadata it was
/// already applied to.
pub fn leave_out(mut meta: Metadata, only: Option<&BTreeSet<String>>) -> Metadata {
    if let Some(only) = only {
        let left_out: Vec<String> = meta
            .volumes
            .iter()
            .filter(|v| v.tree.is_some() && !only.contains(&v.name))
            .map(|v| volume_prefix(&v.name))
            .collect();
        meta.volumes.retain(|v| !left_out.contains(&v.entry));
        meta.entries.retain(|e| !left_out.contains(&e.path));
    }
    meta
}

/// The room the trees of `meta` take once restored (their sizes as measured at backup): the
/// metadata is untrusted input, so sizes that overflow add up to "more than any disk".
pub fn room_needed(meta: &Metadata) -> u64 {
    meta.volumes.iter().filter(|v| v.tree.is_some()).filter_map(|v| v.size_bytes).fold(0, u64::saturating_add)
}

/// The entries of one tree's tar stream under `volumes/<name>/` (or `binds/<id>/`); each
/// regular file's SHA-256 added to `sums`.
fn add_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &str,
    source: impl Read,
    sums: &mut Vec<(Vec<u8>, [u8; 32])>,
) -> Result<()> {
    let prefix = volume_prefix(name);
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, source));
    for entry in archive.entries().context("read the tree's tar stream")? {
        let mut entry = entry.context("read the tree's tar stream")?;
        let rel = relative(&entry.path_bytes())?;
        let top = rel.split(|&b| b == b'/').next().unwrap_or_default();
        if grammar::RESERVED.iter().any(|r| top.starts_with(r.as_bytes())) {
            continue;
        }
        let dest = [prefix.as_bytes(), &rel].concat();
        if let Some(digest) = copy_entry(builder, &mut entry, dest.clone(), Some(&prefix))? {
            sums.push((dest, digest));
        }
    }
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("read the tree's tar stream to its end")?;
    Ok(())
}

/// Adds `entry` as `dest` with its header kept (type, mode, owner, mtime, link target); a hard
/// link's target is put under `prefix` when given (a tree's). A regular file's SHA-256.
fn copy_entry<R: Read, W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &mut tar::Entry<'_, R>,
    mut dest: Vec<u8>,
    prefix: Option<&str>,
) -> Result<Option<[u8; 32]>> {
    let mut header = entry.header().clone();
    let shown = String::from_utf8_lossy(&dest).into_owned();
    match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            header.set_entry_type(tar::EntryType::Regular);
            let mut reader = HashingReader::new(entry);
            builder.append_data(&mut header, as_path(&dest), &mut reader).with_context(|| format!("write {shown}"))?;
            return Ok(Some(reader.hasher.finalize().into()));
        }
        tar::EntryType::Link => {
            let target = entry.link_name_bytes().context("a hard link without target")?.into_owned();
            let target = match prefix {
                Some(p) => [p.as_bytes(), &relative(&target)?].concat(),
                None => target,
            };
            builder.append_link(&mut header, as_path(&dest), as_path(&target))?;
        }
        tar::EntryType::Symlink => {
            let target = entry.link_name_bytes().context("a symbolic link without target")?.into_owned();
            builder.append_link(&mut header, as_path(&dest), as_path(&target))?;
        }
        tar::EntryType::Directory => {
            if !dest.ends_with(b"/") {
                dest.push(b'/');
            }
            builder.append_data(&mut header, as_path(&dest), io::empty())?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            builder.append_data(&mut header, as_path(&dest), io::empty())?;
        }
        other => bail!("{shown}: an entry of unsupported type {other:?}"),
    }
    Ok(None)
}

fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// `./a/b` -> `a/b`, `.` -> empty (the tree's root); an absolute path or `..` is refused.
fn relative(p: &[u8]) -> Result<Vec<u8>> {
    if p.starts_with(b"/") {
        bail!("an absolute path in a tree: {:?}", String::from_utf8_lossy(p));
    }
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!("a path with '..' in a tree: {:?}", String::from_utf8_lossy(p)),
            other => parts.push(other),
        }
    }
    Ok(parts.join(&b'/'))
}

/// The path `tree` of a volume's metadata, checked: absolute, with no `.`, `..` or empty
/// component (what a restic snapshot's path can be), so that it names one place under a
/// staging directory and nothing else.
pub fn tree_path(tree: &str) -> Result<&str> {
    let rel = tree.strip_prefix('/').with_context(|| format!("tree path {tree:?} is not absolute"))?;
    if rel.is_empty() || rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        bail!("tree path {tree:?} is not a plain absolute path: refused");
    }
    Ok(rel)
}

/// The merged archive of [`merge`] made on a thread of its own and read through the returned
/// reader; a failure there is the reader's error (never a clean end), and dropping the reader
/// stops the thread at its next write.
pub fn spawn_merge(
    record: Box<dyn Read + Send>,
    mut trees: Box<dyn Trees + Send>,
    only: Option<BTreeSet<String>>,
) -> Box<dyn Read + Send> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(2);
    let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader_gone = gone.clone();
    std::thread::spawn(move || {
        let mut out = io::BufWriter::with_capacity(1 << 20, Sending { tx: tx.clone() });
        let go_on = || match reader_gone.load(std::sync::atomic::Ordering::SeqCst) {
            true => bail!("the merged archive is read no more"),
            false => Ok(()),
        };
        let result = merge(record, trees.as_mut(), &mut out, (&go_on, only.as_ref())).and_then(|()| Ok(out.flush()?));
        drop(trees);
        if let Err(e) = result {
            let _ = tx.send(Err(io::Error::other(format!("{e:#}"))));
        }
    });
    Box::new(Receiving { rx, buf: Vec::new(), at: 0, gone })
}

struct Sending {
    tx: SyncSender<io::Result<Vec<u8>>>,
}

impl Write for Sending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx.send(Ok(buf.to_vec())).map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader is gone"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Receiving {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    at: usize,
    /// Set when dropped: the merge stops preparing trees nobody will read.
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Receiving {
    fn drop(&mut self) {
        self.gone.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Read for Receiving {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            match self.rx.recv() {
                Ok(chunk) => (self.buf, self.at) = (chunk?, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;

//! Loading a verified archive's content into the engine: a volume's entries into a volume (a
//! helper container runs `tar -x` on a stream this module writes), a database dump into psql.
//! Every read comes from the descriptor that was verified ([`Verified`]); every entry passes
//! the same grammar again and must match the fingerprint verification recorded for it (a file's
//! last chunk is held back until its content matched), the tar headers handed to the helper are
//! built here from the parsed entry (never raw header bytes), and a dump reaches psql only from
//! a private spooled copy that matched. Used by restore and by `verify --deep`.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::archive::grammar::{self, Checked, Grammar, Kind, Place};
use crate::archive::{Metadata, Report, Rules, Source};
use crate::engine::docker::{Docker, DockerCmd};

/// An archive that passed verification, with the open descriptor it was read from.
pub struct Verified {
    pub src: Source,
    pub report: Report,
    pub rules: Rules,
}

impl Verified {
    /// Verifies `src`; an archive with any problem is refused, each problem listed.
    pub fn check(src: Source, rules: Rules) -> Result<Verified> {
        let report = crate::archive::verify_source_for_reading(&src, rules);
        if !report.ok() {
            let problems: Vec<String> = report.problems.iter().map(|p| format!("\n    problem: {p}")).collect();
            bail!("{} failed verification; nothing was changed{}", src.path.display(), problems.concat());
        }
        Ok(Verified { src, report, rules })
    }

    pub fn meta(&self) -> &Metadata {
        self.report.metadata.as_ref().expect("a verified archive has metadata")
    }

    /// A fresh grammar pass over the same descriptor, expecting the verified metadata.
    fn pass(&self) -> Grammar {
        let mut g = Grammar::new(self.rules.allow_special);
        g.expect(self.meta());
        g
    }

    fn expected(&self, c: &Checked) -> Result<[u8; 32]> {
        self.report.manifest.get(&c.name).copied().ok_or_else(|| {
            anyhow!("entry {} was not in the archive when it was verified: refused", grammar::shown(&c.name))
        })
    }
}

fn changed(c: &Checked) -> anyhow::Error {
    anyhow!("entry {} changed since the archive was verified: the restore is stopped", grammar::shown(&c.name))
}

/// Serves a file entry's data while hashing it, holding back the last chunk until the whole
/// content matched the verified fingerprint: a changed file is never completed in its target.
struct CheckedReader<'a, R> {
    inner: R,
    entry: &'a Checked,
    expected: [u8; 32],
    hasher: Sha256,
    held: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    finished: bool,
}

impl<R: Read> Read for CheckedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out.len() {
                let n = buf.len().min(self.out.len() - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            let mut fresh = vec![0u8; 256 * 1024];
            let n = self.inner.read(&mut fresh)?;
            fresh.truncate(n);
            self.hasher.update(&fresh);
            if n == 0 {
                self.finished = true;
                let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
                if self.entry.fingerprint(Some(&digest)) != self.expected {
                    return Err(io::Error::other(changed(self.entry).to_string()));
                }
            }
            self.out = std::mem::replace(&mut self.held, fresh);
            self.out_pos = 0;
        }
    }
}

/// A fresh tar header from the parsed entry.
fn header_for(c: &Checked) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(match c.kind {
        Kind::File => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink => tar::EntryType::Symlink,
        Kind::HardLink => tar::EntryType::Link,
        Kind::Char => tar::EntryType::Char,
        Kind::Block => tar::EntryType::Block,
        Kind::Fifo => tar::EntryType::Fifo,
    });
    h.set_size(if c.kind == Kind::File { c.size } else { 0 });
    h.set_mode(c.mode);
    h.set_uid(c.uid);
    h.set_gid(c.gid);
    h.set_mtime(c.mtime);
    h
}

fn dot(rel: &[u8]) -> PathBuf {
    let mut p = b"./".to_vec();
    p.extend_from_slice(rel);
    PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&p))
}

/// What a volume's extraction stream held.
#[derive(Debug, Default)]
pub struct Written {
    /// Regular file names (hard links included, as `find -type f` counts them).
    pub files: u64,
    /// Symlinks, hard links and the volume root (path below the root, empty for the root) and
    /// their mtimes:
    /// tar leaves these at the restore time.
    pub times: Vec<(Vec<u8>, u64)>,
}

/// Writes a tar of volume `name`'s entries relative to its root, ready for `tar -x -C ROOT`.
/// Every directory entry is written once more at the end, deepest first, so its mtime is set
/// after its contents were created (busybox tar sets it only when it creates the directory).
pub fn volume_entries(v: &Verified, name: &str, out: &mut dyn Write) -> Result<Written> {
    volume_entries_under(v, name, out, b"")
}

/// [`volume_entries`] with every path below `under` (a staging directory, ending in `/`).
pub fn volume_entries_under(v: &Verified, name: &str, out: &mut dyn Write, under: &[u8]) -> Result<Written> {
    volume_entries_selected(v, name, out, under, &|_| true)
}

/// [`volume_entries_under`] with only the entries whose archive name `wanted` accepts (a
/// single-path restore): their parents are left to `tar -x` to create; a hard link whose target
/// is not wanted is refused (named).
pub fn volume_entries_selected(
    v: &Verified,
    name: &str,
    out: &mut dyn Write,
    under: &[u8],
    wanted: &dyn Fn(&[u8]) -> bool,
) -> Result<Written> {
    let mut g = v.pass();
    let mut archive = v.src.tar();
    let mut stream = VolumeStream::new(out, name, under);
    let mut written = 0usize;
    for e in archive.entries().context("read the archive")? {
        let mut e = e.context("read the archive")?;
        let c = g.check(&mut e)?;
        let Place::Volume { volume, rel } = &c.place else { continue };
        if volume != name || !wanted(&c.name) {
            continue;
        }
        if let (Kind::HardLink, Some(target)) = (c.kind, &c.link) {
            if !wanted(target) {
                bail!(
                    "{} is a hard link to {}, which is not among the paths asked for: add it",
                    grammar::shown(&c.name),
                    grammar::shown(target)
                );
            }
        }
        let expected = v.expected(&c)?;
        if c.kind == Kind::File {
            let mut reader = CheckedReader {
                inner: &mut e,
                entry: &c,
                expected,
                hasher: Sha256::new(),
                held: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                finished: false,
            };
            stream.append(&c, rel, Some(&mut reader)).with_context(|| format!("write {}", grammar::shown(&c.name)))?;
        } else {
            if c.fingerprint(None) != expected {
                return Err(changed(&c));
            }
            stream.append(&c, rel, None)?;
        }
        written += 1;
    }
    let prefix = crate::archive::volume_prefix(name);
    let verified = v.report.manifest.keys().filter(|k| k.starts_with(prefix.trim_end_matches('/').as_bytes()));
    let verified = verified.filter(|k| k.len() == prefix.len() - 1 || k.get(prefix.len() - 1) == Some(&b'/'));
    let verified = verified.filter(|k| wanted(k)).count();
    if verified != written {
        bail!("volume {name}: {written} entries now, {verified} when verified: the archive changed, the restore is stopped");
    }
    Ok(stream.finish()?.1)
}

/// The tar stream a helper extracts into a volume: headers built from parsed entries, paths
/// below `under`, hard links re-pointed there, and at the end every directory once more (in
/// reverse order: the grammar puts every directory after its parent, so each comes before its
/// parent) so its mtime is set after its contents were created. The directories wait in a
/// private spool file, not in memory. Shared by the one pass and by extraction from a
/// [`Verified`] archive.
struct VolumeStream<W: Write> {
    builder: tar::Builder<W>,
    under: Vec<u8>,
    /// Length of `volumes/<name>/` (or `binds/<id>/`), stripped from hard link targets.
    prefix_len: usize,
    dirs: DirSpool,
    written: Written,
    /// Whether `written.times` is final (see [`VolumeStream::times`]).
    times_final: bool,
    /// A file's data passes through here in reads of up to [`CHUNK`] bytes.
    chunk: Vec<u8>,
    /// The bind (host directory) this stream fills, where set-uid and set-gid bits are never
    /// written on anything but a directory; None for a volume.
    bind: Option<String>,
    /// Paths whose set-uid/set-gid bits were dropped (the first few) and how many in all.
    setid_dropped: (Vec<Vec<u8>>, u64),
}

/// Bytes per read of a file's data: more than the sink's buffer ([`SINK_BUFFER`]) holds, so
/// large files go straight to the helper while headers and small files are gathered.
const CHUNK: usize = 1 << 20;

/// The buffer in front of a helper's stream: the 512-byte headers must not each become a write.
const SINK_BUFFER: usize = 128 << 10;

impl<W: Write> VolumeStream<W> {
    fn new(out: W, volume: &str, under: &[u8]) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        let prefix_len = crate::archive::volume_prefix(volume).len();
        let written = Written::default();
        let chunk = vec![0u8; CHUNK];
        let bind = volume.starts_with(crate::archive::BINDS).then(|| volume.to_string());
        VolumeStream {
            builder,
            under: under.to_vec(),
            prefix_len,
            dirs: DirSpool::default(),
            written,
            times_final: false,
            chunk,
            bind,
            setid_dropped: Default::default(),
        }
    }

    /// In a bind, a file's set-uid and set-gid bits are dropped (a host directory must not gain
    /// a set-uid program from an archive); a directory keeps its set-gid (group inheritance).
    fn drop_setid(&mut self, c: &Checked, rel: &[u8], h: &mut tar::Header) {
        if self.bind.is_none() || c.kind == Kind::Dir || c.mode & 0o6000 == 0 {
            return;
        }
        h.set_mode(c.mode & !0o6000);
        if self.setid_dropped.0.len() < 5 {
            self.setid_dropped.0.push(rel.to_vec());
        }
        self.setid_dropped.1 += 1;
    }

    fn at(&self, rel: &[u8]) -> Vec<u8> {
        [self.under.as_slice(), rel].concat()
    }

    /// Appends one entry; `data` for a regular file.
    fn append(&mut self, c: &Checked, rel: &[u8], data: Option<&mut dyn Read>) -> Result<()> {
        let mut h = header_for(c);
        self.drop_setid(c, rel, &mut h);
        let path = dot(&self.at(rel));
        match (&c.kind, &c.link, data) {
            (Kind::File, _, Some(data)) => {
                // The header alone (no data: tar adds no padding), then the data in large reads.
                self.builder.append_data(&mut h, &path, io::empty())?;
                self.append_file_data(data, c.size)?;
                self.written.files += 1;
            }
            (Kind::HardLink, Some(t), _) => {
                let target = dot(&self.at(&t[self.prefix_len..]));
                self.builder.append_link(&mut h, &path, target)?;
                self.written.files += 1;
                // tar may make the link after the directories' own entries: like a symlink, its
                // directory's mtime is set again at the end (and the link's own, the file's).
                self.written.times.push((self.at(rel), c.mtime));
            }
            (Kind::Symlink, Some(t), _) => {
                let target = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(t);
                self.builder.append_link(&mut h, &path, target)?;
                self.written.times.push((self.at(rel), c.mtime));
            }
            (Kind::Dir, _, _) => {
                self.builder.append_data(&mut h, &path, io::empty())?;
                if rel.is_empty() {
                    self.written.times.push((self.at(rel), c.mtime));
                }
                self.dirs.push(rel, c)?;
            }
            _ => self.builder.append_data(&mut h, &path, io::empty())?,
        }
        Ok(())
    }

    /// A file's `size` bytes from `data` (which must end there), padded to the next block.
    fn append_file_data(&mut self, data: &mut dyn Read, size: u64) -> Result<()> {
        let out = self.builder.get_mut();
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            let n = data.read(&mut self.chunk[..want])?;
            if n == 0 {
                bail!("the data ended {left} bytes before the size in its header");
            }
            out.write_all(&self.chunk[..n])?;
            left -= n as u64;
        }
        // The reader's end is where a checked reader compares the digest: reach it.
        if data.read(&mut self.chunk[..1])? != 0 {
            bail!("the data is longer than the size in its header");
        }
        let padding = (512 - size % 512) % 512;
        out.write_all(&[0u8; 512][..padding as usize])?;
        Ok(())
    }

    /// Once every entry is appended: the mtimes tar will not set (symlinks, their parent
    /// directories, the root), as the input of `xargs -0 -n 3 touch -h` in a helper.
    fn times(&mut self) -> Result<Vec<u8>> {
        self.settle_times()?;
        Ok(touch_input(&self.written.times))
    }

    /// Completes `written.times` (once).
    fn settle_times(&mut self) -> Result<()> {
        self.dirs.flush()?;
        if !self.times_final {
            self.reset_link_parents()?;
            self.times_final = true;
        }
        Ok(())
    }

    /// The directories once more, children before parents, and the end of the stream.
    fn finish(mut self) -> Result<(W, Written)> {
        if let (Some(bind), (some, n @ 1..)) = (&self.bind, &self.setid_dropped) {
            let shown: Vec<String> = some.iter().map(|p| grammar::shown(p)).collect();
            eprintln!(
                "warning: {bind}: set-uid/set-gid bits dropped from {n} file(s) ({}{}): a restore never writes \
                 them into a host directory; set them again by hand if they are truly wanted",
                shown.join(", "),
                if *n > 5 { ", …" } else { "" }
            );
        }
        self.settle_times()?;
        let dirs = std::mem::take(&mut self.dirs);
        let (builder, under) = (&mut self.builder, &self.under);
        dirs.each_from_last(&mut |rel, mut h| {
            let path = dot(&[under.as_slice(), &rel].concat());
            builder.append_data(&mut h, path, io::empty()).map_err(anyhow::Error::from)
        })?;
        self.builder.finish()?;
        Ok((self.builder.into_inner()?, self.written))
    }
}

impl<W: Write> VolumeStream<W> {
    /// Creating a link can leave its directory at the restore time (tar's own order, or a
    /// placeholder replaced at the end): after the links' own times, their parent directories'
    /// (read back from the spool), then the root's, are set again.
    fn reset_link_parents(&mut self) -> Result<()> {
        let root = self.at(b"");
        let (mut links, roots): (Vec<_>, Vec<_>) = self.written.times.drain(..).partition(|(p, _)| *p != root);
        let parents: std::collections::BTreeSet<Vec<u8>> = links
            .iter()
            .filter_map(|(p, _)| p.iter().rposition(|&b| b == b'/').map(|i| p[..i].to_vec()))
            .filter(|p| p.len() > root.len())
            .collect();
        if !parents.is_empty() {
            let under = &self.under;
            self.dirs.each_from_last(&mut |rel, h| {
                let at = [under.as_slice(), &rel].concat();
                if parents.contains(&at) {
                    links.push((at, h.mtime().unwrap_or(0)));
                }
                Ok(())
            })?;
        }
        links.extend(roots);
        self.written.times = links;
        Ok(())
    }
}

/// The directories of a volume's stream, waiting for the end of it in a private file that is
/// already unlinked. Each record ends with its path's length, so the file reads back from its
/// end without an index: nothing grows in memory with the number of directories.
#[derive(Default)]
struct DirSpool {
    file: Option<io::BufWriter<std::fs::File>>,
    end: u64,
}

impl DirSpool {
    /// Writes out what is buffered, before anything is read back.
    fn flush(&mut self) -> Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.flush().context("write the directory spool")?;
        }
        Ok(())
    }

    /// Records a directory: its path below the volume and its header.
    fn push(&mut self, rel: &[u8], c: &Checked) -> Result<()> {
        if self.file.is_none() {
            let path = std::env::temp_dir().join(format!(
                ".xtask-dirs-{}-{}",
                std::process::id(),
                DIR_SPOOLS.fetch_add(1, Ordering::SeqCst)
            ));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("create {}", path.display()))?;
            let _ = std::fs::remove_file(&path);
            self.file = Some(io::BufWriter::with_capacity(64 << 10, file));
        }
        let out = self.file.as_mut().expect("opened above");
        let len = u32::try_from(rel.len()).context("a path longer than 4 GiB")?;
        out.write_all(rel)?;
        out.write_all(header_for(c).as_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        self.end += rel.len() as u64 + 512 + 4;
        Ok(())
    }

    /// Every directory recorded, last first: (path below the volume, header) to `each`.
    fn each_from_last(&self, each: &mut dyn FnMut(Vec<u8>, tar::Header) -> Result<()>) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let Some(writer) = self.file.as_ref() else { return Ok(()) };
        if !writer.buffer().is_empty() {
            bail!("internal error: the directory spool was read before it was flushed");
        }
        let file = writer.get_ref();
        let mut at = self.end;
        while at > 0 {
            let mut len = [0u8; 4];
            file.read_exact_at(&mut len, at - 4)?;
            let len = u64::from(u32::from_le_bytes(len));
            let start = at - 4 - 512 - len;
            let mut rel = vec![0u8; len as usize];
            file.read_exact_at(&mut rel, start)?;
            let mut h = tar::Header::new_gnu();
            file.read_exact_at(h.as_mut_bytes(), start + len)?;
            each(rel, h)?;
            at = start;
        }
        Ok(())
    }
}

static DIR_SPOOLS: AtomicUsize = AtomicUsize::new(0);

/// Counts the bytes passing through to `progress`.
struct Counting<'a, W> {
    inner: W,
    progress: &'a mut dyn FnMut(u64),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if crate::signals::interrupted() {
            return Err(io::Error::other("interrupted by a signal"));
        }
        let n = self.inner.write(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Fills volume `target` (which the caller made empty) with volume `name`'s entries of the
/// archive, keeping owners (numerically), modes, mtimes and links; `progress` gets the bytes.
pub fn fill_volume(
    docker: &Docker,
    v: &Verified,
    name: &str,
    target: &str,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    fill_volume_under(docker, v, name, target, b"", progress)
}

/// [`fill_volume`] into the directory `under` (ending in `/`) of the volume's root.
pub fn fill_volume_under(
    docker: &Docker,
    v: &Verified,
    name: &str,
    target: &str,
    under: &[u8],
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    fill_volume_selected(docker, v, name, target, under, &|_| true, progress)
}

/// [`fill_volume_under`] with only the entries `wanted` accepts ([`volume_entries_selected`]).
pub fn fill_volume_selected(
    docker: &Docker,
    v: &Verified,
    name: &str,
    target: &str,
    under: &[u8],
    wanted: &dyn Fn(&[u8]) -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let child = Counting { inner: docker.volume_untar(target)?, progress };
    let mut out = io::BufWriter::with_capacity(SINK_BUFFER, child);
    let written = volume_entries_selected(v, name, &mut out, under, wanted).and_then(|w| Ok((w, out.flush()?)));
    let child = match out.into_inner() {
        Ok(c) => c.inner,
        Err(e) => e.into_inner().into_parts().0.inner,
    };
    match written {
        Ok((w, ())) => {
            child.finish()?;
            set_times(docker, target, &touch_input(&w.times))?;
            Ok(w.files)
        }
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe) => {
            Err(child.failed())
        }
        Err(e) => {
            drop(child);
            Err(e)
        }
    }
}

/// `touch -h -d @T PATH` arguments for each (path below the root, mtime), NUL-separated.
fn touch_input(times: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let mut input = Vec::new();
    for (rel, mtime) in times {
        input.extend_from_slice(format!("-d\0@{mtime}\0/v/0/").as_bytes());
        input.extend_from_slice(rel);
        input.push(0);
    }
    input
}

/// Gives symlinks and the volume root their archived mtimes (`touch -h -d @T` through
/// `xargs -0` in a helper: the names travel on its stdin, never through a shell), where the
/// extracting helper could not ([`VolumeSink::send_times`]).
fn set_times(docker: &Docker, target: &str, input: &[u8]) -> Result<()> {
    if input.is_empty() {
        return Ok(());
    }
    let cmd = docker.helper_writer(target, &["xargs", "-0", "-n", "3", "touch", "-h"]);
    let mut child = docker.pipe_into(&cmd)?;
    if child.write_all(input).is_err() {
        return Err(child.failed());
    }
    child.finish().context("set the mtimes of the symlinks and the volume root")
}

/// A dump in a private file with no name ([`crate::files::Unnamed`]): copied out of an archive
/// to be loaded, or made by a backup before it goes into the archive. What was checked as it was
/// written is what every later use reads: there is no name to open again.
pub struct Spooled {
    file: crate::files::Unnamed,
    near: PathBuf,
}

impl Spooled {
    /// A new empty one on the filesystem of `near`.
    pub fn create(near: &Path) -> Result<Spooled> {
        Ok(Spooled { file: crate::files::Unnamed::create(near)?, near: near.to_path_buf() })
    }

    /// Another new empty one on the same filesystem as this one (a derived file).
    pub fn sibling(&self) -> Result<Spooled> {
        Spooled::create(&self.near)
    }

    /// A small one holding `text`.
    pub fn of_text(near: &Path, text: &str) -> Result<Spooled> {
        let spooled = Spooled::create(near)?;
        spooled.writer().write_all(text.as_bytes()).context("write a private file")?;
        Ok(spooled)
    }

    /// The descriptor to write through.
    pub fn writer(&self) -> &std::fs::File {
        self.file.writer()
    }

    /// Its bytes from the start.
    pub fn reader(&self) -> crate::files::AtReader<&std::fs::File> {
        self.file.reader()
    }

    /// Its size.
    pub fn len(&self) -> Result<u64> {
        self.file.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        self.file.is_empty()
    }

    /// Written data made durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync()
    }

    /// Its whole text (a roles dump: small).
    pub fn read_to_string(&self) -> Result<String> {
        let mut text = String::new();
        self.reader().read_to_string(&mut text).context("read a spooled dump")?;
        Ok(text)
    }
}

/// The file name prefix of dumps spooled by earlier versions: a later run removes those whose
/// process is gone.
pub const SPOOL_PREFIX: &str = ".restore-";

/// Copies dump `entry` into a private file in `dir`, checking its fingerprint and that it is
/// plain SQL; only a dump that passed is handed back to be loaded.
pub fn spool_dump(v: &Verified, entry: &str, dir: &Path) -> Result<Spooled> {
    let mut g = v.pass();
    let mut archive = v.src.tar();
    for e in archive.entries().context("read the archive")? {
        let mut e = e.context("read the archive")?;
        let c = g.check(&mut e)?;
        let Place::Dump { engine } = c.place else { continue };
        if c.name != entry.as_bytes() {
            continue;
        }
        let (spooled, taken) = spool(&mut e, engine, dir)?;
        if c.fingerprint(Some(&taken.digest)) != v.expected(&c)? {
            return Err(changed(&c));
        }
        if let Some(why) = taken.dump.as_ref().and_then(|stats| stats.violation()) {
            bail!("entry {entry:?}: {why}; refused, nothing of it is loaded");
        }
        return Ok(spooled);
    }
    bail!("{}: no entry {entry}", v.src.path.display())
}

/// Streams the spooled file into the stdin of `cmd` (a psql).
pub fn pipe_file(docker: &Docker, spooled: &Spooled, cmd: &DockerCmd) -> Result<()> {
    pipe_file_after(docker, spooled, cmd, || Ok(()))
}

/// [`pipe_file`], calling `started` once the command runs and before any byte goes to it (on
/// its error the command's stdin is closed unwritten).
pub fn pipe_file_after(
    docker: &Docker,
    spooled: &Spooled,
    cmd: &DockerCmd,
    started: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let mut f = spooled.reader();
    let mut child = docker.pipe_into(cmd)?;
    started()?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if crate::signals::interrupted() {
            bail!("interrupted by a signal");
        }
        let n = f.read(&mut buf).context("read a spooled dump")?;
        if n == 0 {
            break;
        }
        if child.write_all(&buf[..n]).is_err() {
            return Err(child.failed());
        }
    }
    child.finish()
}

/// Writes `text` into the stdin of `cmd`.
pub fn pipe_text(docker: &Docker, text: &str, cmd: &DockerCmd) -> Result<()> {
    let mut child = docker.pipe_into(cmd)?;
    if child.write_all(text.as_bytes()).is_err() {
        return Err(child.failed());
    }
    child.finish()
}

#[cfg(test)]
mod tests;

/// A volume being staged during the one pass: the helper's tar stream.
struct VolumeStage {
    volume: String,
    target: String,
    /// Where it is written ([`OnePass::places`]).
    place: String,
    stream: VolumeStream<io::BufWriter<crate::engine::docker::VolumeSink>>,
}

/// Restore's one pass over an archive: verification by the grammar and the checksums, each
/// target volume's entries extracted into its staging directory `under` (through a helper, with
/// headers built here) and each dump spooled into `dir`, all from the same bytes as they stream.
/// Nothing is committed here: a problem anywhere fails the pass and the caller discards the
/// staging. `targets` maps archived volume names to the stack's volumes.
pub struct OnePass<'a> {
    pub docker: &'a Docker,
    pub ui: &'a crate::ui::Ui,
    pub targets: &'a std::collections::BTreeMap<String, String>,
    /// Where a target's copy is staged (mounted at `/v/0`, the copy under `under`): the target
    /// itself, or the engine's directory beside its `_data` (`engine::staging::Staging`).
    pub places: &'a dyn Fn(&str) -> String,
    pub under: &'a [u8],
    pub dir: &'a Path,
}

impl OnePass<'_> {
    /// Runs the pass; returns the verification report and the spooled dumps by entry name.
    pub fn run(&self, src: &Source, rules: Rules) -> Result<(Report, std::collections::BTreeMap<String, Spooled>)> {
        let mut open: Option<VolumeStage> = None;
        let mut dumps = std::collections::BTreeMap::new();
        let mut failure: Option<anyhow::Error> = None;
        let report = crate::archive::verify_source_with(src, rules, &mut |entry, c| {
            let taken = self.take(entry, c, &mut open, &mut dumps);
            if let Err(e) = &taken {
                failure.get_or_insert(anyhow!("{e:#}"));
            }
            taken
        });
        let closed = open.take().map_or(Ok(()), |stage| self.close(stage));
        if let Some(e) = failure {
            return Err(e);
        }
        if !report.ok() {
            let problems: Vec<String> = report.problems.iter().map(|p| format!("\n    problem: {p}")).collect();
            bail!("{} failed verification; nothing was replaced{}", src.path.display(), problems.concat());
        }
        closed?;
        Ok((report, dumps))
    }

    fn take(
        &self,
        entry: &mut tar::Entry<'_, crate::archive::Inflated>,
        c: &Checked,
        open: &mut Option<VolumeStage>,
        dumps: &mut std::collections::BTreeMap<String, Spooled>,
    ) -> Result<Option<crate::archive::Taken>> {
        match &c.place {
            Place::Dump { engine } => {
                let name = String::from_utf8_lossy(&c.name).into_owned();
                let (spooled, taken) = spool(entry, *engine, self.dir)?;
                dumps.insert(name, spooled);
                Ok(Some(taken))
            }
            Place::Volume { volume, rel } => {
                let Some(target) = self.targets.get(volume) else { return Ok(None) };
                if open.as_ref().is_some_and(|s| &s.volume != volume) {
                    self.close(open.take().expect("checked above"))?;
                }
                if open.is_none() {
                    *open = Some(self.open(volume, target)?);
                }
                let stage = open.as_mut().expect("opened above");
                match self.write(stage, entry, c, rel) {
                    // The helper stopped reading: its own error (stderr) says why, not the pipe.
                    Err(e) if is_broken_pipe(&e) => {
                        let helper = stage.stream.builder.get_mut().get_mut().failure();
                        Err(helper.context(format!("stage volume {target}")))
                    }
                    written => written.with_context(|| format!("stage volume {target}")),
                }
            }
            _ => Ok(None),
        }
    }

    fn open(&self, volume: &str, target: &str) -> Result<VolumeStage> {
        self.ui.step(&format!("stage volume {target} (its services keep running)"));
        let place = (self.places)(target);
        let sink = io::BufWriter::with_capacity(SINK_BUFFER, self.docker.volume_untar(&place)?);
        Ok(VolumeStage {
            volume: volume.into(),
            target: target.into(),
            place,
            stream: VolumeStream::new(sink, volume, self.under),
        })
    }

    fn write(
        &self,
        stage: &mut VolumeStage,
        entry: &mut tar::Entry<'_, crate::archive::Inflated>,
        c: &Checked,
        rel: &[u8],
    ) -> Result<Option<crate::archive::Taken>> {
        crate::signals::check()?;
        if c.kind != Kind::File {
            stage.stream.append(c, rel, None)?;
            return Ok(None);
        }
        let mut reader = crate::archive::HashingReader::new(entry);
        stage.stream.append(c, rel, Some(&mut reader))?;
        Ok(Some(crate::archive::Taken { digest: reader.hasher.finalize().into(), bytes: reader.bytes, dump: None }))
    }

    /// Ends a volume's stream and waits for the helper, which also sets the symlinks' and the
    /// root's mtimes (a helper of their own does on a transport that cannot carry them).
    fn close(&self, mut stage: VolumeStage) -> Result<()> {
        let times = stage.stream.times()?;
        let sent = stage.stream.builder.get_ref().get_ref().send_times(&times)?;
        let (out, _) = stage.stream.finish()?;
        let sink = out.into_inner().map_err(|e| e.into_error())?;
        sink.finish().with_context(|| format!("stage volume {}", stage.target))?;
        if sent {
            return Ok(());
        }
        set_times(self.docker, &stage.place, &times)
    }
}

/// Whether `e` is, at its root, a write into a pipe whose reader went away.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe))
}

/// Copies a dump entry into a private file in `dir`, hashing it and reading its statistics.
fn spool(
    entry: &mut impl Read,
    engine: crate::archive::DbEngine,
    dir: &Path,
) -> Result<(Spooled, crate::archive::Taken)> {
    let spooled = Spooled::create(dir)?;
    let mut file = spooled.writer();
    let mut stats = crate::archive::dumpstats::new(engine);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes = 0;
    loop {
        let n = entry.read(&mut buf).context("read the archive")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        stats.feed(&buf[..n]);
        bytes += n as u64;
        file.write_all(&buf[..n]).context("write a spooled dump")?;
    }
    let taken = crate::archive::Taken { digest: hasher.finalize().into(), bytes, dump: Some(stats) };
    Ok((spooled, taken))
}

//! Where an archive is read from: one open local file (O_NOFOLLOW, its identity fixed) or a
//! remote object streamed and checked against its sidecar's digest; decrypted by age when sealed.

use super::*;
use crate::engine::crypt;
use crate::engine::restic::Restic;
use anyhow::{bail, Context, Result};
use sha2::Digest;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    /// A remote's next read, already started ([`Source::read_again_soon`]), and when.
    next: std::sync::Mutex<Option<(std::time::Instant, Box<dyn Read + Send>)>>,
    /// Start the next read's stream along with the next one.
    ahead: std::sync::atomic::AtomicBool,
    /// A local archive's digest as first read in full ([`Source::stored_digest`], which the
    /// signature, encryption and own-archive checks judge): every later read must hash to it,
    /// so a file rewritten in place after its check fails the read that would use it.
    pinned: std::sync::OnceLock<[u8; 32]>,
}

enum Origin {
    File(File),
    Remote {
        remote: std::sync::Arc<crate::engine::remote::Remote>,
        object: String,
        sha256: [u8; 32],
    },
    /// A restic snapshot of the archive's uncompressed tar stream, checked against the digest
    /// its push recorded.
    Restic {
        restic: std::sync::Arc<Restic>,
        snapshot: String,
        file: String,
        tar_sha256: [u8; 32],
    },
    /// The tree form: the record snapshot's tar stream (checked against its digest) merged with
    /// the file trees of the snapshot `trees` ([`trees::merge`]).
    ResticTrees {
        restic: std::sync::Arc<Restic>,
        snapshot: String,
        file: String,
        tar_sha256: [u8; 32],
        trees: String,
        /// Only these volumes' trees ([`Source::only_volumes`]); None: all.
        only: Option<std::collections::BTreeSet<String>>,
    },
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below. O_NOFOLLOW:
        // a symbolic link planted in the backup directory is not read as an archive.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("open {} (a symbolic link is refused)", path.display()))?;
        Source::of_file(file, path)
    }

    /// The archive already open as `file` (found at `path`, for messages): read only through it.
    pub fn of_file(file: File, path: &Path) -> Result<Source> {
        let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
        if !meta.file_type().is_file() {
            bail!("{} is not a regular file: refused as an archive", path.display());
        }
        let identity = if starts_sealed(&file) { Some(crypt::identity(&path.display().to_string())?) } else { None };
        Ok(Source::of(Origin::File(file), identity, path.to_path_buf()))
    }

    /// The object `name` of `remote`, whose bytes must hash to `sha256` (its sidecar).
    pub fn remote(
        remote: std::sync::Arc<crate::engine::remote::Remote>,
        name: &str,
        sha256: [u8; 32],
    ) -> Result<Source> {
        let shown = remote.shown(name);
        let identity = if name.ends_with(crypt::SUFFIX) { Some(crypt::identity(&shown)?) } else { None };
        Ok(Source::of(Origin::Remote { remote, object: name.to_string(), sha256 }, identity, shown.into()))
    }

    /// The tar stream stored as `file` in `snapshot` of a restic repository, whose bytes must
    /// hash to `tar_sha256` (its completion tag). Shown as `REMOTE:SNAPSHOT:FILE`.
    pub fn restic(restic: std::sync::Arc<Restic>, snapshot: &str, file: &str, tar_sha256: [u8; 32]) -> Source {
        let path = format!("{}:{}:{file}", restic.spec.name, &snapshot[..snapshot.len().min(8)]).into();
        let origin = Origin::Restic { restic, snapshot: snapshot.to_string(), file: file.to_string(), tar_sha256 };
        Source::of(origin, None, path)
    }

    /// An archive in the tree form: the record `file` in `snapshot` (its bytes hashing to
    /// `tar_sha256`) and the file trees of snapshot `trees`, read back as one tar stream of the
    /// archive's layout. Shown as `REMOTE:SNAPSHOT:FILE`.
    pub fn restic_trees(
        restic: std::sync::Arc<Restic>,
        (snapshot, file, tar_sha256): (&str, &str, [u8; 32]),
        trees: &str,
    ) -> Source {
        let path = format!("{}:{}:{file}", restic.spec.name, &snapshot[..snapshot.len().min(8)]).into();
        let origin = Origin::ResticTrees {
            restic,
            snapshot: snapshot.to_string(),
            file: file.to_string(),
            tar_sha256,
            trees: trees.to_string(),
            only: None,
        };
        Source::of(origin, None, path)
    }

    /// The metadata `meta` of this archive as a read from now on gives it: for the tree form, as
    /// the merged archive says it (`trees::as_merged`, the trees [`Source::only_volumes`] left out).
    pub fn as_read(&self, meta: Metadata) -> Metadata {
        match &self.origin {
            Origin::ResticTrees { only, .. } => trees::as_merged(meta, only.as_ref()),
            _ => meta,
        }
    }

    /// A stream whose first entry is the archive's `metadata.json` (for a read of it alone, then
    /// [`Source::as_read`]): [`Source::tar`], but for the tree form the record alone, so that
    /// no tree is restored for it (its digest is checked by the whole read that uses it, as for
    /// any archive read in a stream).
    pub fn head(&self) -> Result<tar::Archive<Inflated>> {
        match &self.origin {
            Origin::ResticTrees { restic, snapshot, file, .. } => {
                Ok(tar::Archive::new(inflate::plain(Box::new(restic.dump(snapshot, file)?))))
            }
            _ => Ok(self.tar()),
        }
    }

    /// A restore of some volumes: a tree-form archive read from now on holds only these of its
    /// trees (restic restores no others: a database restored from an archive beside a photo
    /// library does not restore the library first). A read already started ahead is dropped.
    /// Nothing for other archives, which are read whole.
    pub fn only_volumes(&mut self, names: std::collections::BTreeSet<String>) {
        if let Origin::ResticTrees { only, .. } = &mut self.origin {
            *only = Some(names);
            *self.next.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
    }

    fn of(origin: Origin, identity: Option<PathBuf>, path: PathBuf) -> Source {
        Source {
            origin,
            identity,
            path,
            next: Default::default(),
            ahead: Default::default(),
            pinned: Default::default(),
        }
    }

    /// For a remote archive about to be read twice in a row (a restore: its metadata, then the
    /// one pass). Each read of a remote starts a download, and restic derives its key for each
    /// (half a second by design): the second is started along with the first and waits, its
    /// pipe full, until it is read (unless that is more than 20 s later: then a new one). Nothing
    /// for a local file.
    /// Not for the tree form: its second read restores the trees of the volumes a restore
    /// chose meanwhile ([`Source::only_volumes`]), and its metadata is read from the record alone
    /// ([`Source::head`]).
    pub fn read_again_soon(&self) {
        if !matches!(self.origin, Origin::ResticTrees { .. }) {
            self.ahead.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The stream is the tar itself (a restic snapshot), not compressed.
    fn plain(&self) -> bool {
        matches!(self.origin, Origin::Restic { .. } | Origin::ResticTrees { .. })
    }

    /// The archive's bytes by range, for a partial read of a seekable archive (archive/
    /// seekable.rs): a local file by offset on its one descriptor, a remote object by ranged
    /// requests. None when the archive can only be read whole: encrypted (the footer is inside
    /// age's stream), a restic snapshot (a tar stream, not compressed), or a local file whose
    /// whole digest a check pinned ([`Source::stored_digest`]: every later read must hash to it,
    /// which a read by ranges cannot prove).
    pub fn ranges(&self) -> Result<Option<Box<dyn super::seekable::Ranges + '_>>> {
        if self.encrypted() || self.is_pinned() {
            return Ok(None);
        }
        Ok(match &self.origin {
            Origin::File(file) => {
                let len = file.metadata().with_context(|| format!("stat {}", self.path.display()))?.len();
                Some(Box::new(super::seekable::LocalRanges { file, len }))
            }
            Origin::Remote { remote, object, .. } => {
                Some(Box::new(super::seekable::RemoteRanges::new(remote.clone(), object)?))
            }
            Origin::Restic { .. } | Origin::ResticTrees { .. } => None,
        })
    }

    pub fn encrypted(&self) -> bool {
        self.identity.is_some()
    }

    /// A check read the whole archive and pinned its digest: it is read whole from then on.
    pub fn is_pinned(&self) -> bool {
        self.pinned.get().is_some()
    }

    /// The size and SHA-256 of a local archive's bytes as stored, read through its own open
    /// descriptor; None for a remote one, whose bytes are checked against its sidecar as they
    /// arrive. The first digest read is pinned: every later read of this source (and of its
    /// duplicates) must hash to it, or fails at its end, so what a check judged here is what
    /// is used, even if the file is rewritten in place afterwards.
    pub fn stored_digest(&self) -> Result<Option<(u64, [u8; 32])>> {
        let Origin::File(_) = &self.origin else { return Ok(None) };
        let mut hashing = HashingReader::new(self.raw()?);
        let size = io::copy(&mut hashing, &mut io::sink()).with_context(|| format!("read {}", self.path.display()))?;
        let digest: [u8; 32] = hashing.hasher.finalize().into();
        let _ = self.pinned.set(digest);
        Ok(Some((size, digest)))
    }

    /// A fresh reader of the archive's compressed bytes from the start (a positioned read of the
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
        if let Origin::File(f) = &self.origin {
            let file = f.try_clone().with_context(|| format!("duplicate the descriptor of {}", self.path.display()))?;
            let reader = crate::files::AtReader::new(file);
            return Ok(match self.pinned.get() {
                Some(&expected) => Box::new(DigestChecked {
                    inner: HashingReader::new(reader),
                    expected,
                    name: self.path.display().to_string(),
                    recorded_by: "its check read before",
                    checked: false,
                }),
                None => Box::new(reader),
            });
        }
        let mut next = self.next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One left waiting long (a confirmation at the terminal) may have lost its connection.
        let stream = match next.take() {
            Some((started, stream)) if started.elapsed() < WAITS_AT_MOST => stream,
            _ => self.download()?,
        };
        if self.ahead.swap(false, std::sync::atomic::Ordering::SeqCst) {
            *next = Some((std::time::Instant::now(), self.download()?));
        }
        Ok(stream)
    }

    /// A new download of a remote archive, checked against its recorded digest as it streams.
    fn download(&self) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.origin {
            Origin::File(_) => bail!("{} is a local file", self.path.display()),
            Origin::Remote { remote, object, sha256 } => Box::new(DigestChecked {
                inner: HashingReader::new(remote.cat(object)?),
                expected: *sha256,
                name: self.path.display().to_string(),
                recorded_by: "its push recorded",
                checked: false,
            }),
            Origin::Restic { restic, snapshot, file, tar_sha256 } => Box::new(DigestChecked {
                inner: HashingReader::new(restic.dump(snapshot, file)?),
                expected: *tar_sha256,
                name: self.path.display().to_string(),
                recorded_by: "its push recorded",
                checked: false,
            }),
            Origin::ResticTrees { restic, snapshot, file, tar_sha256, trees, only } => {
                let record = DigestChecked {
                    inner: HashingReader::new(restic.dump(snapshot, file)?),
                    expected: *tar_sha256,
                    name: self.path.display().to_string(),
                    recorded_by: "its push recorded",
                    checked: false,
                };
                let staged = StagedTrees { restic: restic.clone(), snapshot: trees.clone(), dir: None };
                trees::spawn_merge(Box::new(record), Box::new(staged), only.clone())
            }
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
            Origin::Restic { restic, snapshot, file, tar_sha256 } => Origin::Restic {
                restic: restic.clone(),
                snapshot: snapshot.clone(),
                file: file.clone(),
                tar_sha256: *tar_sha256,
            },
            Origin::ResticTrees { restic, snapshot, file, tar_sha256, trees, only } => Origin::ResticTrees {
                restic: restic.clone(),
                snapshot: snapshot.clone(),
                file: file.clone(),
                tar_sha256: *tar_sha256,
                trees: trees.clone(),
                only: only.clone(),
            },
        };
        let copy = Source::of(origin, self.identity.clone(), self.path.clone());
        if let Some(&pinned) = self.pinned.get() {
            let _ = copy.pinned.set(pinned);
        }
        Ok(copy)
    }

    /// The archive's tar stream, decompressed, from the start: zstd or gzip by its first bytes,
    /// which must agree with its name ([`Codec::detect`]). Decompressed on a thread of its own;
    /// it ends only where the archive's bytes end.
    pub fn tar(&self) -> tar::Archive<Inflated> {
        let stream = if self.plain() {
            inflate::plain(self.reader())
        } else {
            inflate::inflate(self.reader(), self.path.display().to_string())
        };
        tar::Archive::new(stream)
    }
}

/// The trees snapshot of an archive in the tree form, restored by restic into a private
/// temporary directory (0700, removed when dropped) once the record was read, each tree then
/// read from there by `tar` (never through a symbolic link on its way: a tree path a forged
/// snapshot made a link is refused).
struct StagedTrees {
    restic: std::sync::Arc<Restic>,
    snapshot: String,
    dir: Option<crate::files::HeldTempDir>,
}

/// The prefix of the directories the trees are restored into, under `$TMPDIR`.
const TREES_DIR: &str = "xtask-trees";

/// Where in that directory restic restores them.
const RESTORED: &str = "restored";

impl trees::Trees for StagedTrees {
    fn prepare(&mut self, meta: &Metadata, go_on: &dyn Fn() -> Result<()>) -> Result<()> {
        for v in &meta.volumes {
            if let Some(tree) = &v.tree {
                trees::tree_path(tree).with_context(|| format!("volume {} of the archive", v.name))?;
            }
        }
        let paths: Vec<&str> = meta.volumes.iter().filter_map(|v| v.tree.as_deref()).collect();
        if paths.is_empty() {
            return Ok(());
        }
        for left in crate::files::sweep_unheld(TREES_DIR) {
            eprintln!("note: removed {}, file trees left by an interrupted read", left.display());
        }
        let held = crate::files::held_temp_dir(TREES_DIR)?;
        let dir = &held.dir;
        // Room for the trees as they were measured at backup (restic restores them whole).
        let needed = trees::room_needed(meta);
        let free = crate::files::free_space(&dir.path)?;
        if free < needed {
            bail!(
                "not enough room in {} for the file trees of the archive ({} bytes needed, {free} free): restic \
                 restores them there before they are read; set TMPDIR to a directory on a larger disk",
                std::env::temp_dir().display(),
                needed
            );
        }
        // Into a directory of its own: no tree path names the `.held` lock beside it.
        let target = dir.path.join(RESTORED);
        self.restic.restore_into(&self.snapshot, &target, &paths, go_on).with_context(|| {
            format!("restore the file trees of snapshot {} into {}", self.snapshot, target.display())
        })?;
        self.dir = Some(held);
        Ok(())
    }

    fn tar(&mut self, volume: &VolumeInfo) -> Result<Box<dyn Read + Send>> {
        let dir = &self.dir.as_ref().context("the trees were not restored")?.dir;
        let tree = volume.tree.as_deref().context("a volume without a tree")?;
        let staged = dir.path.join(RESTORED).join(trees::tree_path(tree)?);
        crate::files::refuse_symlinks(&staged)
            .with_context(|| format!("the tree of {} in snapshot {}", volume.name, self.snapshot))?;
        if !std::fs::symlink_metadata(&staged).is_ok_and(|m| m.is_dir()) {
            bail!("snapshot {} has no directory {tree} (the tree of {}): refused", self.snapshot, volume.name);
        }
        let tar = crate::engine::process::Tool::find("tar", "to read a file tree restored from restic")?;
        let args = ["-c", "-f", "-", "--numeric-owner", "-C", &staged.display().to_string(), "."].map(String::from);
        Ok(Box::new(tar.stream(&args, None)?))
    }
}

/// How long a download started ahead ([`Source::read_again_soon`]) may wait to be read.
const WAITS_AT_MOST: std::time::Duration = std::time::Duration::from_secs(20);

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

/// A reader that fails at once (a source that could not be started).
struct Failing(Option<io::Error>);

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(self.0.take().unwrap_or_else(|| io::Error::other("the archive could not be read")))
    }
}

/// Hashes what it passes on; at the end, a digest other than the expected one is a read error.
pub(crate) struct DigestChecked<R> {
    pub(crate) inner: HashingReader<R>,
    pub(crate) expected: [u8; 32],
    pub(crate) name: String,
    /// Who vouched for `expected`, for the error ("its push recorded").
    pub(crate) recorded_by: &'static str,
    /// The end was reached and the digest matched: later reads only repeat the end.
    pub(crate) checked: bool,
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
                    "{}: its bytes hash to {}, not to the SHA-256 {} ({}): it was changed or cut short \
                     since; refused",
                    self.name,
                    hex(&got),
                    self.recorded_by,
                    hex(&self.expected)
                )));
            }
            self.checked = true;
        }
        Ok(n)
    }
}

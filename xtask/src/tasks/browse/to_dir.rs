//! `cargo xtask restore ARCHIVE --path VOLUME/PATH … --to DIR`: single paths of an archive
//! into a host directory. The entries come from `listing::read_entries` (the whole archive by
//! the strict grammar, every file matched against `SHA256SUMS` before a byte is written). They
//! are written into a private staging directory beside DIR (`.xtask-restore-PID-NAME`, mode
//! 0700), every name opened component by component from the staging's descriptor without
//! following a symbolic link (`openat` with `O_NOFOLLOW`, files created `O_EXCL`), so no name
//! of the archive can lead outside it; once complete (files synced) the staging is renamed to
//! DIR, which must not exist or be empty: nothing is ever overwritten, and a failure leaves DIR
//! as it was. Layout: `DIR/VOLUME/PATH` (binds `DIR/binds/ID/…`, dumps `DIR/databases/…`), as
//! `ls` shows the names. Modes are kept without set-uid, set-gid and sticky bits, mtimes kept,
//! owners not (the files belong to the user running the restore; `ls --long` shows the archived
//! ones); device nodes and FIFOs are not created (named); a hard link whose target is outside
//! the paths asked for is named, not written.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use super::{open, Which};
use crate::archive::grammar::Kind;
use crate::archive::index::Entry;
use crate::archive::listing::{self, Selector};
use crate::archive::Rules;
use crate::context::Ctx;

/// `restore --path … --to DIR`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    pub which: Which,
    /// `VOLUME/PATH`s: each entry and what is below it.
    pub paths: Vec<String>,
    pub to: PathBuf,
    pub allow_special: bool,
}

/// What was written.
#[derive(Debug, Default, serde::Serialize)]
pub struct Written {
    pub files: u64,
    pub bytes: u64,
    pub dirs: u64,
    pub links: u64,
    /// Entries not written, each with why.
    pub left_out: Vec<String>,
}

/// Restores the selected paths into `opts.to` (see the module's header); `dry_run`: only says
/// what it would write where, once DIR was checked.
pub fn run(ctx: &Ctx, opts: &Options, dry_run: bool) -> Result<Written> {
    let selector = Selector::parse(&opts.paths)?;
    if opts.paths.is_empty() {
        bail!("--to needs at least one --path VOLUME/PATH");
    }
    let (src, gate) = open(ctx, &opts.which)?;
    let target = Target::check(&opts.to)?;
    if dry_run {
        let shown: Vec<String> = selector.roots().iter().map(|r| listing::shown(r)).collect();
        println!(
            "would restore {} of {} into {} (nothing written: --dry-run)",
            shown.join(", "),
            src.path.display(),
            opts.to.display()
        );
        return Ok(Written::default());
    }
    let mut staging = Staging::create(&target)?;
    let rules = Rules { allow_special: opts.allow_special };
    ctx.ui.step(&format!("read {} and write the paths asked for into {}", src.path.display(), opts.to.display()));
    let written =
        listing::read_entries(&src, rules, &*gate, &|n| selector.matches(n), &target.parent, &mut |e, data| {
            staging.write(e, data)
        });
    let listed = match written {
        Ok(listed) => listed,
        Err(e) => return Err(staging.discard(e)),
    };
    ctx.ui.step(&format!("{}: {}", src.path.display(), listed.access.describe()));
    for root in selector.roots() {
        if !staging.seen.iter().any(|n| listing::is_at_or_below(n, root)) {
            let e = anyhow::anyhow!("{} holds no entry {}", src.path.display(), listing::shown(root));
            return Err(staging.discard(e.context("`cargo xtask ls ARCHIVE` lists what it holds")));
        }
    }
    let written = staging.finish(&target)?;
    for why in &written.left_out {
        eprintln!("warning: not restored: {why}");
    }
    println!(
        "restored {} file(s) ({} bytes), {} directorie(s), {} link(s) into {}",
        written.files,
        written.bytes,
        written.dirs,
        written.links,
        opts.to.display()
    );
    Ok(written)
}

/// DIR as checked: its parent (a real directory, no symbolic link on the way) and its name.
struct Target {
    parent: PathBuf,
    name: std::ffi::OsString,
    /// DIR exists (then empty).
    exists: bool,
}

impl Target {
    fn check(to: &Path) -> Result<Target> {
        let abs = std::path::absolute(to).with_context(|| format!("--to {}", to.display()))?;
        let abs = crate::model::compose::normalize(&abs);
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            bail!("--to {}: give a directory to create (or an empty one)", to.display());
        };
        if let Some(link) = crate::files::first_symlink(&abs) {
            bail!(
                "--to {}: {} is a symbolic link; a restore writes only through real directories",
                to.display(),
                link.display()
            );
        }
        if !parent.is_dir() {
            bail!("--to {}: {} is not a directory; create it first", to.display(), parent.display());
        }
        let exists = match std::fs::symlink_metadata(&abs) {
            Ok(m) if m.is_dir() => {
                if std::fs::read_dir(&abs).with_context(|| format!("read {}", abs.display()))?.next().is_some() {
                    bail!(
                        "--to {}: not empty; a restore never overwrites: give a new or empty directory",
                        to.display()
                    );
                }
                true
            }
            Ok(_) => bail!("--to {}: exists and is not a directory", to.display()),
            Err(_) => false,
        };
        Ok(Target { parent: parent.to_path_buf(), name: name.to_os_string(), exists })
    }
}

/// The private directory the entries are written into before it becomes DIR.
struct Staging {
    parent: OwnedFd,
    name: String,
    root: OwnedFd,
    /// Archive names written (or seen), for hard links and the check that each path was found.
    seen: BTreeSet<Vec<u8>>,
    /// Directories written: (path below the root, mode, mtime), set once everything is in.
    dirs: Vec<(Vec<u8>, u32, u64)>,
    written: Written,
}

fn at_dir(fd: impl AsFd, name: impl rustix::path::Arg) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(fd, name, flags, Mode::empty())?)
}

impl Staging {
    fn create(target: &Target) -> Result<Staging> {
        let parent =
            at_dir(rustix::fs::CWD, &target.parent).with_context(|| format!("open {}", target.parent.display()))?;
        if crate::files::dir_identity(&target.parent) != Some(identity(&parent)?) {
            bail!("{} changed while it was checked (a symbolic link?): nothing was written", target.parent.display());
        }
        let name = format!(".xtask-restore-{}-{}", std::process::id(), target.name.to_string_lossy());
        rustix::fs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o700))
            .with_context(|| format!("create {}/{name}", target.parent.display()))?;
        let root = at_dir(&parent, name.as_str()).with_context(|| format!("open {name}"))?;
        let written = Written::default();
        Ok(Staging { parent, name, root, seen: BTreeSet::new(), dirs: Vec::new(), written })
    }

    /// The directory holding `rel`'s last component, every component opened without following
    /// a link; missing ones created (0700: directories the archive did not give, above a path).
    fn parent_of<'a>(&self, rel: &'a [u8]) -> Result<(OwnedFd, &'a [u8])> {
        // The grammar admits only canonical names; checked again where they become paths.
        if rel.split(|&b| b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..") {
            bail!("a name that is not canonical ('..', '.', '//'): refused, it could lead outside the target");
        }
        let (dirs, leaf) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let mut fd = at_dir(&self.root, ".")?;
        for c in dirs.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            fd = match at_dir(&fd, c) {
                Ok(next) => next,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    rustix::fs::mkdirat(&fd, c, Mode::from_raw_mode(0o700))?;
                    at_dir(&fd, c)?
                }
                Err(e) => return Err(e).context("open a directory (a symbolic link on the way is refused)"),
            };
        }
        Ok((fd, leaf))
    }

    /// Writes one entry (see the module's header).
    fn write(&mut self, e: &Entry, data: Option<&mut dyn Read>) -> Result<()> {
        crate::signals::check()?;
        let rel = listing::user_name(&e.name).to_vec();
        let shown = listing::shown(&e.name);
        let (dir, leaf) = self.parent_of(&rel).with_context(|| format!("write {shown}"))?;
        let mode = Mode::from_raw_mode(e.mode & 0o777);
        let times = times(e.mtime);
        match (e.kind, data, &e.link) {
            (Kind::File, Some(data), _) => {
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&dir, leaf, flags, Mode::from_raw_mode(0o600))
                    .with_context(|| format!("create {shown}"))?;
                let mut file = std::fs::File::from(fd);
                self.written.bytes += std::io::copy(data, &mut file).with_context(|| format!("write {shown}"))?;
                file.sync_all().with_context(|| format!("write {shown}"))?;
                rustix::fs::fchmod(&file, mode)?;
                rustix::fs::futimens(&file, &times)?;
                self.written.files += 1;
            }
            (Kind::Dir, _, _) => {
                match rustix::fs::mkdirat(&dir, leaf, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    // Made already as the parent of an earlier path asked for.
                    Err(rustix::io::Errno::EXIST) if at_dir(&dir, leaf).is_ok() => {}
                    Err(e) => return Err(e).with_context(|| format!("create {shown}")),
                }
                self.dirs.push((rel.clone(), e.mode & 0o777, e.mtime));
                self.written.dirs += 1;
            }
            (Kind::Symlink, _, Some(target)) => {
                rustix::fs::symlinkat(target.as_slice(), &dir, leaf).with_context(|| format!("create {shown}"))?;
                rustix::fs::utimensat(&dir, leaf, &times, AtFlags::SYMLINK_NOFOLLOW)?;
                self.written.links += 1;
            }
            (Kind::HardLink, _, Some(target)) if self.seen.contains(target) => {
                let (from, from_leaf) = self.parent_of(listing::user_name(target))?;
                rustix::fs::linkat(&from, from_leaf, &dir, leaf, AtFlags::empty())
                    .with_context(|| format!("create {shown}"))?;
                self.written.links += 1;
            }
            (Kind::HardLink, _, Some(target)) => self.written.left_out.push(format!(
                "{shown}: a hard link to {}, which is outside the paths asked for (add it with --path)",
                listing::shown(target)
            )),
            (kind, _, _) => self.written.left_out.push(format!(
                "{shown}: a {} node; a restore into a directory creates none",
                crate::archive::index::kind_word(kind)
            )),
        }
        self.seen.insert(e.name.clone());
        Ok(())
    }

    /// Directories get their modes and mtimes (deepest first), everything is synced, and the
    /// staging becomes DIR (an empty DIR is replaced by the rename; one that got entries
    /// meanwhile is not, and nothing is lost).
    fn finish(mut self, target: &Target) -> Result<Written> {
        let dirs = std::mem::take(&mut self.dirs);
        let done = (|| -> Result<()> {
            for (rel, mode, mtime) in dirs.iter().rev() {
                let (dir, leaf) = self.parent_of(rel)?;
                let fd = at_dir(&dir, leaf)?;
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(*mode))?;
                rustix::fs::futimens(&fd, &times(*mtime))?;
                rustix::fs::fsync(&fd)?;
            }
            rustix::fs::fsync(&self.root)?;
            let flags =
                if target.exists { rustix::fs::RenameFlags::empty() } else { rustix::fs::RenameFlags::NOREPLACE };
            rustix::fs::renameat_with(&self.parent, self.name.as_str(), &self.parent, target.name.as_os_str(), flags)
                .context("rename the staging directory to the target (it was created or filled meanwhile?)")?;
            rustix::fs::fsync(&self.parent)?;
            Ok(())
        })();
        match done {
            Ok(()) => Ok(std::mem::take(&mut self.written)),
            Err(e) => Err(self.discard(e)),
        }
    }

    /// Removes the staging after a failure; the target is as it was.
    fn discard(self, e: anyhow::Error) -> anyhow::Error {
        let path = Path::new("/proc/self/fd").join(rustix::fd::AsRawFd::as_raw_fd(&self.parent).to_string());
        // Through the parent's descriptor: the staging itself is removed without following a link.
        let removed = std::fs::remove_dir_all(path.join(&self.name));
        let e = e.context("nothing was written into the target directory");
        match removed {
            Ok(()) => e,
            Err(r) => e.context(format!("and removing the staging {} failed: {r}", self.name)),
        }
    }
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
    Timestamps { last_access: t, last_modification: t }
}

fn identity(fd: &OwnedFd) -> Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd).context("stat a directory")?;
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], kind: Kind, link: Option<&[u8]>) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            size: 0,
            mode: 0o7777,
            uid: 0,
            gid: 0,
            mtime: u64::MAX,
            link: link.map(<[u8]>::to_vec),
            sha256: None,
            at: 0,
        }
    }

    /// Holds (attack6), below the grammar: entries the grammar already refuses (a file or a
    /// directory through a symbolic link, a name with `..`, a name written twice) write nothing
    /// outside the staging and never overwrite; a hard link to a link is the link itself;
    /// modes lose set-uid, set-gid and sticky; an mtime out of range is no panic.
    #[test]
    fn hostile_entries_write_nothing_outside_the_target() {
        let base = std::env::temp_dir().join(format!("xtask-attack6-to-dir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let to = base.join("out");
        let target = Target::check(&to).unwrap();
        let mut st = Staging::create(&target).unwrap();
        let link_to = outside.as_os_str().as_encoded_bytes();
        st.write(&entry(b"volumes/v", Kind::Dir, None), None).unwrap();
        st.write(&entry(b"volumes/v/l", Kind::Symlink, Some(link_to)), None).unwrap();
        let mut evil = &b"evil"[..];
        let file = Entry { kind: Kind::File, size: 4, ..entry(b"volumes/v/l/x", Kind::File, None) };
        assert!(st.write(&file, Some(&mut evil)).is_err(), "a file through a symlink");
        assert!(st.write(&entry(b"volumes/v/l", Kind::Dir, None), None).is_err(), "a directory over a symlink");
        assert!(st.write(&entry(b"volumes/v/l/d", Kind::Dir, None), None).is_err(), "a directory through a symlink");
        let escaped = format!("xtask-attack6-escaped-{}", std::process::id());
        let up = Entry { name: format!("volumes/v/../../../{escaped}").into_bytes(), ..file.clone() };
        let res = st.write(&up, Some(&mut &b"evil"[..]));
        let landed = std::env::temp_dir().join(&escaped);
        let escaped_to = std::fs::symlink_metadata(&landed).is_ok();
        let _ = std::fs::remove_file(&landed);
        assert!(res.is_err() && !escaped_to, "a name with '..' wrote {}", landed.display());
        let twice = Entry { name: b"volumes/v/f".to_vec(), ..file.clone() };
        st.write(&twice, Some(&mut &b"good"[..])).unwrap();
        assert!(st.write(&twice, Some(&mut &b"evil"[..])).is_err(), "a name written twice");
        st.write(&entry(b"volumes/v/h", Kind::HardLink, Some(b"volumes/v/l")), None).unwrap();
        let written = st.finish(&target).unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing outside");
        let beside: Vec<_> = std::fs::read_dir(&base).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(beside.len(), 2, "nothing beside the target: {beside:?}");
        assert_eq!(std::fs::read(to.join("v/f")).unwrap(), b"good");
        assert!(std::fs::symlink_metadata(to.join("v/h")).unwrap().file_type().is_symlink());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(to.join("v/f")).unwrap().permissions().mode() & 0o7777, 0o777);
        assert_eq!((written.files, written.links), (1, 2));
        std::fs::remove_dir_all(&base).unwrap();
    }
}

//! The host's filesystem as the tool writes it. Private files: everything the tool writes that
//! holds data (archives, spooled dumps, the mtimes handed to a helper) is created new, never over
//! an existing name, readable by its owner only. Bind directories: checked and created component
//! by component without following symbolic links.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Creates `path` for writing, mode 0600; an existing file (or symlink) there is an error.
pub fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))
}

/// `host_path`'s components from the root that are symbolic links, checked without following
/// any: the first one found, or None. Components that do not exist end the walk.
pub fn first_symlink(host_path: &Path) -> Option<std::path::PathBuf> {
    let mut at = std::path::PathBuf::new();
    for c in host_path.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Some(at),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Refuses `host_path` when it, or a directory above it, is a symbolic link: a restore writes
/// only through real directories (Docker would follow the link to wherever it points).
pub fn refuse_symlinks(host_path: &Path) -> Result<()> {
    match first_symlink(host_path) {
        Some(link) if link == host_path => bail!(
            "bind {}: it is a symbolic link; a restore writes only into a real directory (replace the link by the directory, or bind the directory itself)",
            host_path.display()
        ),
        Some(link) => bail!(
            "bind {}: {} above it is a symbolic link; a restore writes only through real directories (bind the real path instead)",
            host_path.display(),
            link.display()
        ),
        None => Ok(()),
    }
}

/// The device and inode of the directory `host_path` (absolute, normalized), opened without
/// following a symbolic link anywhere on the way: one component at a time, each opened
/// `O_NOFOLLOW | O_DIRECTORY` relative to the directory opened before it (through
/// `/proc/self/fd/N/NAME`, the same as `openat`), so a component swapped for a link meanwhile
/// fails the walk. What a helper that writes into the bind must find mounted. None: not such a
/// directory.
pub fn dir_identity(host_path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    let open = |p: &Path| OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY).open(p).ok();
    let mut dir = open(Path::new("/"))?;
    for c in host_path.components() {
        match c {
            std::path::Component::RootDir => continue,
            std::path::Component::Normal(name) => {
                dir = open(&Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name))?;
            }
            _ => return None,
        }
    }
    let meta = dir.metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Creates `host_path` and its missing parents one directory at a time (0755), never through a
/// symbolic link: an existing component that is a link, or a race that puts one there, is an error.
pub fn create_dir_no_follow(host_path: &Path) -> Result<()> {
    let mut at = std::path::PathBuf::new();
    for c in host_path.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => refuse_symlinks(host_path)?,
            Ok(m) if m.is_dir() => continue,
            Ok(_) => bail!("bind {}: {} exists and is not a directory", host_path.display(), at.display()),
            Err(_) => {
                std::fs::create_dir(&at).with_context(|| format!("create {} for the bind mount", at.display()))?
            }
        }
    }
    refuse_symlinks(host_path)
}

/// A directory only this user can read, removed when dropped.
pub struct TempDir {
    pub path: std::path::PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

/// Removes the directory tree at `path`, also where a directory inside is not writable by its
/// owner (restic restores a volume's 0555 and 0500 directories as they were; only a user with
/// CAP_DAC_OVERRIDE could empty them): those are made 0700 first, never through a symbolic link.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    let_owner_in(path);
    std::fs::remove_dir_all(path)
}

/// Gives the owner rwx on `dir` and every directory under it (not following symbolic links).
fn let_owner_in(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(meta.permissions().mode() | 0o700));
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let_owner_in(&e.path());
        }
    }
}

/// A new empty directory under the system's temporary directory, mode 0700, its name not
/// guessable in advance (a name someone else took is skipped, never reused).
pub fn private_temp_dir(prefix: &str) -> Result<TempDir> {
    Ok(TempDir { path: fresh_private_dir(&std::env::temp_dir(), &format!("{prefix}-"))? })
}

/// A [`TempDir`] whose process holds an exclusive lock (flock) on its `.held` file while it
/// lives: a run killed (SIGKILL, a crash, the machine) leaves it unlocked, and
/// [`sweep_unheld`] removes it later, whatever pid namespace either ran in.
pub struct HeldTempDir {
    pub dir: TempDir,
    _held: std::fs::File,
}

/// A new [`private_temp_dir`], held.
pub fn held_temp_dir(prefix: &str) -> Result<HeldTempDir> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = private_temp_dir(prefix)?;
    // Locked before it is named `.held`: a sweep meanwhile sees no `.held` (a directory being
    // made, left alone), never an unlocked one it would take for a killed run's.
    let (making, path) = (dir.path.join(".held-new"), dir.path.join(".held"));
    let held = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&making)
        .with_context(|| format!("create {}", making.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&held), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("lock {}: {}", making.display(), std::io::Error::last_os_error());
    }
    std::fs::rename(&making, &path).with_context(|| format!("rename {} to .held", making.display()))?;
    Ok(HeldTempDir { dir, _held: held })
}

/// Removes the directories [`held_temp_dir`] made with `prefix` under the system's temporary
/// directory that this user owns and no process holds any more (left by a killed run); returns
/// them. One whose `.held` cannot be opened (being made, or not ours) is left alone.
pub fn sweep_unheld(prefix: &str) -> Vec<PathBuf> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return Vec::new() };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !ours || !e.file_name().to_string_lossy().starts_with(&format!("{prefix}-")) {
            continue;
        }
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let Ok(held) = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path.join(".held")) else {
            continue;
        };
        // SAFETY: flock on a descriptor this function owns.
        let free = unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&held), libc::LOCK_EX | libc::LOCK_NB) };
        if free == 0 && held.metadata().is_ok_and(|m| m.is_file()) && remove_tree(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Creates a new directory (0700) in `parent` named `PREFIXPID-N-RANDOM`: the process's id
/// first (sweepers of dead runs read it), then a counter and 64 unguessable bits; a name someone
/// else took is skipped, never reused.
fn fresh_private_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..16 {
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = parent.join(format!("{prefix}{}-{n}-{:x}", std::process::id(), unguessable()));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
        }
    }
    bail!("could not create a private directory in {} (16 names taken)", parent.display())
}

/// The home directory of `uid` in `passwd` (the text of `/etc/passwd`).
fn home_of(passwd: &str, uid: u32) -> Option<PathBuf> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 7 && f[2].parse() == Ok(uid) && f[5].starts_with('/')).then(|| PathBuf::from(f[5]))
    })
}

/// Where [`user_dir`] is for `uid`: `root_base/what` for root when `root_base`'s parent
/// exists; else `<home>/<home_rel>/xtask/what`, the home from `passwd` (else `$HOME`); else a
/// per-user directory in the temp dir.
fn user_dir_of(uid: u32, passwd: &str, root_base: Option<&Path>, home_rel: &str, what: &str) -> PathBuf {
    if let (0, Some(base)) = (uid, root_base) {
        return base.join(what);
    }
    let home = home_of(passwd, uid).or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from));
    match home {
        Some(home) => home.join(home_rel).join("xtask").join(what),
        None => std::env::temp_dir().join(format!("xtask-{what}-{uid}")),
    }
}

/// This user's own private directory for `what` (the project locks, the record of pushes),
/// found from the user alone, never from the environment, so every run of the user (an SSH
/// session, a cron job) finds the same one: root's under `root_base` (`/run/xtask`,
/// `/var/lib/xtask`), another user's under its home (`.cache`, `.local/state`). Created 0700;
/// refused unless it is a directory of this user's that nobody else can enter.
pub fn user_dir(root_base: &Path, home_rel: &str, what: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = rustix::process::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let base = root_base.parent().is_some_and(Path::is_dir).then_some(root_base);
    let dir = user_dir_of(uid, &passwd, base, home_rel, what);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create the directory {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("stat {}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!("{} is not a private directory of this user: remove it and run again", dir.display());
    }
    Ok(dir)
}

/// A filesystem's size and use as `df` shows them: `used` is what is taken, `available` what an
/// unprivileged writer may still take (the blocks reserved for root are in neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size: u64,
    pub used: u64,
    pub available: u64,
}

/// The use of the filesystem holding `path`.
pub fn usage(path: &Path) -> Result<Usage> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    let used = (st.f_blocks - st.f_bfree) * st.f_frsize;
    Ok(Usage { size: st.f_blocks * st.f_frsize, used, available: st.f_bavail * st.f_frsize })
}

/// Writes `bytes` to `path` atomically: a new file `.NAME.tmp-PID` beside it (`mode`, never
/// through a link), fsynced, renamed over `path`, the directory fsynced. A reader sees the old
/// file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().with_context(|| format!("{} names no file", path.display()))?;
    let temp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("write {} (through {})", path.display(), temp.display()));
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(())
}

/// Free bytes for an unprivileged writer in `dir`.
pub fn free_space(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.f_bavail * st.f_frsize)
}

/// A file that has no name: what the tool spools (dumps made by a backup, dumps copied out of
/// an archive, the filtered dumps a restore loads) lives only as this open descriptor, so no
/// one who can rename entries in a directory can swap what was checked for something else
/// before it is used. Every later use reads through [`Unnamed::reader`], from the same inode.
pub struct Unnamed {
    file: File,
}

impl Unnamed {
    /// A new empty unnamed file (0600) on the filesystem of `near`: opened `O_TMPFILE` in a
    /// fresh 0700 directory of this process's own inside `near`, which is removed at once; on a
    /// filesystem without `O_TMPFILE`, created there and unlinked before anything is written.
    /// The directory's name is not guessable in advance (a name someone else took is skipped,
    /// never reused), so nobody can block it by creating it first.
    pub fn create(near: &Path) -> Result<Unnamed> {
        let dir = fresh_private_dir(near, UNNAMED_PREFIX)?;
        let opened = Self::open_in(&dir);
        let _ = std::fs::remove_dir(&dir);
        opened.with_context(|| format!("create a private file in {}", near.display()))
    }

    fn open_in(dir: &Path) -> std::io::Result<Unnamed> {
        let mut o = OpenOptions::new();
        o.read(true).write(true).mode(0o600);
        match o.clone().custom_flags(libc::O_TMPFILE).open(dir) {
            Ok(file) => return Ok(Unnamed { file }),
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
                return Err(e)
            }
            Err(_) => {}
        }
        let path = dir.join("f");
        let file = o.create_new(true).custom_flags(libc::O_NOFOLLOW).open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Unnamed { file })
    }

    /// The descriptor to write through (appends at the file's own position).
    pub fn writer(&self) -> &File {
        &self.file
    }

    /// A reader from the start, with a position of its own (`pread`): readers never disturb
    /// one another or the writer.
    pub fn reader(&self) -> AtReader<&File> {
        AtReader::new(&self.file)
    }

    /// Its size now.
    pub fn len(&self) -> Result<u64> {
        Ok(self.file.metadata().context("read a private file's size")?.len())
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Written data made durable.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_all().context("write a private file")
    }
}

/// 64 bits no one can predict from outside this process (the kernel's random bytes; the clock
/// where they cannot be read).
fn unguessable() -> u64 {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    match read {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    }
}

/// The name prefix of the short-lived directories [`Unnamed::create`] makes: a later run
/// removes those whose process is gone.
pub const UNNAMED_PREFIX: &str = ".xtask-private-";

/// Reads an open file by offset (`pread`), from the start, with a position of its own: readers
/// of one descriptor (owned, borrowed or shared) never disturb one another.
pub struct AtReader<F> {
    file: F,
    pos: u64,
}

impl<F> AtReader<F> {
    pub fn new(file: F) -> AtReader<F> {
        AtReader { file, pos: 0 }
    }

    /// One that starts at byte `pos`.
    pub fn at(file: F, pos: u64) -> AtReader<F> {
        AtReader { file, pos }
    }
}

impl<F: std::borrow::Borrow<File>> std::io::Read for AtReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.borrow().read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A directory's inode flags and its extended attributes (name, value), sorted.
pub type DirAttributes = (u32, Vec<(Vec<u8>, Vec<u8>)>);

/// What a directory carries on itself beyond owner, mode and times: its inode flags (`chattr`:
/// no-atime, no-copy-on-write, project inheritance …; the filesystem's own directory index flag
/// left out) and its extended attributes by name and value (ACLs, SELinux labels). None when it
/// cannot be read. A restore that renames a new directory in place of one loses them.
pub fn dir_attributes(path: &Path) -> Option<DirAttributes> {
    let dir = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY).open(path).ok()?;
    let index = rustix::fs::IFlags::from_bits_retain(0x1000); // FS_INDEX_FL: set by ext4 as it grows
    let flags = rustix::fs::ioctl_getflags(&dir).map(|f| (f - index).bits()).unwrap_or(0);
    let mut names = vec![0u8; 64 * 1024];
    let len = rustix::fs::flistxattr(&dir, &mut names).ok()?;
    let mut attrs = Vec::new();
    for name in names[..len].split(|c| *c == 0).filter(|n| !n.is_empty()) {
        let name = name.to_vec();
        let mut value = vec![0u8; 64 * 1024];
        let n = rustix::fs::fgetxattr(&dir, name.as_slice(), &mut value).ok()?;
        attrs.push((name, value[..n].to_vec()));
    }
    attrs.sort();
    Some((flags, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_identified_only_through_real_directories() {
        use std::os::unix::fs::MetadataExt;
        let base = std::env::temp_dir().join(format!("xtask-identity-{}", std::process::id()));
        std::fs::create_dir_all(base.join("real/inner")).unwrap();
        let meta = std::fs::metadata(base.join("real/inner")).unwrap();
        assert_eq!(dir_identity(&base.join("real/inner")), Some((meta.dev(), meta.ino())));
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        assert_eq!(dir_identity(&base.join("link/inner")), None, "a link above it");
        assert_eq!(dir_identity(&base.join("link")), None, "a link itself");
        assert_eq!(dir_identity(&base.join("real/../real/inner")), None, "only normalized paths");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_users_own_directory_depends_on_the_user_only() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/sh\nbad:x:7:7::rel:/bin/sh\n";
        let run = Some(Path::new("/run/xtask"));
        assert_eq!(user_dir_of(0, passwd, run, ".cache", "locks"), Path::new("/run/xtask/locks"));
        assert_eq!(user_dir_of(0, passwd, None, ".cache", "locks"), Path::new("/root/.cache/xtask/locks"));
        let ops = user_dir_of(1000, passwd, run, ".local/state", "pushed");
        assert_eq!(ops, Path::new("/home/ops/.local/state/xtask/pushed"));
        assert_eq!(home_of(passwd, 7), None, "a relative home is not one");
        assert_eq!(home_of(passwd, 1), None);
    }

    /// A directory left by a killed run (its `.held` no longer locked) is swept; one whose
    /// process lives is not, nor one without `.held`.
    #[test]
    fn only_directories_nobody_holds_are_swept() {
        let prefix = format!("xtask-sweep-test-{}", std::process::id());
        let live = held_temp_dir(&prefix).unwrap();
        let left = private_temp_dir(&prefix).unwrap();
        std::fs::write(left.path.join(".held"), "").unwrap();
        let making = private_temp_dir(&prefix).unwrap();
        let removed = sweep_unheld(&prefix);
        assert_eq!(removed, std::slice::from_ref(&left.path));
        assert!(live.dir.path.exists() && making.path.exists() && !left.path.exists());
        let live_path = live.dir.path.clone();
        drop(live);
        assert!(!live_path.exists(), "removed when dropped");
    }

    /// attack7: a run making its directory (`.held` created, not yet locked) looked like a
    /// killed run's to a sweep running meanwhile, which removed it under the live run (restic
    /// then restored into a directory it made itself, not the private one). Many runs made
    /// while another sweeps: every one keeps its directory and its `.held`.
    #[test]
    fn a_directory_being_made_is_never_swept() {
        let prefix = format!("xtask-sweep-race-{}", std::process::id());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let sweeper = {
            let prefix = prefix.clone();
            std::thread::spawn(move || {
                let mut removed = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    removed.extend(sweep_unheld(&prefix));
                }
                removed
            })
        };
        let mut lost = 0;
        for _ in 0..3000 {
            let held = held_temp_dir(&prefix).unwrap();
            if !held.dir.path.join(".held").exists() {
                lost += 1;
            }
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let removed = sweeper.join().unwrap();
        assert_eq!((lost, removed.len()), (0, 0), "live directories swept: {removed:?}");
    }

    /// attack7: restic restores a volume's directories with their modes, 0555 or 0500 among
    /// them; a user without CAP_DAC_OVERRIDE (the rootless engine's) could not empty those, so
    /// the trees were left in $TMPDIR after every read, and a killed run's sweep failed too (its
    /// `.held` already gone: never swept again). Both remove it whole. Bites without
    /// CAP_DAC_OVERRIDE only: `setpriv --bounding-set=-dac_override,-dac_read_search
    /// --inh-caps=-dac_override,-dac_read_search TESTBINARY read_only_directories`.
    #[test]
    fn read_only_directories_inside_are_removed_too() {
        use std::os::unix::fs::PermissionsExt;
        let read_only = |root: &Path| {
            let inner = root.join("ro/inner");
            std::fs::create_dir_all(&inner).unwrap();
            std::fs::write(inner.join("file"), "x").unwrap();
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o500)).unwrap();
            std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
        };
        let dir = private_temp_dir("xtask-read-only-test").unwrap();
        read_only(&dir.path);
        let path = dir.path.clone();
        drop(dir);
        assert!(!path.exists(), "{} left behind", path.display());
        let prefix = format!("xtask-read-only-sweep-{}", std::process::id());
        let left = private_temp_dir(&prefix).unwrap();
        std::fs::write(left.path.join(".held"), "").unwrap();
        read_only(&left.path);
        assert_eq!(sweep_unheld(&prefix), std::slice::from_ref(&left.path));
        assert!(!left.path.exists(), "{} left behind by the sweep", left.path.display());
    }
}

//! One backup or restore of a project at a time: an exclusive lock (flock) on
//! `<backup dir>/.xtask-<project>.lock` and, whatever backup directory a run uses, on the
//! project's lock in this user's private lock directory, found from the user alone, never from
//! the environment (root: `/run/xtask/locks`; another user: `~/.cache/xtask/locks` with the home
//! directory from the password database; never a shared directory another user could block):
//! two runs against the same stack with different `XTASK_BACKUP_DIR`s, or with different
//! environments (an SSH session's `XDG_RUNTIME_DIR` and a cron job without one), exclude each
//! other. The kernel drops a lock when its holder exits, even by kill -9, so a
//! stale lock never blocks; each file records who holds it for the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The project's lock, held while this value lives. Functions that change data take `&Lock` as
/// proof that their caller holds it; composites take it once and pass it on.
pub struct Lock {
    _project: File,
    _file: File,
    dir: PathBuf,
    project: String,
}

/// This user's private lock directory (0700, owned by this user, not a symlink).
fn lock_dir() -> Result<PathBuf> {
    crate::files::user_dir(Path::new("/run/xtask"), ".cache", "locks")
}

/// Takes the lock file at `path` for `project`, or says who holds it.
fn take(path: &Path, project: &str, what: &str) -> Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("open the lock file {} (a symlink there is refused)", path.display()))?;
    // Only a lock file of this user's that nothing else links to is written to: a hard link
    // planted at the name would make the truncation below hit its target.
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().with_context(|| format!("stat {}", path.display()))?;
        let uid = rustix::process::getuid().as_raw();
        if !meta.is_file() || meta.nlink() != 1 || meta.uid() != uid {
            bail!(
                "{} is not a lock file of this user's (another file, a hard link or another owner): remove it and \
                 run again",
                path.display()
            );
        }
    }
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok();
            bail!(
                "another backup or restore of project {project} is running ({}); wait for it to finish \
                 (the lock {} is released when that process exits)",
                holder.trim(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("lock {}", path.display()));
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    writeln!(file, "held by pid {} running `cargo xtask {what}` since {now}", std::process::id())?;
    file.flush()?;
    Ok(file)
}

impl Lock {
    pub fn acquire(dir: &Path, project: &str, what: &str) -> Result<Lock> {
        let _project = take(&lock_dir()?.join(format!("{project}.lock")), project, what)?;
        let _file = take(&dir.join(format!(".xtask-{project}.lock")), project, what)?;
        Ok(Lock { _project, _file, dir: dir.to_path_buf(), project: project.to_string() })
    }

    /// The directory the lock is held in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An error unless this is the lock of `project` in `dir` (a composite passing the wrong one).
    pub fn covers(&self, dir: &Path, project: &str) -> Result<()> {
        let same = |a: &Path, b: &Path| a == b || a.canonicalize().ok() == b.canonicalize().ok();
        if project != self.project || !same(dir, &self.dir) {
            bail!(
                "internal error: the lock held is for project {} in {}, not {project} in {}",
                self.project,
                self.dir.display(),
                dir.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_holder_named() {
        let dir = std::env::temp_dir().join(format!("xtask-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (proj, other) = (format!("proj-{}", std::process::id()), format!("other-{}", std::process::id()));
        let first = Lock::acquire(&dir, &proj, "backup").unwrap();
        let err = Lock::acquire(&dir, &proj, "restore").err().expect("second lock refused").to_string();
        assert!(
            err.contains(&format!("another backup or restore of project {proj}")) && err.contains("cargo xtask backup"),
            "{err}"
        );
        assert!(Lock::acquire(&dir, &other, "backup").is_ok(), "locks are per project");
        let elsewhere = dir.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let err = Lock::acquire(&elsewhere, &proj, "backup").err().expect("another backup directory, same project");
        assert!(err.to_string().contains("another backup or restore of project"), "{err}");
        drop(first);
        assert!(Lock::acquire(&dir, &proj, "restore").is_ok(), "released on drop");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

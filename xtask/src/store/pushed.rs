//! What this host pushed: per remote folder (a project's folder in a bucket), the SHA-256 of every archive it uploaded and
//! sealed, kept in this user's private state directory (root: `/var/lib/xtask/pushed`; another
//! user: `~/.local/state/xtask/pushed`, the home from the password database), never in the
//! backup directory or the bucket, which others may write. Without `x-xtask.sign` this is what
//! tells an archive this host pushed from junk named after one: an object it did not record
//! never outranks one it did (`prune --remote`, `--latest`), and `backups --remote` says which
//! objects it does not know. A new machine knows none: then nothing is ranked by it. Only an
//! archive this host wrote (its digest in the record of backups, `written.sha256`, made when the
//! archive is committed) is recorded as pushed: a file someone dropped into the backup directory
//! is pushed when asked, but never counts as this host's.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::archive::hex;

/// The archives (name and digest as stored) a record holds.
#[derive(Debug, Default)]
pub struct Pushed {
    archives: BTreeSet<(String, String)>,
}

impl Pushed {
    /// Whether the record holds the archive `file` with this digest: the same bytes under
    /// another name (an old archive copied to a newer name) are not known.
    pub fn knows(&self, file: &str, digest: &[u8; 32]) -> bool {
        self.archives.contains(&(hex(digest), file.to_string()))
    }

    /// Whether the record holds anything at all.
    pub fn any(&self) -> bool {
        !self.archives.is_empty()
    }

    /// Reads the record's text: `SHA256  FILE` lines; other lines are ignored.
    fn parse(text: &str) -> Pushed {
        let archives = text
            .lines()
            .filter_map(|l| l.split_once("  "))
            .filter(|(d, f)| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) && !f.is_empty())
            .map(|(d, f)| (d.to_ascii_lowercase(), f.to_string()))
            .collect();
        Pushed { archives }
    }
}

/// The record of the remote folder `root` (its rclone path): named by a digest of it, so two
/// names for the same folder share one record.
fn record_path(root: &str) -> Result<PathBuf> {
    use sha2::Digest;
    let dir = crate::files::user_dir(Path::new("/var/lib/xtask"), ".local/state", "pushed")?;
    let id = hex(&sha2::Sha256::digest(root.as_bytes()));
    Ok(dir.join(format!("{}.sha256", &id[..32])))
}

/// This host's record for the remote folder `root` (empty when there is none or it cannot be
/// read).
pub fn load(root: &str) -> Pushed {
    let Ok(path) = record_path(root) else { return Pushed::default() };
    std::fs::read_to_string(path).map(|t| Pushed::parse(&t)).unwrap_or_default()
}

fn written_path() -> Result<PathBuf> {
    Ok(crate::files::user_dir(Path::new("/var/lib/xtask"), ".local/state", "pushed")?.join("written.sha256"))
}

/// The archives this host wrote (their digests as stored).
pub fn written() -> Pushed {
    let Ok(path) = written_path() else { return Pushed::default() };
    std::fs::read_to_string(path).map(|t| Pushed::parse(&t)).unwrap_or_default()
}

/// Adds an archive this host just committed (`file`, its digest as stored) to the record of
/// backups.
pub fn record_written(file: &str, digest: &[u8; 32]) -> Result<()> {
    append(&written_path()?, file, digest)
}

/// Adds a sealed push to the record, when this host wrote the archive; returns whether it did.
pub fn record(root: &str, file: &str, digest: &[u8; 32]) -> Result<bool> {
    if !written().knows(file, digest) {
        return Ok(false);
    }
    append(&record_path(root)?, file, digest)?;
    Ok(true)
}

/// The record of the trees snapshots this host pushed into the restic repository `repository`
/// (`TREE-ID  ARCHIVE` lines): without `x-xtask.sign`, only these are a parent for its next
/// trees (anyone with the repository's password can write a complete-looking archive).
pub fn trees_pushed(repository: &str) -> Pushed {
    load(&trees_root(repository))
}

/// Adds the trees (root tree id `tree`) of archive `file` this host just pushed into
/// `repository` to [`trees_pushed`].
pub fn record_trees(repository: &str, file: &str, tree: &[u8; 32]) -> Result<()> {
    append(&record_path(&trees_root(repository))?, file, tree)
}

/// What names a restic repository's record of trees (hashed into its file name, never shown).
fn trees_root(repository: &str) -> String {
    format!("restic-trees:{repository}")
}

/// Appends `SHA256  FILE` to the record at `path` (synced; the file is 0600, never a link).
fn append(path: &Path, file: &str, digest: &[u8; 32]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(f, "{}  {file}", hex(digest))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("record the push of {file} in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_knows_only_well_formed_digests() {
        let good = [7u8; 32];
        let name = "full_backup_20261207_010000.tar.gz";
        let text = format!("{}  {name}\nnot a line\n{}  x\n", hex(&good), "z".repeat(64));
        let p = Pushed::parse(&text);
        assert!(p.knows(name, &good) && p.any());
        assert!(!p.knows(name, &[8u8; 32]));
        assert!(!p.knows("full_backup_20261208_010000.tar.gz", &good), "the same bytes under a newer name");
        assert!(!Pushed::parse("").any());
    }
}

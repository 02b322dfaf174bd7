//! Private files: everything the tool writes that holds data (archives, spooled dumps, the
//! mtimes handed to a helper) is created new, never over an existing name, readable by its
//! owner only.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Creates `path` for writing, mode 0600; an existing file (or symlink) there is an error.
pub fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))
}

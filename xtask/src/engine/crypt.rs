//! Encryption through the `age` command-line tool (X25519 recipients, streaming, every 64 KiB
//! chunk authenticated). Archives are encrypted to public keys from the compose file and
//! decrypted with the identity file `XTASK_AGE_IDENTITY` points at: the key never appears on a
//! command line, in the repo or in an archive.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::docker::{Tool, ToolReader};
use crate::model::offsite::Encryption;

/// The first bytes of every age file.
pub const MAGIC: &[u8] = b"age-encryption.org/";
/// The suffix of an encrypted archive's name.
pub const SUFFIX: &str = ".age";
/// The environment variable naming the identity file.
pub const IDENTITY_VAR: &str = "XTASK_AGE_IDENTITY";

fn age(why: &str) -> Result<Tool> {
    Tool::find("age", why)
}

/// The identity file for decrypting `what`, or an error saying how to provide it.
pub fn identity(what: &str) -> Result<PathBuf> {
    let path = crate::environment::var(IDENTITY_VAR).map(|p| crate::environment::cwd().join(p));
    let Some(path) = path else {
        bail!(
            "{what} is encrypted (age): set {IDENTITY_VAR} to the identity file holding its key \
             (the file `age-keygen -o FILE` wrote), e.g. `{IDENTITY_VAR}=~/.config/xtask/age.key cargo xtask …`"
        );
    };
    if !path.is_file() {
        bail!("{IDENTITY_VAR}={} is not a readable file: point it at the age identity file", path.display());
    }
    Ok(path)
}

/// The ciphertext of `plain`, encrypted by `age -e` to the configured recipients while it streams.
pub fn encrypt(enc: &Encryption, plain: Box<dyn Read + Send>) -> Result<ToolReader> {
    let mut args = vec!["-e".to_string()];
    for r in &enc.recipients {
        args.extend(["-r".to_string(), r.clone()]);
    }
    if let Some(f) = &enc.recipients_file {
        if !f.is_file() {
            bail!("x-xtask.encrypt.recipients_file {} does not exist", f.display());
        }
        args.extend(["-R".to_string(), f.display().to_string()]);
    }
    age("to encrypt archives (x-xtask.encrypt is set; --no-encrypt writes a clear one)")?.stream(&args, Some(plain))
}

/// The plaintext of the ciphertext `raw`, decrypted with `identity` while it streams. A wrong
/// key or a changed byte ends the stream with age's error.
pub fn decrypt(raw: Box<dyn Read + Send>, identity: &Path) -> Result<ToolReader> {
    let args = vec!["-d".to_string(), "-i".to_string(), identity.display().to_string()];
    age("to decrypt .age archives")?.stream(&args, Some(raw))
}

//! Signing and checking archives' signatures through OpenSSH's `ssh-keygen -Y sign/verify`
//! (found with `which`). The private key is the file `XTASK_SIGNING_KEY` names, never a value on
//! a command line or in the repo; the allowed signers (public keys from the compose file) are
//! written to a private temporary file for `ssh-keygen`, each line restricted to the namespace.

use std::io::{Cursor, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::docker::Tool;
use crate::model::offsite::{check_public_key, Signing};

/// The `ssh-keygen -Y` namespace: a signature made for anything else never verifies here.
pub const NAMESPACE: &str = "xtask-archive";
/// The suffix of an archive's signature file.
pub const SUFFIX: &str = ".sig";
/// The environment variable naming the signing key file.
pub const KEY_VAR: &str = "XTASK_SIGNING_KEY";
/// The one principal every allowed key is filed under.
const PRINCIPAL: &str = "xtask-signer";

fn ssh_keygen(why: &str) -> Result<Tool> {
    Tool::find("ssh-keygen", why)
        .context("ssh-keygen comes with OpenSSH (Debian/Ubuntu: `sudo apt-get install openssh-client`)")
}

/// The signing key file, or an error saying how to provide it.
pub fn key_file() -> Result<PathBuf> {
    let path = crate::environment::var(KEY_VAR).map(|p| crate::environment::cwd().join(p));
    let Some(path) = path else {
        bail!(
            "x-xtask.sign is set, so archives are signed: set {KEY_VAR} to the OpenSSH private key file that signs them \
             (made with `ssh-keygen -t ed25519 -f FILE`; its .pub line belongs in x-xtask.sign.allowed_signers)"
        );
    };
    if !path.is_file() {
        bail!("{KEY_VAR}={} is not a readable file: point it at the OpenSSH private key", path.display());
    }
    Ok(path)
}

/// Signs `message` with the key file; returns the signature's armor.
pub fn sign(message: &str) -> Result<String> {
    let key = key_file()?;
    let args = ["-Y", "sign", "-n", NAMESPACE, "-f"].map(String::from).into_iter().chain([key.display().to_string()]);
    let tool = ssh_keygen("to sign archives (x-xtask.sign is set)")?;
    let mut out = String::new();
    let input: Box<dyn Read + Send> = Box::new(Cursor::new(message.as_bytes().to_vec()));
    tool.stream(&args.collect::<Vec<_>>(), Some(input))?.read_to_string(&mut out).context("sign the archive")?;
    Ok(out)
}

/// Checks that `armor` is a signature of `message` in the namespace by one of the allowed keys.
pub fn verify(signing: &Signing, message: &str, armor: &str) -> Result<()> {
    let dir = crate::files::private_temp_dir("xtask-sign")?;
    let (signers, sig) = (dir.path.join("allowed_signers"), dir.path.join("archive.sig"));
    let keys = allowed_keys(signing)?;
    let lines: String = keys.iter().map(|k| format!("{PRINCIPAL} namespaces=\"{NAMESPACE}\" {k}\n")).collect();
    std::fs::write(&signers, lines).context("write the allowed signers for ssh-keygen")?;
    std::fs::write(&sig, armor).context("write the signature for ssh-keygen")?;
    let args: Vec<String> = ["-Y", "verify", "-n", NAMESPACE, "-I", PRINCIPAL, "-f"]
        .map(String::from)
        .into_iter()
        .chain([signers.display().to_string(), "-s".into(), sig.display().to_string()])
        .collect();
    let tool = ssh_keygen("to check archives' signatures (x-xtask.sign is set)")?;
    let input: Box<dyn Read + Send> = Box::new(Cursor::new(message.as_bytes().to_vec()));
    let mut sink = Vec::new();
    tool.stream(&args, Some(input))?
        .read_to_end(&mut sink)
        .map(drop)
        .map_err(|_| anyhow::anyhow!("the signature is not valid for this archive by any key in x-xtask.sign"))
}

/// The allowed keys, inline and from the file (blank lines and `#` comments skipped there).
fn allowed_keys(signing: &Signing) -> Result<Vec<String>> {
    let mut keys = signing.allowed_signers.clone();
    if let Some(file) = &signing.allowed_signers_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read x-xtask.sign.allowed_signers_file {}", file.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            keys.push(check_public_key(line).with_context(|| format!("in {}", file.display()))?);
        }
    }
    if keys.is_empty() {
        bail!("x-xtask.sign allows no key: add the signer's .pub line to allowed_signers");
    }
    Ok(keys)
}

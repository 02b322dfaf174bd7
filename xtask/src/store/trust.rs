//! Who made an archive: the policy of `x-xtask.sign` and `x-xtask.encrypt` for every archive
//! the tool writes or reads. Writing: with `sign`, each archive gets a detached `NAME.sig`
//! (archive/signature.rs) beside it, atomically, before a remote's completing sidecar. Reading:
//! with `sign`, an archive without a valid signature by an allowed key is untrusted (never
//! restored, verified as good, pulled or counted as latest or by retention) unless
//! `--allow-unsigned`; with `encrypt`, a clear archive likewise unless `--allow-unencrypted`.
//! Encryption is not authenticity: the recipients are public, so only a signature tells who
//! made an archive.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::archive::signature::{self, Statement};
use crate::archive::{self, Source};
use crate::context::Ctx;
use crate::engine::sign;
use crate::model::offsite::{Encryption, Signing};

/// The encryption a backup uses: `x-xtask.encrypt`, unless `--no-encrypt`.
pub fn seal(ctx: &Ctx, no_encrypt: bool) -> Result<Option<Encryption>> {
    let enc = ctx.offsite()?.encryption;
    Ok((enc.enabled() && !no_encrypt).then_some(enc))
}

/// The reading and writing policy of this stack.
pub struct Policy {
    pub signing: Option<Signing>,
    pub encrypted: bool,
    pub project: String,
    pub trust: crate::context::Trust,
}

impl Policy {
    pub fn of(ctx: &Ctx) -> Result<Policy> {
        let set = ctx.offsite()?;
        Ok(Policy {
            signing: set.signing,
            encrypted: set.encryption.enabled(),
            project: ctx.stack.name.clone(),
            trust: ctx.trust,
        })
    }

    /// Why `statement_text`/`armor` does not vouch for an archive named `file` of `size` bytes
    /// hashing to `sha256` in this project (None: it does).
    fn check_signature(
        &self,
        signing: &Signing,
        file: &str,
        size: u64,
        sha256: [u8; 32],
        sig: &[u8],
    ) -> Option<String> {
        let (st, armor) = match signature::parse(sig) {
            Ok(parsed) => parsed,
            Err(e) => return Some(format!("its signature file is not valid: {e:#}")),
        };
        // The whole archive's digest vouches for its index too: an `index` line is carried over.
        let expected =
            Statement { file: file.to_string(), size, sha256, project: self.project.clone(), index: st.index };
        if st != expected {
            return Some(format!(
                "its signature vouches for another archive ({} of project {}, {} bytes, sha256 {})",
                st.file,
                st.project,
                st.size,
                archive::hex(&st.sha256)
            ));
        }
        sign::verify(signing, &st.text(), &armor).err().map(|e| format!("{e:#}"))
    }

    /// Why the archive `file` (`encrypted` or not, its signature file's bytes if any) is
    /// untrusted under this policy; None when it may be read. The `--allow-*` flags let it
    /// through with a loud warning.
    pub fn untrusted(
        &self,
        file: &str,
        size: u64,
        sha256: [u8; 32],
        encrypted: bool,
        sig: Option<&[u8]>,
    ) -> Option<String> {
        let mut why = Vec::new();
        if let Some(signing) = &self.signing {
            let problem = match sig {
                None => Some(format!("it has no signature ({file}{})", signature::SUFFIX)),
                Some(sig) => self.check_signature(signing, file, size, sha256, sig),
            };
            match problem {
                Some(p) if self.trust.allow_unsigned => {
                    eprintln!("warning: {file}: {p}; read anyway (--allow-unsigned)")
                }
                Some(p) => why.push(format!("{p}; x-xtask.sign is set (pass --allow-unsigned to read it anyway)")),
                None => {}
            }
        }
        if self.encrypted && !encrypted {
            if self.trust.allow_unencrypted {
                eprintln!("warning: {file} is not encrypted; read anyway (--allow-unencrypted)");
            } else {
                why.push(
                    "it is not encrypted, and x-xtask.encrypt is set (pass --allow-unencrypted to read it anyway)"
                        .into(),
                );
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// For retention, without reading the archive's content: why the policy would not count the
    /// local archive at `path` of `size` bytes (a signature by an allowed key vouching for this
    /// name, size and project; encrypted when `encrypt` is set). None: it counts. The `--allow-*`
    /// flags do not apply: an untrusted file never takes a retention slot.
    pub fn uncounted(&self, path: &Path, size: u64) -> Option<String> {
        if self.encrypted && !archive::is_sealed(path) {
            return Some("not encrypted, and x-xtask.encrypt is set".into());
        }
        let signing = self.signing.as_ref()?;
        let sig = match read_signature(path) {
            Ok(Some(sig)) => sig,
            Ok(None) => return Some("no signature, and x-xtask.sign is set".into()),
            Err(e) => return Some(format!("{e:#}")),
        };
        let claimed = signature::parse(&sig).map(|(st, _)| st.sha256).unwrap_or_default();
        self.check_signature(signing, &file_name(path), size, claimed, &sig)
    }

    /// Under `x-xtask.sign`, why a restic snapshot's stream (stored as `file`, `size` bytes hashing
    /// to `sha256`, its `sig=` tag `compact_sig`) is not vouched for by an allowed key; None when
    /// it is, or when signing is not set. The `--allow-unsigned` flag does not apply: a snapshot
    /// anyone with the repository's password could write is never trusted unsigned under `sign`.
    pub fn unsigned_stream(
        &self,
        file: &str,
        size: Option<u64>,
        sha256: [u8; 32],
        sig: Option<&str>,
    ) -> Option<String> {
        let signing = self.signing.as_ref()?;
        let (Some(size), Some(sig)) = (size, sig) else {
            return Some(
                "no signature of this host's (x-xtask.sign is set; anyone with the repository's password \
                         can write a snapshot)"
                    .into(),
            );
        };
        let statement = Statement { file: file.to_string(), size, sha256, project: self.project.clone(), index: None };
        self.check_signature(signing, file, size, sha256, &signature::expand(&statement, sig))
    }

    /// For a partial read of a seekable archive (`ls`, `cat`, `restore --path`), without hashing
    /// it whole: under `x-xtask.sign`, its `.sig` must vouch for its name, size and project and
    /// name `index_sha256` (the index as read, checked against `SHA256SUMS`); every entry read
    /// is then checked against that index. Under `encrypt`, a clear archive is untrusted as
    /// always. Ok(false): its signature names no index (signed before indexes were), so only
    /// a whole read can check it.
    pub fn check_indexed(&self, path: &Path, size: u64, index_sha256: [u8; 32], sig: Option<&[u8]>) -> Result<bool> {
        let file = file_name(path);
        if let Some(signing) = &self.signing {
            let st = sig.and_then(|s| signature::parse(s).ok()).map(|(st, _)| st);
            let problem = match (sig, st) {
                (Some(_), Some(st)) if st.index.is_none() && !self.trust.allow_unsigned => return Ok(false),
                (Some(sig), Some(st)) if st.index == Some(index_sha256) => {
                    self.check_signature(signing, &file, size, st.sha256, sig)
                }
                (Some(_), Some(_)) => Some("its index is not the one its signature names".into()),
                (Some(sig), None) => self.check_signature(signing, &file, size, [0; 32], sig),
                (None, _) => Some(format!("it has no signature ({file}{})", signature::SUFFIX)),
            };
            match problem {
                Some(p) if self.trust.allow_unsigned => {
                    eprintln!("warning: {file}: {p}; read anyway (--allow-unsigned)")
                }
                Some(p) => bail!(
                    "{} is untrusted: {p}; x-xtask.sign is set (pass --allow-unsigned to read it anyway)",
                    path.display()
                ),
                None => {}
            }
        }
        if self.encrypted && !self.trust.allow_unencrypted {
            bail!(
                "{} is untrusted: it is not encrypted, and x-xtask.encrypt is set (pass --allow-unencrypted to read it anyway)",
                path.display()
            );
        }
        Ok(true)
    }

    /// Checks a local archive through its open descriptor and its `.sig` beside it (a remote
    /// one was checked when it was picked).
    pub fn check_local(&self, src: &Source) -> Result<()> {
        if self.signing.is_none() && !self.encrypted {
            return Ok(());
        }
        let Some((size, sha256)) = src.stored_digest()? else { return Ok(()) };
        let file = file_name(&src.path);
        let sig = read_signature(&src.path)?;
        match self.untrusted(&file, size, sha256, src.encrypted(), sig.as_deref()) {
            Some(why) => bail!("{} is untrusted: {why}", src.path.display()),
            None => Ok(()),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Where an archive's signature lives.
pub fn signature_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(signature::SUFFIX);
    PathBuf::from(name)
}

/// The bytes of `archive`'s `.sig` (bounded), None when there is none.
pub fn read_signature(archive: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let path = signature_path(archive);
    let file = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?,
        Ok(_) => bail!("{} is not a regular file", path.display()),
        Err(_) => return Ok(None),
    };
    let mut bytes = Vec::new();
    file.take(signature::MAX_BYTES as u64 + 1).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// With `x-xtask.sign`: signs the committed archive at `path` (`size` bytes hashing to
/// `sha256`) and writes `NAME.sig` beside it (temporary name, fsync, rename, 0600). Returns the
/// signature file's text, None when signing is not configured.
pub fn sign_local(
    ctx: &Ctx,
    path: &Path,
    size: u64,
    sha256: [u8; 32],
    index: Option<[u8; 32]>,
) -> Result<Option<String>> {
    let policy = Policy::of(ctx)?;
    if policy.signing.is_none() {
        return Ok(None);
    }
    let statement = Statement { file: file_name(path), size, sha256, project: policy.project, index };
    let armor = sign::sign(&statement.text()).with_context(|| format!("sign {}", path.display()))?;
    let text = signature::render(&statement, &armor);
    let target = write_signature(path, text.as_bytes())?;
    ctx.ui.step(&format!("signed {}", target.display()));
    Ok(Some(text))
}

/// Writes `sig` as the `.sig` of the archive at `archive` (temporary name, fsync, rename, 0600);
/// returns where.
pub fn write_signature(archive: &Path, sig: &[u8]) -> Result<PathBuf> {
    let target = signature_path(archive);
    let temp = target.with_extension("sig.tmp");
    let _ = std::fs::remove_file(&temp);
    let mut f = crate::files::create_private(&temp)?;
    f.write_all(sig).and_then(|_| f.sync_all()).with_context(|| format!("write {}", temp.display()))?;
    std::fs::rename(&temp, &target).with_context(|| format!("rename {} to {}", temp.display(), target.display()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            signing: Some(Signing {
                allowed_signers: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI".into()],
                allowed_signers_file: None,
            }),
            encrypted: false,
            project: "app".into(),
            trust: crate::context::Trust::default(),
        }
    }

    fn sig(file: &str, size: u64, project: &str, index: Option<[u8; 32]>) -> Vec<u8> {
        let st = Statement { file: file.into(), size, sha256: [9; 32], project: project.into(), index };
        signature::render(&st, "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n").into_bytes()
    }

    /// Holds (attack6): a partial read is refused (before any key is asked) with a signature
    /// replayed from another archive: one naming another index, another file, size or project,
    /// or none at all; a signature naming no index sends the read to a whole read.
    #[test]
    fn a_partial_read_refuses_a_signature_of_another_archive_or_index() {
        let p = policy();
        let path = Path::new("/b/full_backup_20260101_000000.tar.zst");
        let index = [1; 32];
        let name = "full_backup_20260101_000000.tar.zst";
        let cases: [(Option<Vec<u8>>, &str); 5] = [
            (Some(sig(name, 100, "app", Some([2; 32]))), "its index is not the one its signature names"),
            (Some(sig("full_backup_20260102_000000.tar.zst", 100, "app", Some(index))), "vouches for another archive"),
            (Some(sig(name, 101, "app", Some(index))), "vouches for another archive"),
            (Some(sig(name, 100, "other", Some(index))), "vouches for another archive"),
            (None, "it has no signature"),
        ];
        for (s, why) in cases {
            let err = p.check_indexed(path, 100, index, s.as_deref()).unwrap_err();
            assert!(format!("{err:#}").contains(why) && format!("{err:#}").contains("untrusted"), "{err:#}");
        }
        assert!(!p.check_indexed(path, 100, index, Some(&sig(name, 100, "app", None))).unwrap());
    }
}

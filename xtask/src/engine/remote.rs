//! A remote's folder of archives, reached through `rclone` (S3 and every S3-compatible store,
//! B2, GCS, Azure, SFTP, WebDAV…): list (`lsjson`), download (`cat`), upload (`rcat`, multipart
//! with bounded memory), delete (`deletefile`). Credentials stay where the user keeps them
//! (`AWS_*` in the environment, `~/.aws/credentials`, rclone's own config): nothing here puts a
//! secret on a command line. Object names come from a bucket others may write, so every name
//! used is checked by the caller against the archive-name grammar first.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::docker::{Tool, ToolReader, ToolWriter};
use crate::model::offsite::RemoteSpec;

/// Largest sidecar (`NAME.sha256`) read: one line.
const SIDECAR_MAX: u64 = 4096;

/// One object in the remote folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub size: u64,
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Size")]
    size: i64,
    #[serde(rename = "IsDir", default)]
    is_dir: bool,
}

/// A configured remote, with rclone found.
pub struct Remote {
    pub spec: RemoteSpec,
    rclone: Tool,
}

impl Remote {
    pub fn open(spec: &RemoteSpec) -> Result<Remote> {
        let rclone = Tool::find("rclone", &format!("to reach remote {} ({})", spec.name, spec.url))?;
        Ok(Remote { spec: spec.clone(), rclone })
    }

    /// rclone's arguments for `verb` on `path`: quiet (errors only), few retries so an
    /// unreachable endpoint fails in seconds, and the S3 upload part size that keeps
    /// memory bounded (4 parts of 8 MiB in flight) while allowing archives up to about 78 GiB.
    /// (`--s3-*` flags are ignored by other backends.)
    fn args(&self, verb: &str, path: &str, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = [verb, "-q", "--retries", "2", "--low-level-retries", "2", "--contimeout", "10s"]
            .map(String::from)
            .to_vec();
        // The bucket must exist (never created by accident); the object-level MD5 is not kept
        // (the tool's own SHA-256 sidecar is the record), each part's is still sent.
        a.extend(["--s3-chunk-size", "8Mi", "--s3-no-check-bucket", "--s3-disable-checksum"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(path.to_string());
        a
    }

    fn at(&self, name: &str) -> String {
        format!("{}/{name}", self.spec.root)
    }

    /// Where `name` lives, for messages.
    pub fn shown(&self, name: &str) -> String {
        format!("{}:{name}", self.spec.name)
    }

    /// The objects in the project's folder (an absent folder is an empty one).
    pub fn list(&self) -> Result<Vec<Object>> {
        let args = self.args("lsjson", &self.spec.root, &["--files-only", "--no-mimetype", "--no-modtime"]);
        let out = match self.rclone.output(&args) {
            Ok(out) => out,
            Err(e) if format!("{e:#}").contains("directory not found") => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("list remote {} ({})", self.spec.name, self.spec.url)),
        };
        let listed: Vec<Listed> = serde_json::from_slice(&out).context("read rclone's listing")?;
        Ok(listed
            .into_iter()
            .filter(|l| !l.is_dir && l.size >= 0)
            .map(|l| Object { name: l.name, size: l.size as u64 })
            .collect())
    }

    /// Streams `name`'s bytes.
    pub fn cat(&self, name: &str) -> Result<ToolReader> {
        self.rclone.stream(&self.args("cat", &self.at(name), &[]), None)
    }

    /// `count` bytes of `name` from byte `offset` (fewer at its end): a ranged read (S3 `Range`).
    pub fn range(&self, name: &str, offset: u64, count: u64) -> Result<ToolReader> {
        let (offset, count) = (offset.to_string(), count.to_string());
        self.rclone.stream(&self.args("cat", &self.at(name), &["--offset", &offset, "--count", &count]), None)
    }

    /// The size of the object `name`.
    pub fn size_of(&self, name: &str) -> Result<u64> {
        let args = self.args("lsjson", &self.at(name), &["--files-only", "--no-mimetype", "--no-modtime"]);
        let out = self.rclone.output(&args).with_context(|| format!("look up {}", self.shown(name)))?;
        let listed: Vec<Listed> = serde_json::from_slice(&out).context("read rclone's listing")?;
        match listed.as_slice() {
            [one] if !one.is_dir && one.size >= 0 => Ok(one.size as u64),
            _ => bail!("{} is not one object", self.shown(name)),
        }
    }

    /// The first `n` bytes of `name`.
    pub fn head(&self, name: &str, n: u64) -> Result<Vec<u8>> {
        let count = n.to_string();
        self.rclone
            .output(&self.args("cat", &self.at(name), &["--count", &count]))
            .with_context(|| format!("read the start of {}", self.shown(name)))
    }

    /// The `NAME.sha256` sidecars (and `NAME.sig` signatures) of the folder, each read on its own (one `rclone copy` into a
    /// private temporary directory, so one sidecar's bytes can never speak for another archive).
    /// A sidecar counts only when it holds exactly one line `<64 hex>  NAME` naming its own
    /// archive; any other is reported in [`Sidecars::refused`] and counts for nothing.
    pub fn sidecars(&self) -> Result<Sidecars> {
        let dir = crate::files::private_temp_dir("xtask-sidecars")?;
        let max = format!("{SIDECAR_MAX}b");
        let at = dir.path.display().to_string();
        let include = ["--include", "*.sha256", "--include", "*.sig", "--max-depth", "1"];
        let mut args = self.args("copy", &self.spec.root, &include);
        args.pop();
        args.extend(["--max-size".into(), max, self.spec.root.clone(), at]);
        self.rclone.output(&args).with_context(|| format!("read the .sha256 files of remote {}", self.spec.name))?;
        let mut out = Sidecars::default();
        for entry in std::fs::read_dir(&dir.path).context("read the downloaded .sha256 files")? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read(entry.path()).with_context(|| format!("read the downloaded {file}"))?;
            if let Some(archive) = file.strip_suffix(super::sign::SUFFIX) {
                out.signatures.insert(archive.to_string(), text);
                continue;
            }
            let Some(archive) = file.strip_suffix(".sha256") else { continue };
            match own_sidecar(archive, &text) {
                Ok(d) => {
                    out.good.insert(archive.to_string(), d);
                }
                Err(why) => out.refused.push((file, why)),
            }
        }
        Ok(out)
    }

    /// Uploads `data` as `name` (rcat: multipart, the object appears only when complete on S3).
    pub fn upload(&self, name: &str, data: &mut dyn Read) -> Result<u64> {
        let mut w = self.rclone.sink(&self.args("rcat", &self.at(name), &[]))?;
        let copied = std::io::copy(data, &mut w);
        match copied {
            Ok(n) => w.finish().map(|_| n),
            Err(e) => {
                let child = w.finish().err();
                match child {
                    Some(c) => Err(c.context(format!("upload {}", self.shown(name)))),
                    None => Err(anyhow::Error::new(e).context(format!("upload {}", self.shown(name)))),
                }
            }
        }
    }

    /// Starts uploading `name` from what the caller writes (an archive while it is written).
    /// Dropped unfinished, the upload is killed: no object appears.
    pub fn start_upload(&self, name: &str) -> Result<ToolWriter> {
        self.rclone.sink(&self.args("rcat", &self.at(name), &[]))
    }

    pub fn delete(&self, name: &str) -> Result<()> {
        self.rclone.output(&self.args("deletefile", &self.at(name), &[])).map(drop)
    }
}

impl super::Finish for ToolWriter {
    fn finish(self: Box<Self>) -> Result<()> {
        ToolWriter::finish(*self).map(drop)
    }
}

/// `<64 hex>  <name>` lines -> name -> digest.
/// The sidecars of a remote folder: archive name -> digest for those that count, and the ones
/// refused with why.
#[derive(Debug, Default)]
pub struct Sidecars {
    pub good: BTreeMap<String, [u8; 32]>,
    pub refused: Vec<(String, String)>,
    /// Archive name -> the bytes of its `NAME.sig` (checked by the caller's policy).
    pub signatures: BTreeMap<String, Vec<u8>>,
}

/// The digest in `archive`'s own sidecar: exactly one line, `<64 hex>  <archive>` (`sha256sum`'s
/// format, `*` allowed before the name), ending in one newline or none.
pub fn own_sidecar(archive: &str, text: &[u8]) -> std::result::Result<[u8; 32], String> {
    let text = std::str::from_utf8(text).map_err(|_| "not text".to_string())?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') || line.contains('\r') {
        return Err("more than one line: a sidecar names only its own archive".into());
    }
    let (hex, name) = line.split_once("  ").ok_or("not `<sha256>  <name>`")?;
    let digest = parse_hex32(hex).ok_or("not a SHA-256 in hex")?;
    if name.trim_start_matches('*') != archive {
        return Err(format!("it names {name:?}, not its own archive {archive}"));
    }
    Ok(digest)
}

pub fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut d = [0u8; 32];
    for (i, b) in d.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(d)
}

/// Whether an upload error is worth another try (a network hiccup), not a refusal
/// (credentials, a missing bucket) that would fail the same way again.
pub fn transient(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    let permanent = ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "403", "404"];
    !permanent.iter().any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_counts_only_for_its_own_archive() {
        let h = "ab".repeat(32);
        let own = format!("{h}  full_backup_20260101_000000.tar.gz\n");
        assert_eq!(own_sidecar("full_backup_20260101_000000.tar.gz", own.as_bytes()), Ok([0xab; 32]));
        let star = format!("{h}  *db_backup_20260101_000000.tar.gz.age");
        assert!(own_sidecar("db_backup_20260101_000000.tar.gz.age", star.as_bytes()).is_ok());
        let other = own_sidecar("full_backup_20260102_000000.tar.gz", own.as_bytes()).unwrap_err();
        assert!(other.contains("not its own archive"), "{other}");
        let two = format!("{own}{h}  full_backup_20260102_000000.tar.gz\n");
        assert!(own_sidecar("full_backup_20260101_000000.tar.gz", two.as_bytes())
            .unwrap_err()
            .contains("more than one line"));
        assert!(own_sidecar("x", b"zz  x").is_err());
    }

    #[test]
    fn refusals_are_not_retried() {
        assert!(!transient(&anyhow::anyhow!("SignatureDoesNotMatch: status code: 403")));
        assert!(transient(&anyhow::anyhow!("connection reset by peer")));
    }
}

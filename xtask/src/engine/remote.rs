//! A remote's folder of archives, reached through `rclone` (S3 and every S3-compatible store,
//! B2, GCS, Azure, SFTP, WebDAV…): list (`lsjson`), download (`cat`), upload (`rcat`, multipart
//! with bounded memory), delete (`deletefile`). Credentials stay where the user keeps them
//! (`AWS_*` in the environment, `~/.aws/credentials`, rclone's own config): nothing here puts a
//! secret on a command line. Object names come from a bucket others may write, so every name
//! used is checked by the caller against the archive-name grammar first.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{Context, Result};
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

    /// The `NAME.sha256` sidecars of the folder, in one download: object name -> digest. A line
    /// that is not `<64 hex>  <name>` is ignored (the archive then counts as incomplete).
    pub fn sidecars(&self) -> Result<BTreeMap<String, [u8; 32]>> {
        let args = self.args("cat", &self.spec.root, &["--include", "*.sha256", "--max-depth", "1"]);
        let mut text = Vec::new();
        let mut r = self.rclone.stream(&args, None)?;
        (&mut r).take(SIDECAR_MAX * 10_000).read_to_end(&mut text).context("read the remote's .sha256 files")?;
        Ok(parse_sidecars(&text))
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

impl crate::archive::sink::Finish for ToolWriter {
    fn finish(self: Box<Self>) -> Result<()> {
        ToolWriter::finish(*self).map(drop)
    }
}

/// `<64 hex>  <name>` lines -> name -> digest.
pub fn parse_sidecars(text: &[u8]) -> BTreeMap<String, [u8; 32]> {
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(text).lines() {
        let Some((hex, name)) = line.split_once("  ") else { continue };
        if let Some(d) = parse_hex32(hex) {
            out.insert(name.trim_start_matches('*').to_string(), d);
        }
    }
    out
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
    fn sidecars_parse_only_well_formed_lines() {
        let h = "ab".repeat(32);
        let text = format!("{h}  full_backup_1.tar.gz\ngarbage\n{}  x\n{h}  *db_backup_2.tar.gz.age\n", "z".repeat(64));
        let s = parse_sidecars(text.as_bytes());
        assert_eq!(s.len(), 2);
        assert_eq!(s["full_backup_1.tar.gz"], [0xab; 32]);
        assert!(s.contains_key("db_backup_2.tar.gz.age"));
    }

    #[test]
    fn refusals_are_not_retried() {
        assert!(!transient(&anyhow::anyhow!("SignatureDoesNotMatch: status code: 403")));
        assert!(transient(&anyhow::anyhow!("connection reset by peer")));
    }
}

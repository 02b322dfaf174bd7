//! Digests: SHA-256 on the way through a reader, the `SHA256SUMS` entry (`sha256sum -c`
//! format) written and parsed, hex.

use super::*;
use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read};

/// Reads through to a SHA-256, counting the bytes.
pub(crate) struct HashingReader<R> {
    inner: R,
    pub hasher: Sha256,
    pub bytes: u64,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new(), bytes: 0 }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// `sha256sum` output: `<hex>  <name>`; names holding `\` or a newline are escaped and the line
/// starts with `\`, as GNU coreutils does.
pub fn format_sums(sums: &[(Vec<u8>, [u8; 32])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, digest) in sums {
        let escape = name.iter().any(|&b| b == b'\\' || b == b'\n');
        if escape {
            out.push(b'\\');
        }
        out.extend_from_slice(hex(digest).as_bytes());
        out.extend_from_slice(b"  ");
        for &b in name {
            match b {
                b'\\' if escape => out.extend_from_slice(b"\\\\"),
                b'\n' if escape => out.extend_from_slice(b"\\n"),
                _ => out.push(b),
            }
        }
        out.push(b'\n');
    }
    out
}

/// Parses `format_sums` output back into name -> hex digest.
pub fn parse_sums(text: &[u8]) -> Result<BTreeMap<Vec<u8>, String>> {
    let mut map = BTreeMap::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (escaped, line) = match line.strip_prefix(b"\\") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        if line.len() < 66 || &line[64..66] != b"  " {
            bail!("{CHECKSUMS} line {}: not `<sha256>  <name>`", n + 1);
        }
        let digest = String::from_utf8_lossy(&line[..64]).to_string();
        let raw = &line[66..];
        let name = if escaped {
            let mut out = Vec::new();
            let mut i = 0;
            while i < raw.len() {
                match (raw[i], raw.get(i + 1)) {
                    (b'\\', Some(b'n')) => {
                        out.push(b'\n');
                        i += 2
                    }
                    (b'\\', Some(b'\\')) => {
                        out.push(b'\\');
                        i += 2
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1
                    }
                }
            }
            out
        } else {
            raw.to_vec()
        };
        if !digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            bail!("{CHECKSUMS} line {}: not a lower-case hex SHA-256", n + 1);
        }
        if map.insert(name, digest).is_some() {
            bail!("{CHECKSUMS} line {}: a second checksum for the same name", n + 1);
        }
    }
    Ok(map)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

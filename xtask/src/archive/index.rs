//! The archive's index (format version 4): one line per tar entry before it, in the stream's
//! order, each a JSON object read by one strict grammar ([`parse_line`]): name, type, size,
//! mode, owner, mtime, link target, a file's SHA-256 and where its header starts in the tar
//! stream. It is the tar entry [`INDEX`], just before `SHA256SUMS` (which covers it like every
//! file); `ls`, `cat`, `diff` and a single-path restore read it instead of the whole archive
//! (docs/archive-format.md, "Index"). The index is as untrusted as the rest of the archive: an
//! entry read through it is checked against its line (name, type, size, digest) before use.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::grammar::{self, Kind};

pub use super::metadata::INDEX;
/// Longest index line read: a name of 64 KiB in hex, twice (a hard link), and the rest.
pub const MAX_LINE: usize = 300 * 1024;

/// One entry as the index records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The canonical archive name (`volumes/app-media/a/b.txt`; a directory without its `/`).
    pub name: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    /// Symlink target as stored, or hard link target (an archive name).
    pub link: Option<Vec<u8>>,
    /// A regular file's SHA-256 (the same as its `SHA256SUMS` line).
    pub sha256: Option<[u8; 32]>,
    /// Where the entry's first header block starts in the (uncompressed) tar stream.
    pub at: u64,
}

impl Entry {
    /// The index entry of an entry the grammar accepted, found at `at` with content `sha256`.
    pub fn of_checked(c: &grammar::Checked, sha256: Option<[u8; 32]>, at: u64) -> Entry {
        Entry {
            name: c.name.clone(),
            kind: c.kind,
            size: c.size,
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
            mtime: c.mtime,
            link: c.link.clone(),
            sha256,
            at,
        }
    }

    /// The name as shown to a user (lossy for bytes that are not UTF-8).
    pub fn shown(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A line's fields: a name (or link) that is UTF-8 goes as text, any other as hex under `*_hex`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_hex: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    at: u64,
}

const KINDS: [(Kind, &str); 7] = [
    (Kind::File, "file"),
    (Kind::Dir, "dir"),
    (Kind::Symlink, "symlink"),
    (Kind::HardLink, "hardlink"),
    (Kind::Char, "char"),
    (Kind::Block, "block"),
    (Kind::Fifo, "fifo"),
];

/// The word the index (and `ls --json`) uses for a type.
pub fn kind_word(kind: Kind) -> &'static str {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, w)| *w).unwrap_or("file")
}

fn text_or_hex(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(super::hex(bytes))),
    }
}

fn from_text_or_hex(text: Option<String>, hex: Option<String>, what: &str) -> Result<Option<Vec<u8>>> {
    match (text, hex) {
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(h)) => Ok(Some(unhex(&h).with_context(|| format!("{what}_hex is not hex"))?)),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => bail!("both {what} and {what}_hex"),
    }
}

fn unhex(h: &str) -> Result<Vec<u8>> {
    if !h.len().is_multiple_of(2) || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        bail!("not lower-case hex");
    }
    Ok((0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or(0)).collect())
}

/// One index line (with its newline).
pub fn to_line(e: &Entry) -> Vec<u8> {
    let (name, name_hex) = text_or_hex(&e.name);
    let (link, link_hex) = e.link.as_deref().map(text_or_hex).unwrap_or((None, None));
    let line = Line {
        name,
        name_hex,
        kind: kind_word(e.kind).to_string(),
        size: e.size,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        link,
        link_hex,
        sha256: e.sha256.map(|d| super::hex(&d)),
        at: e.at,
    };
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Reads one index line (without its newline) by the strict grammar: known fields only, a
/// canonical name, a digest exactly for regular files, a link target exactly for links, no data
/// on anything but a file.
pub fn parse_line(line: &[u8]) -> Result<Entry> {
    if line.len() > MAX_LINE {
        bail!("an index line of {} bytes (at most {MAX_LINE})", line.len());
    }
    let l: Line = serde_json::from_slice(line).context("not an index line")?;
    let name = from_text_or_hex(l.name, l.name_hex, "name")?.context("an index line without a name")?;
    let kind = KINDS.iter().find(|(_, w)| *w == l.kind).map(|(k, _)| *k);
    let kind = kind.with_context(|| format!("unknown type {:?}", l.kind))?;
    if grammar::canonical(&name, false)? != &name[..] {
        bail!("name {} is not canonical", grammar::shown(&name));
    }
    let link = from_text_or_hex(l.link, l.link_hex, "link")?;
    let sha256 = match l.sha256 {
        Some(h) => Some(<[u8; 32]>::try_from(unhex(&h)?.as_slice()).context("sha256 is not 32 bytes")?),
        None => None,
    };
    let is_link = matches!(kind, Kind::Symlink | Kind::HardLink);
    if (kind == Kind::File) != sha256.is_some() || is_link != link.is_some() || (kind != Kind::File && l.size != 0) {
        bail!("entry {}: its fields do not fit its type {}", grammar::shown(&name), l.kind);
    }
    Ok(Entry { name, kind, size: l.size, mode: l.mode, uid: l.uid, gid: l.gid, mtime: l.mtime, link, sha256, at: l.at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &[u8]) -> Entry {
        Entry {
            name: name.to_vec(),
            kind: Kind::File,
            size: 12,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            link: None,
            sha256: Some([7; 32]),
            at: 1536,
        }
    }

    #[test]
    fn lines_round_trip_text_and_other_bytes() {
        for name in [&b"volumes/app-media/a b/\xc3\xa9t\xc3\xa9\nx.txt"[..], b"volumes/app-media/\xff\xfe"] {
            let e = file(name);
            let line = to_line(&e);
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line, newline escaped");
            assert_eq!(parse_line(&line[..line.len() - 1]).unwrap(), e);
        }
        let link = Entry {
            kind: Kind::Symlink,
            size: 0,
            sha256: None,
            link: Some(b"../../etc/passwd".to_vec()),
            ..file(b"volumes/v/l")
        };
        assert_eq!(parse_line(to_line(&link).trim_ascii_end()).unwrap(), link);
    }

    #[test]
    fn lines_that_do_not_fit_are_refused() {
        let ok = String::from_utf8(to_line(&file(b"volumes/v/a"))).unwrap();
        let bad = [
            ok.replace("\"at\"", "\"extra\":1,\"at\""),
            ok.replace("\"type\":\"file\"", "\"type\":\"dir\""),
            ok.replace("volumes/v/a", "volumes/v/../a"),
            ok.replace("volumes/v/a", "/volumes/v/a"),
            ok.replace(&super::super::hex(&[7; 32]), "77"),
            ok.replace("\"name\":\"volumes/v/a\"", "\"name_hex\":\"zz\""),
            "{}".to_string(),
        ];
        for line in bad {
            assert!(parse_line(line.trim_end().as_bytes()).is_err(), "accepted {line}");
        }
    }
}

//! Detached signatures of archives (`NAME.sig` beside `NAME`, locally and in remotes): what is
//! signed and the one strict grammar a `.sig` file is read by. The statement binds the archive's
//! file name (which carries its kind and creation time), its size and the SHA-256 of its bytes as
//! stored (encrypted or not) to the project; it is signed with OpenSSH's `ssh-keygen -Y sign`
//! in the namespace [`NAMESPACE`] (engine/sign.rs). A `.sig` file is the statement's lines
//! followed by the SSH signature's armor, and is as untrusted as the archive until checked.

use anyhow::{bail, Context, Result};

pub use crate::engine::sign::{NAMESPACE, SUFFIX};
/// Largest `.sig` file read.
pub const MAX_BYTES: usize = 16 * 1024;

const HEADER: &str = "xtask-archive-signature 1";
const BEGIN: &str = "-----BEGIN SSH SIGNATURE-----";
const END: &str = "-----END SSH SIGNATURE-----";

/// What a signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub file: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub project: String,
    /// A seekable archive's index digest (`index.jsonl`'s SHA-256): what lets a partial read
    /// (`ls`, `cat`, `restore --path`) be authenticated without hashing the whole archive.
    pub index: Option<[u8; 32]>,
}

impl Statement {
    /// The exact bytes signed.
    pub fn text(&self) -> String {
        let index = self.index.map(|d| format!("index {}\n", super::hex(&d))).unwrap_or_default();
        format!(
            "{HEADER}\nfile {}\nsize {}\nsha256 {}\nproject {}\n{index}",
            self.file,
            self.size,
            super::hex(&self.sha256),
            self.project
        )
    }
}

/// A `.sig` file's text: the statement, then the signature's armor.
pub fn render(statement: &Statement, armor: &str) -> String {
    format!("{}{}\n", statement.text(), armor.trim_end())
}

/// An armored SSH signature as one line (its base64 body, armor lines dropped): what a restic
/// snapshot's `sig=` tag holds (tags are single lines).
pub fn compact(armor: &str) -> String {
    armor.lines().filter(|l| *l != BEGIN && *l != END).map(str::trim).collect()
}

/// A `.sig` file's bytes for `statement` from a [`compact`] signature (read back by [`parse`],
/// which rejects anything but base64 in it).
pub fn expand(statement: &Statement, body: &str) -> Vec<u8> {
    let lines: Vec<String> = body.as_bytes().chunks(70).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    render(statement, &format!("{BEGIN}\n{}\n{END}\n", lines.join("\n"))).into_bytes()
}

/// Reads a `.sig` file: the statement's five lines in order, then one SSH signature armor and
/// nothing else. Returns the statement and the armor.
pub fn parse(bytes: &[u8]) -> Result<(Statement, String)> {
    if bytes.len() > MAX_BYTES {
        bail!("over {MAX_BYTES} bytes");
    }
    let text = std::str::from_utf8(bytes).context("not text")?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 7 || lines[0] != HEADER {
        bail!("not an xtask archive signature (the first line must be {HEADER:?})");
    }
    let field = |i: usize, key: &str| -> Result<&str> {
        lines[i]
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .with_context(|| format!("line {} must be `{key} …`", i + 1))
    };
    let file = field(1, "file")?;
    let size = field(2, "size")?.parse::<u64>().context("size is not a number")?;
    let sha256 = crate::engine::remote::parse_hex32(field(3, "sha256")?).context("sha256 is not 64 hex digits")?;
    let project = field(4, "project")?;
    let plain = |s: &str| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
    if !plain(file) || !plain(project) {
        bail!("the file or project named is not plain text");
    }
    let index = match lines[5].strip_prefix("index ") {
        Some(hex) => Some(crate::engine::remote::parse_hex32(hex).context("index is not 64 hex digits")?),
        None => None,
    };
    let armor = &lines[5 + usize::from(index.is_some())..];
    let base64 = |l: &&str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if armor.first() != Some(&BEGIN) || armor.last() != Some(&END) || !armor[1..armor.len() - 1].iter().all(base64) {
        bail!("no SSH signature after the statement (`{BEGIN}` … `{END}` and nothing else)");
    }
    let statement = Statement { file: file.into(), size, sha256, project: project.into(), index };
    Ok((statement, armor.join("\n") + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_signature_expands_to_a_sig_file_that_parses_back() {
        let armor = format!("{BEGIN}\n{}\n{}\n{END}\n", "A".repeat(70), "B/+=".repeat(5));
        let body = compact(&armor);
        assert_eq!(body, format!("{}{}", "A".repeat(70), "B/+=".repeat(5)));
        let st = Statement {
            file: "db_backup_20261207_010203.tar".into(),
            size: 9,
            sha256: [3; 32],
            project: "p".into(),
            index: None,
        };
        let (back, armor_back) = parse(&expand(&st, &body)).unwrap();
        assert_eq!((back, armor_back), (st.clone(), armor));
        assert!(parse(&expand(&st, "not base64!")).is_err(), "a tag's text cannot smuggle lines in");
    }

    fn statement() -> Statement {
        Statement {
            file: "full_backup_20260101_000000.tar.gz".into(),
            size: 42,
            sha256: [0xab; 32],
            project: "app".into(),
            index: None,
        }
    }

    #[test]
    fn a_signature_file_round_trips_and_nothing_else_is_read() {
        let armor = format!("{BEGIN}\nU1NIU0lH+/=\nAAAA\n{END}\n");
        let text = render(&statement(), &armor);
        let (s, a) = parse(text.as_bytes()).unwrap();
        assert_eq!((s, a), (statement(), armor.clone()));
        let bad = [
            text.replace("size 42", "size x"),
            text.replace(HEADER, "xtask-archive-signature 2"),
            format!("{text}trailing\n"),
            text.replace("AAAA", "AA AA"),
            text.replace("project app", "project"),
            text.replace("sha256 ", "sha256  "),
        ];
        for b in bad {
            assert!(parse(b.as_bytes()).is_err(), "{b}");
        }
        assert!(parse(&vec![b'a'; MAX_BYTES + 1]).is_err());
        let indexed = Statement { index: Some([0xcd; 32]), ..statement() };
        let text = render(&indexed, &armor);
        assert!(text.contains(&format!("\nindex {}\n", "cd".repeat(32))));
        assert_eq!(parse(text.as_bytes()).unwrap().0, indexed);
        for b in [text.replace("index ", "index  "), text.replace("index cd", "index zz")] {
            assert!(parse(b.as_bytes()).is_err(), "{b}");
        }
    }
}

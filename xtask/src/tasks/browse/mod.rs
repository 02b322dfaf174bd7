//! Looking into archives without restoring them: `ls` (what an archive holds, file by file),
//! `cat` (one file's bytes, checked against its digest), `diff` (what changed between two
//! archives: files per volume, database row counts), and `restore --path` (single paths into a
//! host directory, [`to_dir`]). Read-only but for `restore --path`, which writes only into the
//! directory it is given. Every archive is read through `archive::listing`, so what is shown
//! or handed out passed the strict grammar and its digests; each command says how the archive
//! was read (by its index, or sequentially and why). Names are printed escaped
//! (`listing::shown`): an archive's names never reach a terminal raw.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::archive::index::{kind_word, Entry};
use crate::archive::listing::{self, Gate, Listed, Selector};
use crate::archive::{grammar::Kind, Rules, Source};
use crate::context::Ctx;

pub mod diff;
pub mod to_dir;

/// Which archive a command reads: a local file, the newest trusted one, or one of a remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Which {
    /// The archive (with `remote`: its name there); None: the newest.
    pub archive: Option<PathBuf>,
    /// Read from this remote (a name from `x-xtask.remotes`, or a URL).
    pub remote: Option<String>,
    /// The backup directory.
    pub dir: PathBuf,
}

/// Opens the archive `which` names, with the reading policy (`x-xtask.sign`/`encrypt`) as
/// `verify` and `restore` apply it: a remote one judged when it is picked, the newest local one
/// when it is found; a named local one by its [`Gate`] (a read by its index: its signature must
/// name that index; a whole read: the whole archive's digest).
pub fn open(ctx: &Ctx, which: &Which) -> Result<(Source, Box<dyn Gate>)> {
    let policy = crate::store::trust::Policy::of(ctx)?;
    match (&which.remote, &which.archive) {
        (Some(remote), file) => {
            let file = file.as_ref().map(|f| f.to_string_lossy().into_owned());
            if crate::store::vault::lookup(ctx, remote)?.is_some() {
                return Ok((crate::store::remote::pick(ctx, remote, file.as_deref())?, Box::new(listing::Open)));
            }
            let (src, found) = crate::store::remote::pick_named(ctx, remote, file.as_deref())?;
            let gate =
                PolicyGate { policy, path: found.file.clone().into(), size: found.size_bytes, sig: found.signature };
            Ok((src, Box::new(Picked(gate))))
        }
        (None, Some(path)) => {
            let src = Source::open(path)?;
            let size = src.ranges()?.map(|r| r.size()).unwrap_or(0);
            let sig = crate::store::trust::read_signature(path)?;
            Ok((src, Box::new(PolicyGate { policy, path: path.clone(), size, sig })))
        }
        (None, None) => Ok((crate::store::local::latest_trusted(ctx, &which.dir, |_| true)?, Box::new(listing::Open))),
    }
}

/// The reading policy for one archive (its name, size and signature file's bytes).
struct PolicyGate {
    policy: crate::store::trust::Policy,
    path: PathBuf,
    size: u64,
    sig: Option<Vec<u8>>,
}

impl Gate for PolicyGate {
    fn indexed(&self, index_sha256: [u8; 32]) -> Result<bool> {
        self.policy.check_indexed(&self.path, self.size, index_sha256, self.sig.as_deref())
    }

    fn whole(&self, src: &Source) -> Result<()> {
        self.policy.check_local(src)
    }
}

/// A remote archive's policy: judged whole when it was picked (its signature against its
/// sidecar's digest, which its stream is checked against); a read by its index must still find
/// the index its signature names.
struct Picked(PolicyGate);

impl Gate for Picked {
    fn indexed(&self, index_sha256: [u8; 32]) -> Result<bool> {
        self.0.indexed(index_sha256)
    }

    fn whole(&self, _: &Source) -> Result<()> {
        Ok(())
    }
}

/// Rules for reading only: device nodes and FIFOs are listed (nothing is created).
const READ_ONLY: Rules = Rules { allow_special: true };

/// `ls`'s options.
#[derive(Debug, Clone)]
pub struct LsOptions {
    pub which: Which,
    /// `VOLUME[/PATH]`: that entry and what is below it; None: every entry.
    pub path: Option<String>,
    pub long: bool,
    pub json: bool,
}

/// `cargo xtask ls`: the archive's entries (those under `path`), once the archive was read and
/// verified.
pub fn ls(ctx: &Ctx, opts: &LsOptions) -> Result<()> {
    let selector = Selector::parse(opts.path.as_slice())?;
    let (src, gate) = open(ctx, &opts.which)?;
    let mut found = Vec::new();
    let listed = listing::entries(&src, READ_ONLY, &*gate, &mut |e| {
        if selector.matches(&e.name) {
            found.push(e.clone());
        }
        Ok(())
    })?;
    if let (Some(path), true) = (&opts.path, found.is_empty()) {
        bail!("{} holds no entry {path:?}; `cargo xtask ls ARCHIVE` lists what it holds", src.path.display());
    }
    if opts.json {
        let entries: Vec<serde_json::Value> = found.iter().map(entry_json).collect();
        // {"archive", "access": "sequential"|"indexed", "why" (sequential), "entries"}
        let mut out = serde_json::to_value(&listed.access)?;
        out["archive"] = src.path.display().to_string().into();
        out["entries"] = entries.into();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    say_access(ctx, &src, &listed);
    let mut out = std::io::stdout().lock();
    for e in &found {
        writeln!(out, "{}", if opts.long { long_line(e) } else { short_line(e) })?;
    }
    Ok(())
}

/// How the archive was read, on stderr.
fn say_access(ctx: &Ctx, src: &Source, listed: &Listed) {
    ctx.ui.step(&format!("{}: {}", src.path.display(), listed.access.describe()));
}

/// `NAME`, a directory with `/`, a link with `-> TARGET`.
pub fn short_line(e: &Entry) -> String {
    let name = listing::shown(&e.name);
    match (e.kind, &e.link) {
        (Kind::Dir, _) => format!("{name}/"),
        (Kind::Symlink, Some(t)) => format!("{name} -> {}", listing::escaped(t)),
        (Kind::HardLink, Some(t)) => format!("{name} => {}", listing::shown(t)),
        _ => name,
    }
}

/// `TYPE MODE UID:GID SIZE MTIME NAME`.
pub fn long_line(e: &Entry) -> String {
    let mtime = time::OffsetDateTime::from_unix_timestamp(e.mtime as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| e.mtime.to_string());
    format!(
        "{:<8} {:04o} {:>5}:{:<5} {:>12} {mtime} {}",
        kind_word(e.kind),
        e.mode,
        e.uid,
        e.gid,
        e.size,
        short_line(e)
    )
}

/// An entry for `--json`: its name as the user types it (`name_hex` too when it is not UTF-8).
pub fn entry_json(e: &Entry) -> serde_json::Value {
    let name = listing::user_name(&e.name);
    let mut v = serde_json::json!({
        "name": String::from_utf8_lossy(name),
        "type": kind_word(e.kind),
        "size": e.size,
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "mtime": e.mtime,
        "sha256": e.sha256.map(|d| crate::archive::hex(&d)),
        "link": e.link.as_deref().map(String::from_utf8_lossy),
    });
    if std::str::from_utf8(name).is_err() {
        v["name_hex"] = crate::archive::hex(name).into();
    }
    v
}

/// `cat`'s options.
#[derive(Debug, Clone)]
pub struct CatOptions {
    pub which: Which,
    /// `VOLUME/PATH` of one regular file.
    pub path: String,
}

/// `cargo xtask cat`: one regular file's bytes to stdout, once they matched the digest
/// `SHA256SUMS` gives (the whole archive verified when it is read sequentially). To a terminal
/// only text without control characters goes: anything else is refused (an archive's bytes
/// could drive the terminal); redirect it to a file or a pipe.
pub fn cat(ctx: &Ctx, opts: &CatOptions) -> Result<()> {
    let selector = Selector::parse(std::slice::from_ref(&opts.path))?;
    let (src, gate) = open(ctx, &opts.which)?;
    let root = selector.roots()[0].clone();
    let mut found = false;
    let near = std::env::temp_dir();
    let listed = listing::read_entries(&src, READ_ONLY, &*gate, &|n| n == root.as_slice(), &near, &mut |e, data| {
        found = true;
        let shown = listing::shown(&e.name);
        match (e.kind, data) {
            (Kind::File, Some(data)) => write_out(data, &shown),
            (Kind::Dir, _) => bail!("{shown} is a directory: `cargo xtask ls ARCHIVE {shown}` lists it"),
            (Kind::Symlink, _) => bail!(
                "{shown} is a symbolic link to {}: nothing to print",
                listing::escaped(e.link.as_deref().unwrap_or_default())
            ),
            (Kind::HardLink, _) => bail!(
                "{shown} is a hard link to {}: cat that name",
                listing::shown(e.link.as_deref().unwrap_or_default())
            ),
            (kind, _) => bail!("{shown} is a {} node: no data to print", kind_word(kind)),
        }
    })?;
    say_access(ctx, &src, &listed);
    if !found {
        bail!("{} holds no entry {:?}; `cargo xtask ls ARCHIVE` lists what it holds", src.path.display(), opts.path);
    }
    Ok(())
}

/// The most a terminal is shown: a larger file goes to a file or a pipe.
const TERMINAL_MAX: usize = 16 << 20;

/// Copies a checked file's bytes to stdout; to a terminal, only plain text, judged whole
/// before a byte is shown (a refused file prints nothing).
fn write_out(data: &mut dyn Read, shown: &str) -> Result<()> {
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let redirect = "redirect it (`> FILE` or `| less`)";
    loop {
        let n = data.read(&mut buf).context("read a private copy")?;
        if n == 0 {
            break;
        }
        if terminal {
            pending.extend_from_slice(&buf[..n]);
            if pending.len() > TERMINAL_MAX {
                bail!("{shown} is larger than {} MiB: refused on a terminal; {redirect}", TERMINAL_MAX >> 20);
            }
            continue;
        }
        out.write_all(&buf[..n]).context("write to stdout")?;
    }
    if terminal && !is_plain_text(&pending) {
        bail!("{shown} is not plain text: refused on a terminal; {redirect}");
    }
    out.write_all(&pending).context("write to stdout")?;
    out.flush().context("write to stdout")
}

/// UTF-8 without control characters but newline, tab and carriage return.
fn is_plain_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|t| !t.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &[u8], kind: Kind, link: Option<&[u8]>) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            link: link.map(<[u8]>::to_vec),
            sha256: None,
            at: 0,
        }
    }

    #[test]
    fn lines_show_types_and_escape_names() {
        assert_eq!(short_line(&entry(b"volumes/v/d", Kind::Dir, None)), "v/d/");
        assert_eq!(short_line(&entry(b"volumes/v/l", Kind::Symlink, Some(b"../\x1b]x"))), "v/l -> ../\\x1b]x");
        assert_eq!(short_line(&entry(b"volumes/v/h", Kind::HardLink, Some(b"volumes/v/f"))), "v/h => v/f");
        let long = long_line(&entry(b"volumes/v/d\nx", Kind::Dir, None));
        assert!(long.starts_with("dir      0755     0:0") && long.ends_with("1970-01-01T00:00:00Z v/d\\nx/"), "{long}");
        let json = entry_json(&entry(b"volumes/v/\xff", Kind::Dir, None));
        assert_eq!((json["name_hex"].as_str(), json["type"].as_str()), (Some("762fff"), Some("dir")));
    }

    #[test]
    fn only_plain_text_goes_to_a_terminal() {
        assert!(is_plain_text("héllo\n\tworld\r\n".as_bytes()));
        assert!(!is_plain_text(b"a\x1b[2Jb") && !is_plain_text(b"\x00\x01") && !is_plain_text(b"\xff\xfe abc"));
    }
}

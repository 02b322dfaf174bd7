//! Reading what an archive holds, entry by entry, for `ls`, `cat`, `diff` and a single-path
//! restore: [`entries`] (every content entry as an [`index::Entry`] with its content digest) and
//! [`read_entries`] (the bytes of the wanted ones, each checked against the digest `SHA256SUMS`
//! gives). Both work for every archive by a sequential read: the one verification pass
//! (`verify_source_with`), the whole archive by the strict grammar, so what they hand out is
//! what `verify` accepts; an archive with any problem hands out nothing. [`Access`] says how an
//! archive was read and, when sequentially, why. The indexed fast path (format version 4's
//! `index.jsonl` and seekable frames, archive/seekable.rs) comes in where each function says.
//! [`Selector`] maps a user's `VOLUME[/PATH]` to archive names; [`shown`] prints a name safely.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use super::grammar::{self, Checked, Kind, Place};
use super::index::Entry;
use super::{Codec, Inflated, Metadata, Rules, Source, Taken};

/// How an archive was read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "access")]
pub enum Access {
    /// From its index, reading only the frames asked for.
    Indexed,
    /// The whole archive, from its start: `why` it has no usable index.
    Sequential { why: String },
}

impl Access {
    /// One line for the user ("read sequentially: gzip archive").
    pub fn describe(&self) -> String {
        match self {
            Access::Indexed => "read by its index".into(),
            Access::Sequential { why } => format!("read sequentially (the whole archive): {why}"),
        }
    }
}

/// What a listing found besides the entries.
#[derive(Debug)]
pub struct Listed {
    pub access: Access,
    /// The archive's metadata (read and checked by the grammar).
    pub metadata: Metadata,
}

/// Calls `visit` with every content entry of the archive (database dumps, volume and bind
/// entries; not `metadata.json`, the index or `SHA256SUMS`), in the archive's order, each with
/// its content digest (`at` is 0 in a sequential read). A sequential read verifies the whole
/// archive as it goes: `visit` sees each entry as it passes, and the listing holds only once
/// this returns `Ok` (an archive with any problem is an error naming every problem).
pub fn entries(
    src: &Source,
    rules: Rules,
    gate: &dyn Gate,
    visit: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<Listed> {
    let seek = match indexed(src, gate)? {
        Ok((s, approved)) => {
            let metadata = s.listing(approved, rules, &mut |e| visit(&e))?;
            return Ok(Listed { access: Access::Indexed, metadata });
        }
        Err(why) => why,
    };
    gate.whole(src)?;
    let mut each = |e: &Entry, _: Option<u64>| visit(e);
    let metadata = sequential(src, rules, &|_| false, None, &mut each)?;
    Ok(Listed { access: Access::Sequential { why: why_sequential(src, &metadata, seek) }, metadata })
}

/// Who vouches for an archive (the reading policy of `x-xtask.sign`/`encrypt`, which lives above
/// this layer): for a read by its index, the index's digest; for a whole read, the archive.
pub trait Gate {
    /// Whether a read by the index hashing to `index_sha256` is trusted; Ok(false): only a whole
    /// read can tell (a signature that names no index); Err: untrusted.
    fn indexed(&self, index_sha256: [u8; 32]) -> Result<bool>;
    /// Before a whole read (which checks the whole archive's digest where the policy asks).
    fn whole(&self, src: &Source) -> Result<()>;
}

/// No policy to apply (nothing set, or already applied when the archive was picked).
pub struct Open;

impl Gate for Open {
    fn indexed(&self, _: [u8; 32]) -> Result<bool> {
        Ok(true)
    }

    fn whole(&self, _: &Source) -> Result<()> {
        Ok(())
    }
}

type Indexed<'s> = super::seekable::Seekable<Box<dyn super::seekable::Ranges + 's>>;

/// `src` opened for a read by its index, with the index digest `gate` trusted (every later read
/// of the index must hash to it); else why not (None: it has no seek footer).
#[allow(clippy::type_complexity)]
fn indexed<'s>(
    src: &'s Source,
    gate: &dyn Gate,
) -> Result<std::result::Result<(Indexed<'s>, [u8; 32]), Option<String>>> {
    let Some(s) = super::seekable::open_source(src)? else { return Ok(Err(None)) };
    let digest = s.index_digest().with_context(|| format!("archive {}: read its index", src.path.display()))?;
    if !gate.indexed(digest)? {
        return Ok(Err(Some(
            "its signature names no index (signed before indexes were): read whole to check it".into(),
        )));
    }
    Ok(Ok((s, digest)))
}

/// What [`read_entries`] hands each wanted entry to: a regular file with a reader of its bytes.
pub type Handout<'a> = dyn FnMut(&Entry, Option<&mut dyn Read>) -> Result<()> + 'a;

/// Hands `out` every entry whose archive name `wanted` accepts, in the archive's order, once the
/// whole archive passed verification: a regular file with a reader of its bytes (which hashed
/// to the digest `SHA256SUMS` gives for it), any other entry without one. The wanted files are
/// held meanwhile in one private unnamed file on the filesystem of `near` (never in memory);
/// nothing is handed out of an archive with any problem.
pub fn read_entries(
    src: &Source,
    rules: Rules,
    gate: &dyn Gate,
    wanted: &dyn Fn(&[u8]) -> bool,
    near: &Path,
    out: &mut Handout,
) -> Result<Listed> {
    let spool = crate::files::Unnamed::create(near)?;
    let mut kept: Vec<(Entry, Option<u64>)> = Vec::new();
    let (metadata, access) = match indexed(src, gate)? {
        Ok((s, approved)) => {
            let metadata = s.listing(approved, rules, &mut |e| {
                if wanted(&e.name) {
                    kept.push((e, None));
                }
                Ok(())
            })?;
            if kept.iter().any(|(e, _)| is_dump(&e.name)) {
                // A dump is judged by verify's dump checks (what its client would run), which
                // need the whole archive (row counts, trailer): read it all, as verify does.
                kept.clear();
                let why = "a database dump is checked with the whole archive, as verify does".to_string();
                return read_whole(src, rules, gate, wanted, &spool, Some(why), out);
            }
            spool_indexed(&s, &mut kept, &spool)?;
            (metadata, Access::Indexed)
        }
        Err(seek) => return read_whole(src, rules, gate, wanted, &spool, seek, out),
    };
    hand_out(&kept, &spool, out)?;
    Ok(Listed { access, metadata })
}

/// Whether `name` is a database dump's entry (`databases/…`, version 1's `postgres/…`).
fn is_dump(name: &[u8]) -> bool {
    name.starts_with(b"databases/") || name.starts_with(b"postgres/")
}

/// [`read_entries`] by the sequential pass (the whole archive verified), `seek` saying why.
fn read_whole(
    src: &Source,
    rules: Rules,
    gate: &dyn Gate,
    wanted: &dyn Fn(&[u8]) -> bool,
    spool: &crate::files::Unnamed,
    seek: Option<String>,
    out: &mut Handout,
) -> Result<Listed> {
    let mut kept: Vec<(Entry, Option<u64>)> = Vec::new();
    gate.whole(src)?;
    let metadata = sequential(src, rules, wanted, Some(spool), &mut |e, at| {
        if wanted(&e.name) {
            kept.push((e.clone(), at));
        }
        Ok(())
    })?;
    let why = why_sequential(src, &metadata, seek);
    hand_out(&kept, spool, out)?;
    Ok(Listed { access: Access::Sequential { why }, metadata })
}

/// Hands each kept entry to `out`: a file with a reader of its bytes in `spool`.
fn hand_out(kept: &[(Entry, Option<u64>)], spool: &crate::files::Unnamed, out: &mut Handout) -> Result<()> {
    for (entry, at) in kept {
        match at {
            Some(at) => {
                let mut data = SpoolSlice { file: spool.writer(), at: *at, left: entry.size };
                out(entry, Some(&mut data))?
            }
            None => out(entry, None)?,
        }
    }
    Ok(())
}

/// Reads every kept entry of an indexed archive from its own frames (each checked against its
/// index line, a file's bytes against its digest, by `read_entry`): a file into `spool`, noting
/// where it starts there; a directory, link or node only its header, so that nothing is handed
/// out that the tar stream does not hold where its line says (an index line alone is not an
/// entry). Nothing is handed out before all of them are read.
fn spool_indexed(s: &Indexed<'_>, kept: &mut [(Entry, Option<u64>)], spool: &crate::files::Unnamed) -> Result<()> {
    let mut at = 0u64;
    let mut reader = s.entries();
    for (entry, place) in kept.iter_mut() {
        if entry.kind != Kind::File {
            reader.read(entry, &mut io::sink())?;
            continue;
        }
        let mut writer = io::BufWriter::with_capacity(1 << 20, spool.writer());
        reader.read(entry, &mut writer)?;
        writer.flush().context("write a private file")?;
        *place = Some(at);
        at += entry.size;
    }
    Ok(())
}

/// Why `src` is read sequentially.
fn why_sequential(src: &Source, meta: &Metadata, seek: Option<String>) -> String {
    if let Some(why) = seek {
        return why;
    }
    if src.encrypted() {
        return "encrypted (age): decrypted from its start".into();
    }
    if src.is_pinned() {
        return "its whole digest was checked (signature or encryption policy): read whole, as checked".into();
    }
    match Codec::of_name(&src.path.display().to_string()) {
        None => "a stream without a seekable index (restic snapshot)".into(),
        Some(Codec::Gzip) => "gzip archive (one stream, no index)".into(),
        Some(Codec::Zstd) if meta.format_version < 4 => format!("format version {}, no index", meta.format_version),
        Some(Codec::Zstd) => "no seek footer (written as one stream: pulled from a restic repository)".into(),
    }
}

/// The sequential pass: every entry by the grammar and the checksums (`verify_source_with`);
/// each content entry's data hashed here (a dump's also read by its checker) and copied into
/// `spool` when `keep` accepts its name, then `visit`ed with its offset in the spool.
fn sequential(
    src: &Source,
    rules: Rules,
    keep: &dyn Fn(&[u8]) -> bool,
    spool: Option<&crate::files::Unnamed>,
    visit: &mut dyn FnMut(&Entry, Option<u64>) -> Result<()>,
) -> Result<Metadata> {
    let mut failure: Option<anyhow::Error> = None;
    let mut spooled = 0u64;
    let report = super::verify_source_with(src, rules, &mut |entry, c| {
        let res = take(entry, c, keep, spool, &mut spooled, visit);
        if let Err(e) = &res {
            failure.get_or_insert(anyhow!("{e:#}"));
        }
        res
    });
    if let Some(e) = failure {
        return Err(e.context(format!("read {}", src.path.display())));
    }
    if !report.ok() {
        let problems: Vec<String> = report.problems.iter().map(|p| format!("\n    problem: {p}")).collect();
        bail!("{} failed verification: nothing of it is used{}", src.path.display(), problems.concat());
    }
    report.metadata.context("the archive has no metadata")
}

/// One entry of the pass: a content entry's data hashed (and spooled), then visited.
fn take(
    entry: &mut tar::Entry<'_, Inflated>,
    c: &Checked,
    keep: &dyn Fn(&[u8]) -> bool,
    spool: Option<&crate::files::Unnamed>,
    spooled: &mut u64,
    visit: &mut dyn FnMut(&Entry, Option<u64>) -> Result<()>,
) -> Result<Option<Taken>> {
    let dump = match &c.place {
        Place::Dump { engine } => Some(super::dumpstats::new(*engine)),
        Place::Volume { .. } => None,
        // metadata.json, SHA256SUMS (and the index): verify reads them itself.
        _ => return Ok(None),
    };
    if c.kind != Kind::File {
        visit(&Entry::of_checked(c, None, 0), None)?;
        return Ok(None);
    }
    let into = spool.filter(|_| keep(&c.name)).map(|s| s.writer());
    let (taken, at) = hash_entry(entry, c, dump, into, spooled)?;
    visit(&Entry::of_checked(c, Some(taken.digest), 0), at)?;
    Ok(Some(taken))
}

/// Reads a file entry's data: its digest, its size, a dump's statistics; copied to the end of
/// `into` when given (returns where it starts there).
fn hash_entry(
    entry: &mut impl Read,
    c: &Checked,
    mut dump: Option<super::dumpstats::DumpStats>,
    mut into: Option<&std::fs::File>,
    spooled: &mut u64,
) -> Result<(Taken, Option<u64>)> {
    let shown = grammar::shown(&c.name);
    let start = *spooled;
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = entry.read(&mut buf).with_context(|| format!("entry {shown}: the archive is truncated or corrupt"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(stats) = dump.as_mut() {
            stats.feed(&buf[..n]);
        }
        if let Some(file) = into.as_mut() {
            file.write_all(&buf[..n]).context("write a private file")?;
            *spooled += n as u64;
        }
        bytes += n as u64;
    }
    let at = into.map(|_| start);
    Ok((Taken { digest: hasher.finalize().into(), bytes, dump }, at))
}

/// `left` bytes of the spool from `at` (a positioned read: readers never disturb the writer).
struct SpoolSlice<'a> {
    file: &'a std::fs::File,
    at: u64,
    left: u64,
}

impl Read for SpoolSlice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::Error::other("a private file ended early"));
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The top-level words of archive names: a path that starts with one names archive entries as
/// they are; any other path starts with a volume's name (`volumes/` left out).
const TOP: [&str; 4] = ["volumes", "binds", "databases", "postgres"];

/// The name of an archive entry as the user sees and types it: `VOLUME/PATH` for a volume's
/// entries (`volumes/` left out, unless the volume is named like a top-level word), binds and
/// dumps as they are (`binds/ID/PATH`, `databases/SERVICE/FILE`); escaped for a terminal.
pub fn shown(name: &[u8]) -> String {
    escaped(user_name(name))
}

/// [`shown`] before escaping.
pub fn user_name(name: &[u8]) -> &[u8] {
    match name.strip_prefix(b"volumes/") {
        Some(rest) => {
            let volume = rest.split(|&b| b == b'/').next().unwrap_or_default();
            if TOP.iter().any(|t| t.as_bytes() == volume) {
                name
            } else {
                rest
            }
        }
        None => name,
    }
}

/// Bytes as text safe on a terminal and in one line: printable UTF-8 as it is, `\` doubled,
/// control characters (newline, escape…) and bytes that are not UTF-8 as escapes (`\n`, `\x1b`,
/// `\xff`, `\u{202e}` for the bidirectional controls).
pub fn escaped(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if is_invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Characters that reorder or hide what a terminal shows (bidirectional controls, zero-width).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Which archive entries a user's `VOLUME[/PATH]` arguments name: each the entry with that name
/// and everything below it; none given: every content entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Archive names (canonical, no trailing `/`).
    roots: Vec<Vec<u8>>,
}

impl Selector {
    /// From the user's paths (`app-media/a/b.txt`, `binds/ID/x`, `databases/db/app.sql`, or an
    /// archive name `volumes/app-media/a`); a trailing `/` is allowed. Refuses a path that is not
    /// canonical (`..`, `.`, `//`, absolute).
    pub fn parse(paths: &[String]) -> Result<Selector> {
        let mut roots = Vec::new();
        for p in paths {
            let trimmed = p.trim_end_matches('/');
            let canonical = grammar::canonical(trimmed.as_bytes(), false)
                .with_context(|| format!("path {p:?}: give VOLUME/PATH as `ls` shows it"))?;
            let first = trimmed.split('/').next().unwrap_or_default();
            let name = if TOP.contains(&first) { canonical.to_vec() } else { [b"volumes/", canonical].concat() };
            roots.push(name);
        }
        Ok(Selector { roots })
    }

    /// Whether the archive name `name` is selected.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.roots.is_empty() || self.roots.iter().any(|r| is_at_or_below(name, r))
    }

    /// The roots asked for (archive names).
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }
}

/// Whether `name` is `root` or below it.
pub fn is_at_or_below(name: &[u8], root: &[u8]) -> bool {
    name.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_safely_and_without_volumes() {
        assert_eq!(shown(b"volumes/app-media/a b/c.txt"), "app-media/a b/c.txt");
        assert_eq!(shown(b"binds/srv-x/conf"), "binds/srv-x/conf");
        assert_eq!(shown(b"databases/db/app.sql"), "databases/db/app.sql");
        assert_eq!(shown(b"volumes/binds/x"), "volumes/binds/x", "a volume named like a top-level word keeps it");
        assert_eq!(
            shown(b"volumes/v/evil\x1b[2J\nname\xff\\\xe2\x80\xaet"),
            "v/evil\\x1b[2J\\nname\\xff\\\\\\u{202e}t"
        );
        assert_eq!(escaped("été".as_bytes()), "été");
    }

    #[test]
    fn selectors_name_an_entry_and_what_is_below_it() {
        let s = Selector::parse(&["app-media/a".into(), "binds/srv-x/".into()]).unwrap();
        assert!(s.matches(b"volumes/app-media/a") && s.matches(b"volumes/app-media/a/b.txt"));
        assert!(!s.matches(b"volumes/app-media/ab") && !s.matches(b"volumes/app-media"));
        assert!(s.matches(b"binds/srv-x/conf") && !s.matches(b"binds/srv-xy"));
        let literal = Selector::parse(&["volumes/app-media".into(), "databases/db/app.sql".into()]).unwrap();
        assert!(literal.matches(b"volumes/app-media/x") && literal.matches(b"databases/db/app.sql"));
        assert!(!literal.matches(b"databases/db/other.sql"));
        assert!(Selector::parse(&[]).unwrap().matches(b"anything"));
        for bad in ["app-media/../x", "/etc", "a//b", "./a", ""] {
            assert!(Selector::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_volume_shown_name_parses_back_to_its_archive_name() {
        for name in [&b"volumes/app-media/a/b"[..], b"volumes/binds/x", b"binds/id/y", b"databases/db/app.sql"] {
            let typed = String::from_utf8(user_name(name).to_vec()).unwrap();
            assert_eq!(Selector::parse(&[typed]).unwrap().roots(), [name.to_vec()]);
        }
    }
}

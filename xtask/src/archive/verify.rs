//! Verification in one pass: every entry by the grammar, checksums against `SHA256SUMS`, dumps
//! complete with their row counts, into a [`Report`]; a hook lets restore take entries (stage
//! volumes, spool dumps) during the same pass.

use super::*;
use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;

/// What a consumer of an entry's data took instead of the verification reading it: the content
/// digest, the bytes, and for a dump its statistics.
pub struct Taken {
    pub digest: [u8; 32],
    pub bytes: u64,
    pub dump: Option<dumpstats::DumpStats>,
}

/// Called for every entry that passed the grammar; `Some` when it consumed the entry's data.
pub type Hook<'h> = dyn FnMut(&mut tar::Entry<'_, Inflated>, &grammar::Checked) -> Result<Option<Taken>> + 'h;

/// What `verify` found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub metadata: Option<Metadata>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Bytes of file data per volume (what a restore writes into it).
    pub volume_bytes: BTreeMap<String, u64>,
    pub problems: Vec<String>,
    /// Items a restore into this stack would refuse (a bind it does not declare…), each with
    /// why: not problems of the archive, whose other items are judged on their own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Every entry's fingerprint: what an extraction from the same descriptor must find again.
    #[serde(skip)]
    pub manifest: grammar::Manifest,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Options of a verification.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    /// Accept device nodes and FIFOs in volumes (`--allow-special-files`).
    pub allow_special: bool,
}

/// Opens and reads the whole archive by the strict grammar (archive/grammar.rs): zstd/gzip and tar
/// integrity, metadata first and within its character sets, every entry canonical, in its
/// place, of an allowed type and unique, every file's SHA-256 equal to `SHA256SUMS` (the
/// last entry), and the database dumps complete, plain SQL, with the recorded row counts.
#[cfg(test)]
pub fn verify(path: &std::path::Path, rules: Rules) -> Report {
    match Source::open(path) {
        Ok(src) => verify_source(&src, rules),
        Err(e) => Report { path: path.to_path_buf(), problems: vec![format!("{e:#}")], ..Report::default() },
    }
}

/// [`verify`] of an archive already open. Keeps no per-entry record: memory stays small
/// whatever the entry count (see [`verify_source_for_reading`] for the one that does).
pub fn verify_source(src: &Source, rules: Rules) -> Report {
    verify_source_with(src, rules, &mut |_, _| Ok(None))
}

/// [`verify_source`], keeping each entry's fingerprint (`Report::manifest`) for a later pass
/// that must read exactly what was verified (`--in-place`, the way back, `verify --deep`).
pub fn verify_source_for_reading(src: &Source, rules: Rules) -> Report {
    verify_with(src, rules, &mut |_, _| Ok(None), true)
}

/// [`verify_source`] in which `hook` may consume entries' data as they pass (restore stages
/// volumes and spools dumps this way, in the one pass that verifies them).
pub fn verify_source_with(src: &Source, rules: Rules, hook: &mut Hook) -> Report {
    verify_with(src, rules, hook, false)
}

fn verify_with(src: &Source, rules: Rules, hook: &mut Hook, keep_manifest: bool) -> Report {
    let mut report = Report { path: src.path.clone(), ..Report::default() };
    if let Err(e) = verify_into(src, rules, &mut report, hook, keep_manifest) {
        report.problems.push(format!("{e:#}"));
    }
    report
}

/// What one pass over the entries collected.
#[derive(Default)]
struct Seen {
    digests: BTreeMap<Vec<u8>, [u8; 32]>,
    recorded: Option<BTreeMap<Vec<u8>, String>>,
    dumps: BTreeMap<String, dumpstats::DumpStats>,
}

fn verify_into(src: &Source, rules: Rules, report: &mut Report, hook: &mut Hook, keep_manifest: bool) -> Result<()> {
    let mut archive = src.tar();
    let mut grammar = grammar::Grammar::new(rules.allow_special);
    let mut seen = Seen::default();
    let mut lines = IndexLines::default();
    let entries = archive.entries().context("the archive is not a zstd- or gzip-compressed tar")?;
    for entry in entries {
        let mut entry = entry.context("the archive is truncated or corrupt (compressed or tar stream broken)")?;
        report.entries += 1;
        let checked = grammar.check(&mut entry)?;
        let content = match hook(&mut entry, &checked)? {
            Some(taken) => Some(record_taken(&checked, taken, report, &mut seen)),
            None => read_entry(&mut entry, &checked, report, &mut seen)?,
        };
        lines.follow(&entry, &checked, content.as_ref(), report);
        if checked.place == grammar::Place::Metadata {
            grammar.expect(report.metadata.as_ref().context("metadata missing")?);
        }
        if keep_manifest {
            report.manifest.insert(checked.name.clone(), checked.fingerprint(content.as_ref()));
        }
    }
    // Reading the tar's end does not reach the stream's end: read on, so that its checksum is checked
    // and the bytes are read to their very end (see `inflate`).
    io::copy(&mut archive.into_inner(), &mut io::sink()).context("the end of the archive")?;
    grammar.finish()?;
    compare_sums(&seen, report);
    check_dumps(&seen, report);
    Ok(())
}

/// The index as the stream says it must be: the SHA-256 of every line an entry before the index
/// makes, and where the next entry starts. The index entry must hash to exactly that: every
/// entry it names is in the stream at the offset it gives, with its facts and digest, in order,
/// and nothing else.
#[derive(Default)]
struct IndexLines {
    hasher: Sha256,
    next_at: u64,
}

impl IndexLines {
    fn follow<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        c: &grammar::Checked,
        content: Option<&[u8; 32]>,
        report: &mut Report,
    ) {
        match c.place {
            grammar::Place::Checksums => {}
            grammar::Place::Index => {
                let expected: [u8; 32] = self.hasher.clone().finalize().into();
                if content != Some(&expected) {
                    report.problems.push(format!(
                        "entry {}: the index does not list the archive's entries as they are (altered or forged); \
                         ls, cat, diff and single-path restores would read it",
                        super::index::INDEX
                    ));
                }
            }
            _ => {
                let line = super::index::to_line(&super::index::Entry::of_checked(c, content.copied(), self.next_at));
                self.hasher.update(line);
            }
        }
        self.next_at = entry.raw_file_position() + c.size.div_ceil(512) * 512;
    }
}

/// Reads one entry's data (files only): hashes it, and parses what must be parsed.
fn read_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    c: &grammar::Checked,
    report: &mut Report,
    seen: &mut Seen,
) -> Result<Option<[u8; 32]>> {
    if c.kind != grammar::Kind::File {
        return Ok(None);
    }
    let shown = grammar::shown(&c.name);
    let mut text = Vec::new();
    let mut hasher = Sha256::new();
    let mut stats = match c.place {
        grammar::Place::Dump { engine } => dumpstats::new(engine),
        _ => dumpstats::DumpStats::default(),
    };
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = entry.read(&mut buf).with_context(|| format!("entry {shown}: the archive is truncated or corrupt"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        match &c.place {
            grammar::Place::Metadata | grammar::Place::Checksums => text.extend_from_slice(&buf[..n]),
            grammar::Place::Dump { .. } => stats.feed(&buf[..n]),
            grammar::Place::Index => {}
            grammar::Place::Volume { volume, .. } => {
                *report.volume_bytes.entry(volume.clone()).or_default() += n as u64
            }
        }
        report.bytes += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    report.files += u64::from(!matches!(c.place, grammar::Place::Checksums | grammar::Place::Index));
    match &c.place {
        grammar::Place::Metadata => {
            let meta = parse_metadata(&text)?;
            grammar::check_metadata(&meta)?;
            report.metadata = Some(meta);
        }
        grammar::Place::Checksums => {
            seen.recorded = Some(parse_sums(&text)?);
            return Ok(Some(digest));
        }
        grammar::Place::Dump { .. } => {
            seen.dumps.insert(String::from_utf8_lossy(&c.name).into_owned(), stats);
        }
        grammar::Place::Volume { .. } | grammar::Place::Index => {}
    }
    seen.digests.insert(c.name.clone(), digest);
    Ok(Some(digest))
}

/// Records what a hook consumed as [`read_entry`] would have.
fn record_taken(c: &grammar::Checked, taken: Taken, report: &mut Report, seen: &mut Seen) -> [u8; 32] {
    report.files += 1;
    report.bytes += taken.bytes;
    if let grammar::Place::Volume { volume, .. } = &c.place {
        *report.volume_bytes.entry(volume.clone()).or_default() += taken.bytes;
    }
    if let Some(stats) = taken.dump {
        seen.dumps.insert(String::from_utf8_lossy(&c.name).into_owned(), stats);
    }
    seen.digests.insert(c.name.clone(), taken.digest);
    taken.digest
}

fn compare_sums(seen: &Seen, report: &mut Report) {
    let Some(recorded) = &seen.recorded else { return };
    for (name, digest) in &seen.digests {
        let shown = grammar::shown(name);
        match recorded.get(name) {
            None => report.problems.push(format!("entry {shown} has no checksum in {CHECKSUMS}")),
            Some(d) if *d != hex(digest) => {
                report.problems.push(format!("entry {shown}: checksum mismatch (content altered)"))
            }
            Some(_) => {}
        }
    }
    for name in recorded.keys().filter(|n| !seen.digests.contains_key(*n)) {
        report.problems.push(format!("{CHECKSUMS} lists {}, which is not in the archive", grammar::shown(name)));
    }
}

fn check_dumps(seen: &Seen, report: &mut Report) {
    let Some(meta) = report.metadata.clone() else { return };
    for db in &meta.databases {
        check_service_dumps(db, seen, report);
    }
}

/// One service's dumps: there, plain SQL its client runs as SQL only, complete, and holding
/// the rows the metadata records.
fn check_service_dumps(db: &DbInfo, seen: &Seen, report: &mut Report) {
    for entry in db.globals_entry.iter().chain(db.databases.iter().map(|d| &d.entry)) {
        match seen.dumps.get(entry) {
            None => report.problems.push(format!("entry {entry:?} named by the metadata is missing")),
            Some(stats) => {
                if let Some(v) = stats.violation() {
                    report.problems.push(format!("entry {entry:?}: {v}; refused, nothing of it is loaded"));
                }
                if let Some(why) = stats.out_of_bounds(Some(entry) == db.globals_entry.as_ref()) {
                    report.problems.push(format!("entry {entry:?}: {why}; refused, nothing of it is loaded"));
                }
                // The roles are loaded without ON_ERROR_STOP (existing roles fail harmlessly): a
                // COPY there could turn its data lines into commands, so none may stand in it.
                if Some(entry) == db.globals_entry.as_ref() && !stats.tables().is_empty() {
                    report.problems.push(format!("entry {entry:?}: the roles or users dump holds table data; refused"));
                }
            }
        }
    }
    for d in &db.databases {
        let Some(stats) = seen.dumps.get(&d.entry) else { continue };
        if !stats.complete() {
            report.problems.push(format!(
                "entry {:?}: the dump lacks {}'s completion trailer",
                d.entry,
                db.engine.record().dump_tool
            ));
        }
        if *stats.tables() != d.tables {
            report.problems.push(format!("entry {:?}: row counts differ from the metadata's", d.entry));
        }
    }
}

//! The backup directory: what an archive of ours is called (`{full,db}_backup_<stamp>.tar.zst`,
//! or `.tar.gz` for gzip; `.age` added when encrypted), the listing of a project's archives with their problems, the cached
//! result of the last `verify` beside each one, and the newest archive the policy trusts. Only
//! files this tool wrote are considered: named so, and starting with an xtask `metadata.json`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::OffsetDateTime;

use crate::archive::{self, HashingReader, Metadata};
use crate::context::Ctx;

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub file: String,
    pub kind: String,
    /// UTC, RFC 3339, from the archive's metadata.
    pub created_at: String,
    /// When this tool wrote it: the stamp in its file name (checked against the metadata and
    /// the file's mtime); what "latest" and retention order by.
    #[serde(skip)]
    pub created: OffsetDateTime,
    pub size_bytes: u64,
    pub tag: Option<String>,
    pub volumes: Vec<String>,
    pub databases: Vec<String>,
    /// "ok", "failed" or "unverified" (as of the last `verify` of this exact file).
    pub checksums: String,
    /// Encrypted with age (`….tar.zst.age`, `….tar.gz.age`).
    pub encrypted: bool,
    /// Why the file is damaged or its date is in doubt: it is then never "latest", never
    /// counted or deleted by prune.
    pub problem: Option<String>,
}

/// Where archives live: `--output-dir`, else `$XTASK_BACKUP_DIR`, else `backups/` in the workspace.
pub fn default_dir() -> PathBuf {
    crate::environment::var("XTASK_BACKUP_DIR")
        .map(|d| crate::environment::cwd().join(d))
        .unwrap_or_else(|| crate::model::compose::workspace_root().join("backups"))
}

/// The result of the last `verify`, kept beside the archive as `.<file>.verified`: only a cache
/// (anyone who can write the directory can write one). It counts while the archive's size and
/// mtime match; where it decides something (prune's newest verified archive) its SHA-256 is
/// checked against the archive's bytes, and a marker that does not match is ignored.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    size: u64,
    modified: u64,
    ok: bool,
    #[serde(default)]
    sha256: Option<String>,
}

pub fn marker_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.verified"))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::symlink_metadata(path).ok().filter(|m| m.file_type().is_file())?;
    let modified = m.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some((m.len(), modified))
}

/// Writes the marker atomically (a new private file renamed over it): never through a symlink.
pub fn record_verification(path: &Path, ok: bool) {
    let Some((size, modified)) = identity(path) else { return };
    let sha256 = file_digest(path);
    let Ok(json) = serde_json::to_vec(&Marker { size, modified, ok, sha256 }) else { return };
    let marker = marker_path(path);
    let temp = marker.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(&json));
    if written.is_err() || std::fs::rename(&temp, &marker).is_err() {
        let _ = std::fs::remove_file(&temp);
    }
}

fn read_marker(path: &Path) -> Option<Marker> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(marker_path(path)).ok()?;
    let mut text = Vec::new();
    f.take(4096).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Whether the archive's bytes still hash to what its `ok` marker recorded (read in full).
pub fn marker_confirmed(path: &Path) -> bool {
    let Some(Marker { ok: true, sha256: Some(recorded), .. }) = read_marker(path) else { return false };
    file_digest(path).is_some_and(|d| d == recorded)
}

/// The SHA-256 of a file's bytes as stored (an encrypted archive is not decrypted), in hex.
fn file_digest(path: &Path) -> Option<String> {
    sha256_of(path).ok().map(|d| archive::hex(&d))
}

pub fn verification(path: &Path) -> &'static str {
    match (read_marker(path), identity(path)) {
        (Some(m), Some((size, modified))) if m.size == size && m.modified == modified => {
            if m.ok {
                "ok"
            } else {
                "failed"
            }
        }
        _ => "unverified",
    }
}

/// The newest successful `verify --deep` or `drill` of a project (local or remote), and the
/// last drill whatever its outcome, kept in the backup directory as
/// `.xtask-deep-verify-<project>.json` for `check`. Only a record for monitoring (whoever can
/// write the directory can write it); nothing is decided from it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DeepRecord {
    /// When the newest deep verify or drill succeeded: UTC, RFC 3339 (empty: none yet).
    #[serde(default)]
    pub at: String,
    /// The archive it read (a path, or `REMOTE:NAME`).
    #[serde(default)]
    pub archive: String,
    /// The last drill, successful or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillRecord>,
}

/// One restore drill's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    /// When it ended: UTC, RFC 3339.
    pub at: String,
    pub archive: String,
    pub ok: bool,
    /// The time to recover: from the start of the restore until every service was healthy
    /// (None: it never got there).
    pub seconds: Option<f64>,
    /// Why it failed (None: it succeeded).
    pub reason: Option<String>,
}

impl DeepRecord {
    /// The last drill when it failed and no success came after it: (archive, why).
    pub fn failed_drill(&self) -> Option<(String, String)> {
        let d = self.drill.as_ref().filter(|d| !d.ok)?;
        let parse = |t: &str| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        let newer = match (parse(&d.at), parse(&self.at)) {
            (Some(drill), Some(success)) => drill > success,
            _ => true,
        };
        newer.then(|| (d.archive.clone(), d.reason.clone().unwrap_or_default()))
    }
}

fn deep_record_path(dir: &Path, project: &str) -> PathBuf {
    dir.join(format!(".xtask-deep-verify-{project}.json"))
}

/// UTC now in RFC 3339.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Records a successful deep verify of `archive` now (atomically; the last drill kept); a
/// failure to write is only warned about: the verify itself succeeded.
pub fn record_deep(dir: &Path, project: &str, archive: &str) {
    let mut record = read_deep(dir, project).unwrap_or_default();
    (record.at, record.archive) = (now_rfc3339(), archive.to_string());
    if let Err(e) = write_deep(dir, project, &record) {
        eprintln!("warning: the deep verify succeeded but was not recorded for `check`: {e:#}");
    }
}

/// Records a drill's outcome (atomically): always as the last drill, and as the newest success
/// when it succeeded.
pub fn record_drill(dir: &Path, project: &str, drill: DrillRecord) -> Result<()> {
    let mut record = read_deep(dir, project).unwrap_or_default();
    if drill.ok {
        (record.at, record.archive) = (drill.at.clone(), drill.archive.clone());
    }
    record.drill = Some(drill);
    write_deep(dir, project, &record)
}

fn write_deep(dir: &Path, project: &str, record: &DeepRecord) -> Result<()> {
    let json = serde_json::to_vec(record)?;
    crate::files::write_atomic(&deep_record_path(dir, project), &json, 0o600)
}

/// The record of `project` as it is (None: none, or one that is not ours).
pub fn read_deep(dir: &Path, project: &str) -> Option<DeepRecord> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(deep_record_path(dir, project)).ok()?;
    let mut text = Vec::new();
    f.take(16384).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// When the newest successful deep verify or drill of `project` ran and what it read (None:
/// none recorded, or a record that is not ours).
pub fn last_deep(dir: &Path, project: &str) -> Option<(OffsetDateTime, DeepRecord)> {
    let record = read_deep(dir, project)?;
    let at = OffsetDateTime::parse(&record.at, &time::format_description::well_known::Rfc3339).ok()?;
    Some((at, record))
}

/// Reads only the first entry, `metadata.json`, by the archive grammar (bounded, checked).
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    archive::read_metadata_from(&archive::Source::open(path)?)
}

/// Whether `name` is one this tool gives its archives: `{full,db}_backup_…` ending in
/// `.tar.zst` or `.tar.gz`, with or without `.age`, in a plain character set.
pub fn is_our_name(name: &str) -> bool {
    (name.starts_with("full_backup_") || name.starts_with("db_backup_"))
        && archive::Codec::of_name(name).is_some()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `full` or `db`, from an archive's file name.
pub fn name_kind(name: &str) -> &'static str {
    if name.starts_with("db_backup_") {
        "db"
    } else {
        "full"
    }
}

/// The time in a file name `{full,db}_backup_YYYYMMDD_HHMMSS…`.
pub fn name_stamp(file: &str) -> Option<OffsetDateTime> {
    let rest = file.strip_prefix("full_backup_").or_else(|| file.strip_prefix("db_backup_"))?;
    let digits = |r: std::ops::Range<usize>| rest.get(r)?.parse::<u32>().ok();
    if rest.as_bytes().get(8) != Some(&b'_') {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(digits(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(digits(0..4)? as i32, month, digits(6..8)? as u8).ok()?;
    let t = date.with_hms(digits(9..11)? as u8, digits(11..13)? as u8, digits(13..15)? as u8).ok()?;
    Some(t.assume_utc())
}

/// For an archive shown as `shown` (a path, `REMOTE:NAME` or `REMOTE:SNAPSHOT:NAME`) whose
/// metadata says `created_at`: why its name does not fit that date (an archive copied under
/// another, newer name), None when it fits or the name carries no date.
pub fn name_disagrees(shown: &str, created_at: &str) -> Option<String> {
    let file = shown.rsplit(['/', ':']).next().unwrap_or(shown);
    let stamp = name_stamp(file)?;
    let declared = OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339).ok()?;
    ((declared - stamp).whole_seconds().abs() > SLACK_SECONDS).then(|| {
        format!("its metadata says it was made {created_at}, its name says {stamp}: an archive under another name")
    })
}

/// How far the name's stamp, the metadata's date and the file's mtime may disagree.
const SLACK_SECONDS: i64 = 300;

/// Whether the dates of a file can be trusted for ordering: its name's stamp, its metadata's
/// `created_at` and its mtime agree, and none lies in the future.
pub fn date_doubt(
    stamp: OffsetDateTime,
    created_at: &str,
    mtime: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<String> {
    let Ok(declared) = OffsetDateTime::parse(created_at, &time::format_description::well_known::Rfc3339) else {
        return Some(format!("its metadata's created_at {created_at:?} is not RFC 3339"));
    };
    if (declared - stamp).whole_seconds().abs() > SLACK_SECONDS {
        return Some(format!("its metadata says {created_at}, its file name says {stamp}"));
    }
    if (stamp - now).whole_seconds() > SLACK_SECONDS {
        return Some(format!("it is dated {stamp}, in the future"));
    }
    if (stamp - mtime).whole_seconds() > SLACK_SECONDS || (mtime - now).whole_seconds() > SLACK_SECONDS {
        return Some(format!("its file was last written {mtime}, which does not fit its date {stamp}"));
    }
    None
}

/// The newest archive of this project in `dir` that `wanted` accepts and the reading policy
/// trusts (`x-xtask.sign` / `encrypt`, archive by archive through its open descriptor), opened;
/// each one passed over is named with why.
pub fn latest_trusted(ctx: &Ctx, dir: &Path, wanted: impl Fn(&ArchiveFile) -> bool) -> Result<archive::Source> {
    let project = ctx.stack.name.as_str();
    let policy = crate::store::trust::Policy::of(ctx)?;
    for a in scan(dir, project)?.into_iter().filter(|a| a.problem.is_none() && wanted(a)) {
        let src = archive::Source::open(&a.path)?;
        match policy.check_local(&src) {
            Ok(()) => return Ok(src),
            Err(e) => eprintln!("skip {e:#}"),
        }
    }
    bail!("no trusted archive of project {project} in {}; make one with `cargo xtask backup`", dir.display())
}

/// Every archive of `project` in `dir`, newest first. Files that are not ours by name are
/// ignored; ours that cannot be read are listed with their problem (and a warning), never abort.
pub fn scan(dir: &Path, project: &str) -> Result<Vec<ArchiveFile>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("read {}", dir.display())),
    };
    let now = OffsetDateTime::now_utc();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if is_our_name(&file) {
            if let Some(a) = describe(&e.path(), file, project, now) {
                out.push(a);
            }
        }
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.file.cmp(&a.file)));
    Ok(out)
}

/// One file of the backup directory: None when it belongs to another project.
pub fn describe(path: &Path, file: String, project: &str, now: OffsetDateTime) -> Option<ArchiveFile> {
    let stat = std::fs::symlink_metadata(path).ok();
    let mtime = stat.as_ref().and_then(|m| m.modified().ok()).map(OffsetDateTime::from).unwrap_or(now);
    let stamp = name_stamp(&file);
    let mut a = ArchiveFile {
        path: path.to_path_buf(),
        created: stamp.unwrap_or(OffsetDateTime::UNIX_EPOCH),
        file,
        kind: "?".into(),
        created_at: String::new(),
        size_bytes: stat.as_ref().map(|m| m.len()).unwrap_or(0),
        tag: None,
        volumes: Vec::new(),
        databases: Vec::new(),
        checksums: verification(path).to_string(),
        encrypted: archive::is_sealed(path),
        problem: None,
    };
    if a.encrypted && crate::environment::var(crate::engine::crypt::IDENTITY_VAR).is_none() {
        // Listed by its name: its kind and date come from there, its contents stay unknown.
        a.kind = name_kind(&a.file).into();
        let created_at = stamp.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
        a.created_at = created_at.clone().unwrap_or_default();
        a.problem = match stamp {
            None => Some("its file name holds no valid date".into()),
            Some(t) => date_doubt(t, &a.created_at, mtime, now),
        };
        return Some(a);
    }
    let meta = match stat.filter(|m| m.file_type().is_file()) {
        None => Err(anyhow::anyhow!("not a regular file")),
        Some(_) => read_metadata(path),
    };
    let meta = match meta {
        Ok(m) if m.project != project => return None,
        Ok(m) => m,
        Err(e) => {
            eprintln!("warning: {}: damaged, skipped: {e:#}", path.display());
            a.problem = Some(format!("damaged: {e:#}"));
            return Some(a);
        }
    };
    a.problem = match stamp {
        None => Some("its file name holds no valid date".into()),
        Some(stamp) => date_doubt(stamp, &meta.created_at, mtime, now),
    }
    .map(|why| {
        eprintln!("warning: {}: date in doubt ({why}); never taken as latest nor pruned", path.display());
        format!("date in doubt: {why}")
    });
    a.kind = meta.kind.clone();
    a.created_at = meta.created_at.clone();
    a.tag = meta.tag.clone();
    a.volumes = meta.volumes.iter().map(|v| v.name.clone()).collect();
    a.databases = meta
        .databases
        .iter()
        .flat_map(|s| s.databases.iter().map(move |d| format!("{}/{}", s.service, d.name)))
        .collect();
    Some(a)
}

/// Which archives of the backup directory a command reads (`ARCHIVE | --latest | --all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    One(PathBuf),
    /// The newest sound archive of the project.
    Latest,
    /// Every sound archive of the project, newest first.
    All,
}

/// The archives `pick` names in `dir`, for `project`.
pub fn picked(dir: &Path, project: &str, pick: &Pick) -> Result<Vec<PathBuf>> {
    Ok(match pick {
        Pick::One(p) => vec![p.clone()],
        Pick::Latest => vec![latest(dir, project, |_| true)?],
        Pick::All => scan(dir, project)?.into_iter().filter(|a| a.problem.is_none()).map(|a| a.path).collect(),
    })
}

/// The newest sound archive of `project` that `wanted` accepts (never a damaged or doubtful one).
pub fn latest(dir: &Path, project: &str, wanted: impl Fn(&ArchiveFile) -> bool) -> Result<PathBuf> {
    scan(dir, project)?.into_iter().find(|a| a.problem.is_none() && wanted(a)).map(|a| a.path).with_context(|| {
        format!("no archive of project {project} in {}; make one with `cargo xtask backup`", dir.display())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Full,
    Db,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Db => "db",
        }
    }
}

/// Makes the backup directory and returns it. Directories this creates are private (0700); an
/// existing directory keeps the mode its owner gave it.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create the backup directory {}", dir.display()))?;
    }
    Ok(dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()))
}

/// The process that wrote a temporary file of ours, from its name: `.…tmp-PID`,
/// `.xtask-private-PID-N` (the short-lived directory of a private file), and from earlier
/// versions `.pgdump-PID-….sql`, `.restore-PID-….sql`.
pub fn temp_owner(name: &str) -> Option<u32> {
    let digits = |s: &str| s.split(|c: char| !c.is_ascii_digit()).next().and_then(|d| d.parse().ok());
    if let Some(rest) = name.strip_prefix(crate::files::UNNAMED_PREFIX) {
        return digits(rest);
    }
    if let Some(rest) =
        name.strip_prefix(".pgdump-").or_else(|| name.strip_prefix(crate::archive::extract::SPOOL_PREFIX))
    {
        let spooled = [".sql", ".sql.load", ".sql.handover"].iter().any(|s| name.ends_with(s));
        return spooled.then(|| digits(rest)).flatten();
    }
    let (_, pid) = name.rsplit_once(".tmp-")?;
    (name.starts_with('.') && name.contains("_backup_") && pid.chars().all(|c| c.is_ascii_digit()))
        .then(|| digits(pid))
        .flatten()
}

/// Partial archives and dumps left by a run that was killed: removed only when the process that
/// wrote them is gone (another project's backup may be writing into the same directory).
/// Verification markers (`.NAME.verified`) whose archive is gone go too.
pub fn remove_stale_temporaries(dir: &Path, ctx: &Ctx) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(archive) = orphan_marker(dir, &name) {
            if e.file_type().is_ok_and(|t| t.is_file()) && std::fs::remove_file(e.path()).is_ok() {
                ctx.ui.step(&format!("removed {name}, the verification marker of {archive}, which is gone"));
            }
            continue;
        }
        let Some(pid) = temp_owner(&name) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let removed = match e.file_type() {
            Ok(t) if t.is_file() => std::fs::remove_file(e.path()).is_ok(),
            Ok(t) if t.is_dir() && name.starts_with(crate::files::UNNAMED_PREFIX) => {
                std::fs::remove_dir_all(e.path()).is_ok()
            }
            _ => false,
        };
        if removed {
            ctx.ui.step(&format!("removed {name}, left by an interrupted run"));
        }
    }
}

/// For a verification marker whose archive no longer exists in `dir`: that archive's name.
fn orphan_marker(dir: &Path, name: &str) -> Option<String> {
    let archive = name.strip_prefix('.')?.strip_suffix(".verified")?;
    (!archive.is_empty() && std::fs::symlink_metadata(dir.join(archive)).is_err()).then(|| archive.to_string())
}

/// A new archive's name: its kind, the UTC time to the second and the tag (characters other
/// than `[A-Za-z0-9.-]` made `-`), and its codec's extension.
pub fn archive_name(kind: Kind, tag: Option<&str>, codec: archive::Codec) -> Result<String> {
    archive_name_at(kind, tag, time::OffsetDateTime::now_utc(), codec)
}

/// [`archive_name`] stamped with the time `t` (the backup's start, which its metadata's
/// `created_at` also says).
pub fn archive_name_at(
    kind: Kind,
    tag: Option<&str>,
    t: time::OffsetDateTime,
    codec: archive::Codec,
) -> Result<String> {
    let stamp = format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let tag = tag.map(|t| {
        let clean: String =
            t.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
        format!("_{clean}")
    });
    Ok(format!("{}_backup_{stamp}{}{}", kind.as_str(), tag.unwrap_or_default(), codec.extension()))
}

/// A local file opened for reading, its identity fixed (O_NOFOLLOW, a regular file).
pub fn open_local(path: &Path) -> Result<(File, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let m = f.metadata()?;
    if !m.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok((f, m.len()))
}

/// A local archive opened once (O_NOFOLLOW, a regular file) for a push: whether it is sealed,
/// its size, its digest and the bytes uploaded all come from this one descriptor, never from
/// its name again (which anyone who can write the backup directory could point elsewhere).
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    file: std::sync::Arc<File>,
    pub size: u64,
}

impl LocalFile {
    pub fn open(path: &Path) -> Result<LocalFile> {
        let (file, size) = open_local(path)?;
        Ok(LocalFile { path: path.to_path_buf(), file: std::sync::Arc::new(file), size })
    }

    /// Its bytes from the start (a positioned read of the descriptor, a position of its own).
    pub fn reader(&self) -> impl Read + Send {
        crate::files::AtReader::new(self.file.clone())
    }

    /// Whether its bytes start as an age file (an encrypted archive).
    pub fn sealed(&self) -> bool {
        let mut head = [0u8; 32];
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, &mut head, 0).unwrap_or(0);
        head[..n].starts_with(crate::engine::crypt::MAGIC)
    }

    /// The SHA-256 of its bytes as stored.
    pub fn sha256(&self) -> Result<[u8; 32]> {
        let mut reader = HashingReader::new(self.reader());
        std::io::copy(&mut reader, &mut std::io::sink()).with_context(|| format!("read {}", self.path.display()))?;
        Ok(reader.hasher.finalize().into())
    }

    /// A second descriptor of the same open file (for [`crate::archive::Source::of_file`]).
    pub fn descriptor(&self) -> Result<File> {
        self.file.try_clone().with_context(|| format!("duplicate the descriptor of {}", self.path.display()))
    }
}

/// The SHA-256 of a local file's bytes as stored (O_NOFOLLOW, a regular file; not decrypted).
pub fn sha256_of(path: &Path) -> Result<[u8; 32]> {
    let (f, _) = open_local(path)?;
    let mut reader = HashingReader::new(f);
    std::io::copy(&mut reader, &mut std::io::sink()).with_context(|| format!("read {}", path.display()))?;
    Ok(reader.hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_is_recorded_beside_the_newest_success_and_a_failure_never_replaces_it() {
        let dir = std::env::temp_dir().join(format!("xtask-drillrec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let drill = |at: &str, ok: bool| DrillRecord {
            at: at.into(),
            archive: format!("a-{at}"),
            ok,
            seconds: ok.then_some(12.5),
            reason: (!ok).then(|| "db did not come up".to_string()),
        };
        record_drill(&dir, "p", drill("2026-01-01T00:00:00Z", true)).unwrap();
        let (_, r) = last_deep(&dir, "p").unwrap();
        assert_eq!((r.archive.as_str(), r.failed_drill()), ("a-2026-01-01T00:00:00Z", None));
        record_drill(&dir, "p", drill("2026-01-02T00:00:00Z", false)).unwrap();
        let (_, r) = last_deep(&dir, "p").unwrap();
        assert_eq!(r.at, "2026-01-01T00:00:00Z", "the newest success stays");
        assert_eq!(r.failed_drill(), Some(("a-2026-01-02T00:00:00Z".into(), "db did not come up".into())));
        record_deep(&dir, "p", "verified");
        let r = read_deep(&dir, "p").unwrap();
        assert_eq!((r.archive.as_str(), r.failed_drill()), ("verified", None), "a later success outdates the failure");
        assert!(r.drill.is_some(), "the last drill is kept by verify --deep");
        let old: DeepRecord = serde_json::from_str(r#"{"at":"2026-01-01T00:00:00Z","archive":"x"}"#).unwrap();
        assert_eq!(old.drill, None, "a record written before drills still reads");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scan_reads_metadata_filters_by_project_and_sorts_newest_first() {
        let dir = std::env::temp_dir().join(format!("xtask-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |file: &str, project: &str, created: &str| {
            let codec = archive::Codec::of_name(file).unwrap_or(archive::Codec::Zstd);
            let mut w = archive::ArchiveWriter::create(&dir.join(file), archive::Compression::new(codec), 1).unwrap();
            let meta = Metadata { created_at: created.into(), ..Metadata::sample(project, &[]) };
            archive::write_metadata(&mut w, &meta).unwrap();
            w.commit().unwrap();
        };
        write("full_backup_20260101_000000.tar.gz", "p", "2026-01-01T00:00:00Z");
        write("full_backup_20260301_000000.tar.zst", "p", "2026-03-01T00:00:00Z");
        write("full_backup_20260401_000000.tar.gz", "other", "2026-04-01T00:00:00Z");
        std::fs::write(dir.join("full_backup_20260501_000000.tar.gz"), b"not ours").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let found = scan(&dir, "p").unwrap();
        let files: Vec<&str> = found.iter().map(|a| a.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "full_backup_20260501_000000.tar.gz",
                "full_backup_20260301_000000.tar.zst",
                "full_backup_20260101_000000.tar.gz"
            ]
        );
        assert!(found[0].problem.as_deref().is_some_and(|p| p.starts_with("damaged")), "listed, not fatal");
        assert!(found[1].problem.is_none());
        assert_eq!(found[1].checksums, "unverified");
        record_verification(&found[1].path, true);
        assert_eq!(verification(&found[1].path), "ok");
        assert!(marker_confirmed(&found[1].path), "the bytes match the marker");
        // The same size and mtime, other bytes: the marker still lists, but decides nothing.
        let p = &found[1].path;
        let (mut bytes, mtime) = (std::fs::read(p).unwrap(), std::fs::metadata(p).unwrap().modified().unwrap());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(p, &bytes).unwrap();
        std::fs::File::options().write(true).open(p).unwrap().set_modified(mtime).unwrap();
        assert_eq!(verification(p), "ok");
        assert!(!marker_confirmed(p), "a marker its archive's bytes do not match is ignored");
        bytes[last] ^= 1;
        std::fs::write(p, &bytes).unwrap();
        assert_eq!(latest(&dir, "p", |_| true).unwrap(), found[1].path, "never a damaged file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_local_file_is_read_through_the_descriptor_opened_once() {
        let dir = std::env::temp_dir().join(format!("xtask-localfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("full_backup_20261207_010000.tar.gz.age");
        std::fs::write(&path, b"age-encryption.org/v1\nsealed bytes").unwrap();
        let opened = LocalFile::open(&path).unwrap();
        // Another file renamed over the name after it was opened: what the push reads is unchanged.
        std::fs::write(dir.join("clear"), b"\x1f\x8b\x08 clear archive").unwrap();
        std::fs::rename(dir.join("clear"), &path).unwrap();
        assert!(opened.sealed(), "decided on the opened bytes");
        let mut read = Vec::new();
        opened.reader().read_to_end(&mut read).unwrap();
        assert_eq!(read, b"age-encryption.org/v1\nsealed bytes");
        assert_eq!(opened.size, 34);
        std::os::unix::fs::symlink(&path, dir.join("link")).unwrap();
        assert!(LocalFile::open(&dir.join("link")).is_err(), "a symbolic link is never opened");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_in_doubt() {
        let t = |s: &str| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
        let now = t("2026-11-27T12:00:00Z");
        let stamp = name_stamp("full_backup_20261127_100000_pre-migration.tar.gz").unwrap();
        assert_eq!(stamp, t("2026-11-27T10:00:00Z"));
        assert_eq!(date_doubt(stamp, "2026-11-27T10:00:01Z", t("2026-11-27T10:20:00Z"), now), None);
        let future = name_stamp("full_backup_20991231_000000.tar.gz").unwrap();
        assert!(date_doubt(future, "2099-12-31T00:00:00Z", future, now).unwrap().contains("future"));
        assert!(date_doubt(stamp, "2099-12-31T00:00:00Z", now, now).unwrap().contains("metadata says"));
        assert!(date_doubt(stamp, "2026-11-27T10:00:00Z", t("2026-01-01T00:00:00Z"), now).is_some());
        assert!(date_doubt(stamp, "yesterday", now, now).unwrap().contains("RFC 3339"));
        assert_eq!(name_stamp("full_backup_2026x127_100000.tar.gz"), None);
        // A backup whose dumps took 90 minutes: its name and metadata both say when it began,
        // its file was written when it ended; its date is not in doubt.
        assert_eq!(date_doubt(stamp, "2026-11-27T10:00:00Z", t("2026-11-27T11:30:00Z"), now), None);
        assert_eq!(name_disagrees("r:full_backup_20261127_100000.tar.gz", "2026-11-27T10:04:00Z"), None);
        assert!(name_disagrees("v:abcd1234:full_backup_20261128_100000.tar", "2026-11-27T10:00:00Z").is_some());
        assert_eq!(name_disagrees("/b/my-copy.tar.gz", "2026-11-27T10:00:00Z"), None, "no date in the name");
        let name = archive_name_at(Kind::Full, None, t("2026-11-27T10:00:00Z"), archive::Codec::Zstd).unwrap();
        assert_eq!(name, "full_backup_20261127_100000.tar.zst");
        assert_eq!(name_stamp(&name), Some(stamp), "{name}");
        let gz = archive_name_at(Kind::Db, Some("x y"), t("2026-11-27T10:00:00Z"), archive::Codec::Gzip).unwrap();
        assert_eq!(gz, "db_backup_20261127_100000_x-y.tar.gz");
    }

    #[test]
    fn only_our_file_names() {
        assert!(is_our_name("full_backup_20260101_000000.tar.gz"));
        assert!(is_our_name("db_backup_20260101_000000_pre-migration.tar.gz"));
        assert!(!is_our_name("notes_backup_x.tar.gz"));
        assert!(!is_our_name(".full_backup_20260101_000000.tar.gz.tmp-12"));
        assert!(!is_our_name("full_backup_20260101_000000.tar"));
        assert!(is_our_name("full_backup_20260101_000000.tar.zst"));
        assert!(is_our_name("full_backup_20260101_000000.tar.zst.age"));
        assert!(is_our_name("full_backup_20260101_000000.tar.gz.age"));
        assert!(!is_our_name("full_backup_20260101_000000.tar.zstd"));
        assert!(!is_our_name("full_backup_20260101_000000.zst"));
        assert!(!is_our_name("full_backup_20260101_000000.tar.zst.sha256"));
    }
}

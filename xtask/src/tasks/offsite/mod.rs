//! Off-site copies: `push` archives to a remote, list them there (`backups --remote`), `pull`
//! one back, `prune --remote` by the local retention, and the remote pick that `verify --remote`
//! and `restore --remote` stream from. A remote is a folder per project (`<url>/<project>/`);
//! each archive there has a sidecar `<file>.sha256` (`sha256sum -c` format) written only after
//! the archive's upload completed and its size was checked: an archive without one is
//! incomplete (an interrupted push) and is never listed as good, pulled, verified or restored.
//! The bucket is untrusted: only names of the archive grammar are used, and every byte read
//! back is checked against the sidecar's digest (and, encrypted, authenticated by age).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::Digest;
use time::OffsetDateTime;

use crate::archive::{self, hex, HashingReader};
use crate::context::Ctx;
use crate::engine::crypt;
use crate::engine::remote::{self, Remote};
use crate::model::notify::Event;
use crate::store::local;
use crate::store::local::LocalFile;
use crate::store::remote::{open, pick_named, quiet_policy, scan, RemoteArchive};
use crate::store::retention::{self, Retention};
use crate::ui::{human_bytes, table};

pub mod vault;

/// Uploads are tried this many times, waiting 2 s, then 4 s, between tries.
const ATTEMPTS: u32 = 3;
/// An archive without its sidecar older than this is a leftover `prune --remote` removes.
const LEFTOVER_AGE: time::Duration = time::Duration::hours(24);

/// `backups --remote`.
pub fn list(ctx: &Ctx, name: &str, json: bool) -> Result<()> {
    if let Some(spec) = crate::store::vault::lookup(ctx, name)? {
        return vault::list(ctx, &spec, json);
    }
    let remote = open(ctx, name)?;
    let (mut archives, _) = scan(&remote)?;
    let policy = quiet_policy(ctx)?;
    for a in archives.iter_mut().filter(|a| a.complete) {
        a.untrusted = a.judge(&policy);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&archives)?);
        return Ok(());
    }
    if archives.is_empty() {
        println!("No archives of project {} in remote {name} ({})", ctx.stack.name, remote.spec.url);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = archives
        .iter()
        .map(|a| {
            vec![
                a.file.clone(),
                a.created_at.clone(),
                human_bytes(a.size_bytes),
                a.kind.to_string(),
                match (&a.sidecar_refused, a.complete) {
                    (Some(why), _) => format!("IN DOUBT (its .sha256 is refused: {why})"),
                    (None, true) if a.untrusted.is_some() => "UNTRUSTED (unsigned or not encrypted)".into(),
                    (None, true) if a.unknown(&policy).is_some() => "NOT KNOWN (not pushed from this host)".into(),
                    (None, true) => "complete".into(),
                    (None, false) => "INCOMPLETE (no .sha256: an interrupted push)".into(),
                },
            ]
        })
        .collect();
    println!("Archives of project {} in remote {name} ({})\n", ctx.stack.name, remote.spec.url);
    print!("{}", table(&["FILE", "CREATED", "SIZE", "KIND", "STATE"], &rows));
    Ok(())
}

/// What a push does with one archive.
#[derive(Debug, Clone, Serialize)]
pub struct PushItem {
    pub path: PathBuf,
    /// The archive as opened once: every read of the push goes through it.
    #[serde(skip)]
    pub local: LocalFile,
    pub file: String,
    pub size_bytes: u64,
    /// "upload", or "skip" (already there with the same size and SHA-256).
    pub action: &'static str,
    pub why: String,
}

/// Decides, for each local archive, whether the remote already holds it (same size, same
/// SHA-256 in its sidecar) or it must be uploaded.
pub fn plan_push(remote: &Remote, files: &[LocalFile]) -> Result<Vec<PushItem>> {
    let (there, _) = scan(remote)?;
    let mut items = Vec::new();
    for local in files {
        let (path, size) = (&local.path, local.size);
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !local::is_our_name(&file) {
            bail!(
                "{} is not named like an archive of this tool ({{full,db}}_backup_*.tar.zst or .tar.gz, with or \
                 without .age)",
                path.display()
            );
        }
        let same = there.iter().find(|a| a.file == file);
        let (action, why) = match same {
            None => ("upload", "not in the remote".to_string()),
            Some(a) if !a.complete => ("upload", "incomplete in the remote (an interrupted push)".into()),
            Some(a) if a.size_bytes != size => {
                ("upload", format!("the remote copy has {} bytes, not {size}", a.size_bytes))
            }
            Some(a) if a.digest != Some(local.sha256()?) => ("upload", "the remote copy's SHA-256 differs".into()),
            Some(_) => ("skip", "already there with the same size and SHA-256".into()),
        };
        items.push(PushItem { path: path.clone(), local: local.clone(), file, size_bytes: size, action, why });
    }
    Ok(items)
}

/// The `push` command: the archives `pick` names in `dir` to `remote`, then how many went; the
/// notifiers of `x-xtask.notify` are told.
pub fn run_push(
    ctx: &Ctx,
    pick: &local::Pick,
    remote: &str,
    dir: &Path,
    dry_run: bool,
    yes: bool,
) -> Result<Vec<PushItem>> {
    let end = |items: &Vec<PushItem>| {
        let uploaded = items.iter().filter(|i| i.action == "upload").count();
        let message =
            format!("pushed {uploaded} archive(s) to remote {remote}, {} already there", items.len() - uploaded);
        let files: Vec<&str> = items.iter().map(|i| i.file.as_str()).collect();
        let details = serde_json::json!({"remote": remote, "uploaded": uploaded, "archives": files});
        (Event::Success, message, details)
    };
    ctx.notified("push", dry_run, || push_picked(ctx, pick, remote, dir, dry_run, yes), end)
}

fn push_picked(
    ctx: &Ctx,
    pick: &local::Pick,
    remote: &str,
    dir: &Path,
    dry_run: bool,
    yes: bool,
) -> Result<Vec<PushItem>> {
    let opened: Vec<LocalFile> =
        local::picked(dir, &ctx.stack.name, pick)?.iter().map(|p| LocalFile::open(p)).collect::<Result<_>>()?;
    let files = only_sealed(ctx, pick, opened)?;
    let items = push_to(ctx, remote, &files, dry_run, yes)?;
    let uploaded = items.iter().filter(|i| i.action == "upload").count();
    let verb = if dry_run { "would upload" } else { "uploaded" };
    println!("{verb} {uploaded}, skipped {} (already there) to remote {remote}", items.len() - uploaded);
    Ok(items)
}

/// With `x-xtask.encrypt` set, a clear archive (one written while encryption was off, say) never
/// leaves the host: `push --all` leaves such archives out and says which; naming one is an error.
fn only_sealed(ctx: &Ctx, pick: &local::Pick, files: Vec<LocalFile>) -> Result<Vec<LocalFile>> {
    if !ctx.offsite()?.encryption.enabled() {
        return Ok(files);
    }
    let (sealed, clear): (Vec<LocalFile>, Vec<LocalFile>) = files.into_iter().partition(LocalFile::sealed);
    if clear.is_empty() {
        return Ok(sealed);
    }
    let names: Vec<String> = clear.iter().map(|f| f.path.display().to_string()).collect();
    if matches!(pick, local::Pick::All) {
        eprintln!(
            "note: left out {} archive(s) that are not encrypted, since x-xtask.encrypt is set: {}",
            clear.len(),
            names.join(", ")
        );
        return Ok(sealed);
    }
    bail!(
        "{} is not encrypted, and x-xtask.encrypt is set: a clear archive is never pushed (make an encrypted one \
         with `cargo xtask backup`)",
        names.join(", ")
    )
}

/// [`push`] to any remote: a restic repository (created when missing only with `create`) or a
/// folder of archives.
pub fn push_to(ctx: &Ctx, name: &str, files: &[LocalFile], dry_run: bool, create: bool) -> Result<Vec<PushItem>> {
    match crate::store::vault::lookup(ctx, name)? {
        Some(spec) => vault::push(ctx, &spec, files, dry_run, create),
        None => push(ctx, name, files, dry_run),
    }
}

/// `push`: uploads what the remote lacks (each retried with backoff), then its sidecar.
pub fn push(ctx: &Ctx, name: &str, files: &[LocalFile], dry_run: bool) -> Result<Vec<PushItem>> {
    let remote = open(ctx, name)?;
    let items = plan_push(&remote, files)?;
    for item in &items {
        if item.action == "skip" || dry_run {
            let verb = if item.action == "skip" { "skip" } else { "would upload" };
            ctx.ui.step(&format!("{verb} {} ({})", item.file, item.why));
            continue;
        }
        let progress = ctx.ui.progress_to(&format!("push {} to {name}", item.file), item.size_bytes);
        upload_with_retries(ctx, &remote, item, &|n| progress.inc(n))?;
        progress.finish(&format!("pushed {} ({}) to {name}", item.file, human_bytes(item.size_bytes)));
    }
    Ok(items)
}

fn upload_with_retries(ctx: &Ctx, remote: &Remote, item: &PushItem, tick: &dyn Fn(u64)) -> Result<()> {
    let mut attempt = 1;
    loop {
        match upload(remote, item, tick) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS && remote::transient(&e) => {
                let wait = Duration::from_secs(2u64 << (attempt - 1));
                ctx.ui.step(&format!("push of {} failed ({e:#}); trying again in {}s", item.file, wait.as_secs()));
                std::thread::sleep(wait);
                attempt += 1;
            }
            Err(e) => return Err(e.context(format!("push {} to {}", item.file, remote.spec.name))),
        }
    }
}

/// One upload: the archive (hashed on its way), then its seal.
fn upload(remote: &Remote, item: &PushItem, tick: &dyn Fn(u64)) -> Result<()> {
    let mut reader = HashingReader::new(Ticking { inner: item.local.reader(), tick });
    let sent = remote.upload(&item.file, &mut reader)?;
    if sent != item.size_bytes {
        bail!(
            "{} changed while it was uploaded ({sent} bytes sent, {} expected)",
            item.path.display(),
            item.size_bytes
        );
    }
    seal_upload(remote, &item.file, sent, reader.hasher.finalize().into(), &item.path)
}

/// Marks an uploaded archive complete: its size in the remote's listing checked, its signature
/// (the local `.sig`, if any) uploaded, then its sidecar written (the last step: without it the
/// archive counts as incomplete).
fn seal_upload(remote: &Remote, file: &str, size: u64, digest: [u8; 32], local: &Path) -> Result<()> {
    let listed = remote.list()?.into_iter().find(|o| o.name == file);
    match listed {
        Some(o) if o.size == size => {}
        Some(o) => bail!("the remote holds {} bytes of {file} after the upload, not {size}", o.size),
        None => bail!("{file} is not in the remote's listing after the upload"),
    }
    if let Some(sig) = crate::store::trust::read_signature(local)? {
        let name = format!("{file}{}", archive::signature::SUFFIX);
        remote.upload(&name, &mut &sig[..]).context("upload the archive's signature")?;
    }
    let line = format!("{}  {file}\n", hex(&digest));
    remote.upload(&format!("{file}.sha256"), &mut line.as_bytes()).context("write the .sha256 sidecar")?;
    if !crate::store::pushed::record(&remote.spec.root, file, &digest)? {
        eprintln!(
            "note: {file} was not written by this host (not in its record of backups): pushed, but it never counts \
             as this host's in the remote"
        );
    }
    Ok(())
}

/// An upload that runs while the archive is written (`backup --push`): the archive's bytes
/// as stored go to rclone as they go to the file. Should it fail, the finished local archive
/// is pushed again the ordinary way (with retries).
pub struct Upload {
    remote_name: String,
    remote: Arc<Remote>,
    file: String,
}

impl Upload {
    /// Starts the upload of `file`; returns it and the mirror the archive writer feeds.
    pub fn begin(ctx: &Ctx, remote_name: &str, file: &str) -> Result<(Upload, archive::sink::Mirror)> {
        let remote = open(ctx, remote_name)?;
        let writer = remote.start_upload(file).with_context(|| format!("start the upload to {remote_name}"))?;
        let up = Upload { remote_name: remote_name.to_string(), remote, file: file.to_string() };
        Ok((up, Box::new(writer)))
    }

    /// After the local commit: finishes the streamed upload and seals it; on any failure pushes
    /// the local archive again.
    pub fn complete(self, ctx: &Ctx, local: &Path, committed: archive::Committed) -> Result<()> {
        let streamed = match (committed.mirror, committed.mirror_error) {
            (Some(m), None) => {
                m.finish().and_then(|_| seal_upload(&self.remote, &self.file, committed.size, committed.sha256, local))
            }
            (Some(m), Some(e)) => Err(m.finish().err().unwrap_or_else(|| anyhow::Error::new(e))),
            (None, _) => Err(anyhow::anyhow!("no upload was running")),
        };
        match streamed {
            Ok(()) => {
                ctx.ui.step(&format!("pushed {} to {} while it was written", self.file, self.remote_name));
                Ok(())
            }
            Err(e) => {
                ctx.ui.step(&format!("the upload while writing failed ({e:#}); pushing {} again", self.file));
                push(ctx, &self.remote_name, &[LocalFile::open(local)?], false).map(drop)
            }
        }
    }
}

/// Reports how many bytes it passed on (a progress bar).
pub(super) struct Ticking<'a, R> {
    pub(super) inner: R,
    pub(super) tick: &'a dyn Fn(u64),
}

impl<R: Read> Read for Ticking<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.tick)(n as u64);
        Ok(n)
    }
}

/// `pull`: downloads a complete archive into `dir` (temporary name, checked against its
/// sidecar's SHA-256, fsync, rename). Returns the local path. `--dry-run` only says so.
pub fn pull(ctx: &Ctx, name: &str, file: Option<&str>, dir: &Path, dry_run: bool) -> Result<PathBuf> {
    if let Some(spec) = crate::store::vault::lookup(ctx, name)? {
        return vault::pull(ctx, &spec, file, dir, dry_run);
    }
    let (src, picked) = pick_named(ctx, name, file)?;
    let file = picked.file.clone();
    let remote_name = src.path.display().to_string();
    if dry_run {
        println!("would download {remote_name} into {}", dir.display());
        return Ok(dir.join(&file));
    }
    write_pulled(ctx, dir, &file, &remote_name, |out, target| {
        let progress = ctx.ui.progress(&format!("pull {remote_name}"));
        let n = std::io::copy(&mut src.raw_reader(), out).with_context(|| format!("download {remote_name}"))?;
        progress.finish(&format!("pulled {} ({})", file, human_bytes(n)));
        if let Some(sig) = &picked.signature {
            crate::store::trust::write_signature(target, sig)?;
        }
        Ok(())
    })
}

/// A pulled archive written into `dir` as `file`: under the project's lock, never over an
/// existing file, through a private temporary file that `fill` writes (given the final path),
/// then fsync and rename; the temporary file removed again on any failure.
pub(super) fn write_pulled(
    ctx: &Ctx,
    dir: &Path,
    file: &str,
    from: &str,
    fill: impl FnOnce(&mut File, &Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = crate::store::local::prepare_dir(dir)?;
    let _lock = crate::lock::Lock::acquire(&dir, &ctx.stack.name, "pull")?;
    let target = dir.join(file);
    if target.exists() {
        bail!("{} already exists; remove it first to pull it again", target.display());
    }
    let temp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut out = crate::files::create_private(&temp)?;
        fill(&mut out, &target)?;
        out.sync_all()?;
        std::fs::rename(&temp, &target)?;
        File::open(&dir).and_then(|d| d.sync_all()).ok();
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e.context(format!("pull {from} into {}", dir.display())));
    }
    Ok(target)
}

/// Smallest archive this tool writes: a zstd frame or gzip member holding the metadata and SHA256SUMS
/// entries (headers of 512 bytes each) never compresses below this.
const MIN_ARCHIVE_BYTES: u64 = 100;

/// Why a complete remote archive cannot be authenticated without downloading it (None: it can):
/// its size, and its first bytes must be an age header, or the magic its name's codec says.
fn not_authentic(remote: &Remote, a: &RemoteArchive) -> Result<Option<String>> {
    if a.size_bytes < MIN_ARCHIVE_BYTES {
        return Ok(Some(format!("{} bytes: too small to be an archive", a.size_bytes)));
    }
    let head = remote.head(&a.file, crypt::MAGIC.len() as u64)?;
    let named = crate::archive::Codec::of_name(&a.file);
    let ok = if a.encrypted { head.starts_with(crypt::MAGIC) } else { crate::archive::Codec::of_magic(&head) == named };
    let like = match named {
        _ if a.encrypted => "an age file",
        Some(crate::archive::Codec::Zstd) => "a zstd stream",
        _ => "a gzip stream",
    };
    Ok((!ok).then(|| format!("does not start like {like}")))
}

/// The complete archives retention may count: trusted by the policy and checking out as
/// archives of this tool; the others are named and kept.
fn authentic<'a>(ctx: &Ctx, remote: &Remote, archives: &'a [RemoteArchive]) -> Result<Vec<&'a RemoteArchive>> {
    let policy = quiet_policy(ctx)?;
    let mut authentic = Vec::new();
    for a in archives.iter().filter(|a| a.complete) {
        let why = match a.judge(&policy) {
            Some(why) => Some(why),
            None => not_authentic(remote, a)?.or_else(|| a.unknown(&policy)),
        };
        match why {
            None => authentic.push(a),
            Some(why) => println!("keep {} (not counted: {why}; not an archive this tool wrote?)", a.file),
        }
    }
    Ok(authentic)
}

/// `prune --remote`: the local retention over the archives it can authenticate (a sidecar that
/// names only its own archive, a size and a gzip/age header that check out; the newest one
/// always kept), plus leftovers of interrupted pushes older than a day. Objects it cannot
/// authenticate never take a retention slot and are never removed: they are reported.
/// `prune --remote`, the notifiers of `x-xtask.notify` told.
pub fn prune(ctx: &Ctx, name: &str, r: &Retention, dry_run: bool) -> Result<()> {
    let end = |_: &()| (Event::Success, format!("pruned remote {name}"), serde_json::json!({"remote": name}));
    ctx.notified("prune", dry_run, || prune_remote(ctx, name, r, dry_run), end)
}

fn prune_remote(ctx: &Ctx, name: &str, r: &Retention, dry_run: bool) -> Result<()> {
    if let Some(spec) = crate::store::vault::lookup(ctx, name)? {
        return vault::prune(ctx, &spec, r, dry_run);
    }
    let remote = open(ctx, name)?;
    let (archives, orphans) = scan(&remote)?;
    let now = OffsetDateTime::now_utc();
    let mut doomed: Vec<(String, String)> = Vec::new();
    for a in archives.iter().filter(|a| !a.complete) {
        if let Some(why) = &a.sidecar_refused {
            println!("keep {} (in doubt: its .sha256 is refused: {why}; check it by hand)", a.file);
        } else if now - a.created > LEFTOVER_AGE {
            doomed.push((a.file.clone(), "incomplete, left by an interrupted push".into()));
        } else {
            println!("keep {} (incomplete, but less than a day old: a push may be running)", a.file);
        }
    }
    doomed.extend(orphans.into_iter().map(|o| (o, "a .sha256 without its archive".into())));
    let authentic = authentic(ctx, &remote, &archives)?;
    for kind in ["full", "db"] {
        let group: Vec<&RemoteArchive> = authentic.iter().copied().filter(|a| a.kind == kind).collect();
        let facts: Vec<(OffsetDateTime, bool)> = group.iter().map(|a| (a.created, true)).collect();
        for (a, why) in group.iter().zip(retention::decide(&facts, r)) {
            if why.is_empty() {
                doomed.push((a.file.clone(), "outside the retention".into()));
            } else {
                println!("keep {} ({})", a.file, why.join(", ").replace("verified", "complete"));
            }
        }
    }
    for (file, why) in &doomed {
        if dry_run {
            println!("would remove {file} ({why})");
            continue;
        }
        remote.delete(file).with_context(|| format!("remove {}", remote.shown(file)))?;
        if local::is_our_name(file) && archives.iter().any(|a| &a.file == file && a.complete) {
            remote
                .delete(&format!("{file}.sha256"))
                .with_context(|| format!("remove {}.sha256", remote.shown(file)))?;
        }
        if archives.iter().any(|a| &a.file == file && a.signature.is_some()) {
            let sig = format!("{file}{}", archive::signature::SUFFIX);
            remote.delete(&sig).with_context(|| format!("remove {}", remote.shown(&sig)))?;
        }
        println!("removed {file} ({why})");
    }
    ctx.ui.step(&format!(
        "{} {} object(s) in remote {name}",
        if dry_run { "would remove" } else { "removed" },
        doomed.len()
    ));
    Ok(())
}

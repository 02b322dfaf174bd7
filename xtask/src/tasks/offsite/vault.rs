//! The deduplicated tier: `push`, `backups --remote`, `pull` and `prune --remote` for remotes that
//! are restic repositories. An archive goes in as one snapshot of its uncompressed tar stream
//! (compression would defeat restic's deduplication; restic compresses and encrypts), tagged
//! with the project, kind and name, then marked complete by a second step (`tar-sha256=`), so a
//! push cut off at any point (kill -9 of the tool or of restic) never yields a snapshot that
//! counts. Our metadata and `SHA256SUMS` travel inside the stream: the strict grammar still
//! decides what a restore takes. `backup --push VAULT` uses the same two steps
//! ([`begin_stream`], [`complete_stream`]) on the stream as it is written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use sha2::Digest;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{PushItem, Ticking};
use crate::archive::signature::{self, Statement};
use crate::archive::{self, hex, HashingReader, Source};
use crate::context::Ctx;
use crate::engine::process::ToolWriter;
use crate::engine::restic::{Restic, Snapshot, COMPLETE_TAG, PART_TAG, SIG_TAG, SIZE_TAG, TREES_TAG};
use crate::model::offsite::VaultSpec;
use crate::store::local::LocalFile;
use crate::store::retention::{self, Retention};
use crate::store::vault::{self, VaultArchive};
use crate::ui::{human_bytes, table};

/// A snapshot without its completion tag older than this is a leftover `prune --remote` forgets.
const LEFTOVER_AGE: time::Duration = time::Duration::hours(24);

/// `push --to VAULT`: each archive not yet in the repository (same name, complete) goes in as a
/// snapshot of its tar stream. `create`: make the repository if it does not exist (`--yes`).
pub fn push(ctx: &Ctx, spec: &VaultSpec, files: &[LocalFile], dry_run: bool, create: bool) -> Result<Vec<PushItem>> {
    let restic = if dry_run { None } else { Some(vault::open(spec, create)?) };
    let there = match &restic {
        Some(r) => vault::scan_judged(ctx, r)?,
        None => Vec::new(),
    };
    let mut items = Vec::new();
    for local in files {
        let (path, size_bytes) = (&local.path, local.size);
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let held = there.iter().any(|a| a.complete && a.untrusted.is_none() && a.file == file);
        let (action, why) =
            if held { ("skip", "already in the repository") } else { ("upload", "not in the repository") };
        let item = PushItem { path: path.clone(), local: local.clone(), file, size_bytes, action, why: why.into() };
        match (&restic, action) {
            (Some(r), "upload") => push_one(ctx, r, &item)?,
            _ => ctx.ui.step(&format!("{} {} ({})", if dry_run { "would push" } else { "skip" }, item.file, item.why)),
        }
        items.push(item);
    }
    Ok(items)
}

/// One archive into the repository: its tar stream (decompressed, decrypted) as a snapshot, then
/// the completion tag with the stream's SHA-256.
fn push_one(ctx: &Ctx, restic: &Restic, item: &PushItem) -> Result<()> {
    let src = Source::of_file(item.local.descriptor()?, &item.path)?;
    // Under sign, only an archive signed by an allowed key gets this host's signature in the
    // repository (and it is read through the descriptor that check pinned).
    crate::store::trust::Policy::of(ctx)?.check_local(&src)?;
    let meta = archive::read_metadata_from(&src).with_context(|| format!("read {}", item.path.display()))?;
    if meta.project != ctx.stack.name {
        bail!("{} is an archive of project {}, not {}", item.path.display(), meta.project, ctx.stack.name);
    }
    let progress = ctx.ui.progress(&format!("push {} to {}", item.file, restic.spec.name));
    let tick = |n| progress.inc(n);
    let mut stream = ticking(HashingReader::new(src.tar().into_inner()), &tick);
    let mut writer = begin_stream(&ctx.stack.name, restic, &item.file)?;
    let sent = std::io::copy(&mut stream, &mut writer)
        .with_context(|| format!("push {} to {}", item.file, restic.spec.name))?;
    let digest: [u8; 32] = stream.into_inner().inner.hasher.finalize().into();
    let snapshot = complete_stream(ctx, restic, (&item.file, &[], None), writer, (&digest, sent))?;
    progress.finish(&format!(
        "pushed {} ({} of tar) to {} as snapshot {}",
        item.file,
        human_bytes(sent),
        restic.spec.name,
        &snapshot[..8.min(snapshot.len())]
    ));
    Ok(())
}

/// Starts the snapshot of archive `file`'s tar stream (`restic backup --stdin`), tagged with
/// project `project`, kind and name; the caller writes the stream, then [`complete_stream`].
pub fn begin_stream(project: &str, restic: &Restic, file: &str) -> Result<ToolWriter> {
    let kind = crate::store::local::name_kind(file);
    let tags =
        vec!["xtask".to_string(), format!("project={project}"), format!("kind={kind}"), format!("archive={file}")];
    restic.backup_stdin(&vault::stored_name(file), &tags)
}

/// A push into a restic repository being started on a thread of its own: the repository
/// opened (restic found, the password tried, created when `create`) and `restic backup --stdin`
/// of one archive's stream started. restic derives its key from the password in every command,
/// half a second by design: the caller's own checks run meanwhile, and [`Starting::ready`]
/// waits for it before anything is written. Dropped unready, the thread is waited for and what
/// it started is killed.
pub struct Starting {
    remote: String,
    thread: Option<JoinHandle<Result<Started>>>,
}

/// A push [`Starting`] started: restic waits for the stream on the writer.
pub struct Started {
    pub spec: VaultSpec,
    pub restic: Arc<Restic>,
    pub writer: ToolWriter,
    /// The project's snapshots as listed meanwhile (the tree form's parent is chosen from
    /// them); None when that listing failed (it is listed again then).
    pub listed: Option<Vec<Snapshot>>,
}

impl Starting {
    /// Starts the push of archive `file` of project `project` into `spec`'s repository.
    pub fn begin(project: &str, spec: &VaultSpec, create: bool, file: &str) -> Starting {
        let (project, spec, file) = (project.to_string(), spec.clone(), file.to_string());
        let remote = spec.name.clone();
        let thread = std::thread::spawn(move || -> Result<Started> {
            let restic = Restic::open(&spec)?;
            // Both derive the key at once: the backup waits for the stream, the check says
            // whether it can work (a backup of a repository that is not there just fails).
            // The listing too: the tree form's parent (one more key derivation, off the path).
            let mut writer = begin_stream(&project, &restic, &file)?;
            let listing = std::thread::scope(|scope| {
                let listing = scope.spawn(|| restic.snapshots(&project).ok());
                let ensured = vault::ensure(&restic, create);
                (ensured, listing.join().ok().flatten())
            });
            let listed = match listing {
                (Err(e), _) => return Err(e),
                (Ok(true), _) => {
                    // Created just now: that first backup found no repository and ended.
                    writer = begin_stream(&project, &restic, &file)?;
                    Some(Vec::new())
                }
                (Ok(false), listed) => listed,
            };
            Ok(Started { spec, restic: Arc::new(restic), writer, listed })
        });
        Starting { remote, thread: Some(thread) }
    }

    /// Waits for the start: the repository's failure (missing, wrong password, no restic, a
    /// backup that already ended) here.
    pub fn ready(mut self) -> Result<Started> {
        let thread = self.thread.take().context("the push was already waited for")?;
        let started = thread.join().map_err(|_| anyhow::anyhow!("starting the push to {} panicked", self.remote))??;
        let writer = started.restic.still_backing_up(started.writer)?;
        Ok(Started { writer, ..started })
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            drop(thread.join());
        }
    }
}

/// Ends the snapshot [`begin_stream`] started, once the whole stream (`size` bytes of SHA-256
/// `digest`) went in, and marks it complete; returns its id. Before the tag it counts as an
/// interrupted push. With `trees` (host paths: the tree form), those are backed up first as the
/// archive's trees snapshot and the completion names its tree (`trees=`): the stream is then the
/// archive's record. With `x-xtask.sign`, the same `restic tag` adds the stream's size and this
/// host's signature of (name, with the trees' id in the tree form; size, SHA-256, project):
/// readers under `sign` trust no other.
pub fn complete_stream(
    ctx: &Ctx,
    restic: &Restic,
    (file, trees, listed): (&str, &[String], Option<Vec<Snapshot>>),
    writer: ToolWriter,
    (digest, size): (&[u8; 32], u64),
) -> Result<String> {
    // The trees first, the record's restic still waiting for the end of its input: a failure or
    // a signal there drops it unfinished, so no record is saved at all. Their tree id is asked
    // for while the record's restic finishes (a record without its tag is never used).
    let finish = || restic.finish_backup(writer).with_context(|| format!("push {file} to {}", restic.spec.name));
    let (tree, summary) = match trees.is_empty() {
        true => (None, finish()?),
        false => {
            let trees_snapshot = push_trees(ctx, restic, file, trees, listed)?;
            let (tree, summary) = std::thread::scope(|scope| {
                let tree = scope.spawn(|| tree_of(restic, &trees_snapshot));
                let summary = finish();
                (tree.join().unwrap_or_else(|_| Err(anyhow::anyhow!("reading the tree id panicked"))), summary)
            });
            (Some(tree?), summary?)
        }
    };
    let snapshot = Restic::snapshot_of(&summary)?;
    let mut tags = vec![format!("{COMPLETE_TAG}{}", hex(digest))];
    if let Some(tree) = &tree {
        tags.push(format!("{TREES_TAG}{tree}"));
    }
    if crate::store::trust::Policy::of(ctx)?.signing.is_some() {
        let named = vault::signed_name(file, tree.as_deref());
        let statement = Statement { file: named, size, sha256: *digest, project: ctx.stack.name.clone(), index: None };
        let armor = crate::engine::sign::sign(&statement.text()).with_context(|| format!("sign {file}'s stream"))?;
        tags.push(format!("{SIZE_TAG}{size}"));
        tags.push(format!("{SIG_TAG}{}", signature::compact(&armor)));
    }
    restic.add_tags(&snapshot, &tags)?;
    if let Some(tree) = tree.as_deref().and_then(crate::engine::remote::parse_hex32) {
        // This host's own trees: the only parent its next trees take without sign.
        if let Err(e) = crate::store::pushed::record_trees(&restic.spec.repository, file, &tree) {
            eprintln!(
                "warning: the trees of {file} are not in this host's record ({e:#}); the next push reads every file"
            );
        }
    }
    Ok(snapshot)
}

/// The root tree id of snapshot `id`.
fn tree_of(restic: &Restic, id: &str) -> Result<String> {
    let tree = restic.snapshot(id)?.tree;
    if tree.len() != 64 {
        bail!("restic names no tree for snapshot {id}");
    }
    Ok(tree)
}

/// The trees of archive `file` (host paths) as one snapshot tagged `part=trees` and the archive's
/// name, compared with the trees [`parent_of`] chooses among the project's snapshots (`listed`
/// when listed already; never a parent restic would choose by itself); returns the snapshot's id.
fn push_trees(
    ctx: &Ctx,
    restic: &Restic,
    file: &str,
    paths: &[String],
    listed: Option<Vec<Snapshot>>,
) -> Result<String> {
    let project = &ctx.stack.name;
    let listing = match listed {
        Some(snapshots) => vault::judged(ctx, snapshots)?,
        None => vault::list_judged(ctx, restic)?,
    };
    let parent = parent_of(ctx, restic, &listing)?;
    let kind = crate::store::local::name_kind(file);
    let tags = vec![
        "xtask".to_string(),
        format!("project={project}"),
        format!("kind={kind}"),
        format!("archive={file}"),
        PART_TAG.to_string(),
    ];
    let progress = ctx.ui.progress(&format!("push the file trees of {file} to {}", restic.spec.name));
    let summary = restic
        .backup_paths(paths, (&tags, parent.as_deref()), &crate::signals::check)
        .with_context(|| format!("push the file trees of {file} to {}", restic.spec.name))?;
    let id = Restic::snapshot_of(&summary)?;
    let added = Restic::data_added(&summary).unwrap_or(0);
    progress.finish(&format!(
        "file trees of {file}: snapshot {} ({} new{})",
        &id[..8.min(id.len())],
        human_bytes(added),
        if parent.is_some() { ", unchanged files skipped" } else { ", every file read" }
    ));
    Ok(id)
}

/// The trees snapshot the next trees are compared with: those of the newest complete archive
/// whose date is not in doubt and whose trees this host pushed itself (its private record) or,
/// under `x-xtask.sign`, whose signature an allowed key made. Never one only the repository
/// vouches for: restic takes a file whose metadata matches the parent's node from the parent,
/// content and all, and anyone with the password can write a complete-looking archive.
fn parent_of(ctx: &Ctx, restic: &Restic, listing: &vault::Listing) -> Result<Option<String>> {
    let signed = crate::store::trust::Policy::of(ctx)?.signing.is_some();
    let ours = crate::store::pushed::trees_pushed(&restic.spec.repository);
    let vouched = |a: &VaultArchive, tree: &str| {
        signed || crate::engine::remote::parse_hex32(tree).is_some_and(|t| ours.knows(&a.file, &t))
    };
    let trusted = listing
        .archives
        .iter()
        .find(|a| a.complete && a.problem.is_none() && a.trees.as_deref().is_some_and(|tree| vouched(a, tree)));
    Ok(trusted.and_then(|a| listing.part(&a.file, a.trees.as_deref().unwrap_or_default())))
}

/// `from` read in blocks of 1 MiB (a pipe either side), each counted by `tick`.
fn ticking<'a, R: Read>(from: R, tick: &'a dyn Fn(u64)) -> std::io::BufReader<Ticking<'a, R>> {
    std::io::BufReader::with_capacity(1 << 20, Ticking { inner: from, tick })
}

/// The trees snapshots (the tree form's parts) that go with the archives `doomed`, and those no
/// complete archive uses that are over a day old (left by an interrupted push); each said.
fn doomed_parts(
    listing: &vault::Listing,
    doomed: &[(&VaultArchive, String)],
    now: OffsetDateTime,
    dry_run: bool,
) -> Vec<String> {
    let (archives, mut ids) = (&listing.archives, Vec::new());
    for (id, file, time) in listing.parts() {
        let is_doomed = |a: &VaultArchive| doomed.iter().any(|(d, _)| d.snapshot == a.snapshot);
        let used = archives.iter().any(|a| a.file == file && a.complete && !is_doomed(a));
        let goes_with = archives.iter().any(|a| a.file == file && is_doomed(a));
        let taken = OffsetDateTime::parse(&time, &Rfc3339).unwrap_or(now);
        let why = match (used, goes_with) {
            (true, _) => continue,
            (false, true) => "the file trees of an archive forgotten",
            (false, false) if now - taken > LEFTOVER_AGE => {
                "file trees no complete archive uses, left by an interrupted push"
            }
            (false, false) => continue,
        };
        println!(
            "{} the trees of {file} (snapshot {}): {why}",
            if dry_run { "would forget" } else { "forget" },
            &id[..8]
        );
        ids.push(id);
    }
    ids
}

/// `backups --remote VAULT`: the project's snapshots as archives.
pub fn list(ctx: &Ctx, spec: &VaultSpec, json: bool) -> Result<()> {
    let restic = vault::open(spec, false)?;
    let archives = vault::scan_judged(ctx, &restic)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&archives)?);
        return Ok(());
    }
    if archives.is_empty() {
        println!("No archives of project {} in remote {} (restic {})", ctx.stack.name, spec.name, spec.shown());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = archives
        .iter()
        .map(|a| {
            let state = match (&a.problem, a.complete) {
                (Some(why), _) => format!("IN DOUBT ({why})"),
                (None, true) => "complete".into(),
                (None, false) => "INCOMPLETE (an interrupted push)".into(),
            };
            vec![
                a.file.clone(),
                a.created_at.clone(),
                a.snapshot[..8.min(a.snapshot.len())].to_string(),
                if a.trees.is_some() { format!("{} (trees)", a.kind) } else { a.kind.to_string() },
                state,
            ]
        })
        .collect();
    println!("Archives of project {} in remote {} (restic {})\n", ctx.stack.name, spec.name, spec.shown());
    print!("{}", table(&["FILE", "CREATED", "SNAPSHOT", "KIND", "STATE"], &rows));
    Ok(())
}

/// `pull --from VAULT`: a local archive made again from a snapshot's tar stream (compressed as
/// `x-xtask.compression` says, else zstd; and age when `x-xtask.encrypt` is set; signed when a signing key is at hand), written atomically,
/// once the stream was read through the grammar and found to be this project's.
pub fn pull(ctx: &Ctx, spec: &VaultSpec, file: Option<&str>, dir: &Path, dry_run: bool) -> Result<PathBuf> {
    let (src, picked) = vault::pick(ctx, spec, file)?;
    let seal = crate::store::trust::seal(ctx, false)?;
    let compression = archive::Compression::choose(None, None, ctx.offsite()?.compression)?;
    let stored = picked.stored_name();
    let stem = stored.strip_suffix(".tar").unwrap_or(&stored);
    let name = format!("{stem}{}{}", compression.codec.extension(), if seal.is_some() { ".age" } else { "" });
    if dry_run {
        println!("would make {} in {} from snapshot {}", name, dir.display(), picked.snapshot);
        return Ok(dir.join(&name));
    }
    // Read through the grammar first: only an archive of this project becomes a local file (and
    // gets this host's signature).
    let report = archive::verify_source(&src, archive::Rules::default());
    let project = report.metadata.as_ref().map(|m| m.project.clone());
    if !report.ok() || project.as_deref() != Some(ctx.stack.name.as_str()) {
        let why =
            report.problems.first().cloned().unwrap_or_else(|| format!("it is an archive of project {project:?}"));
        bail!(
            "{} is not a sound archive of project {}: {why}; nothing was written",
            src.path.display(),
            ctx.stack.name
        );
    }
    let shown = src.path.display().to_string();
    let mut stored_as = (0, [0u8; 32]);
    let target = super::write_pulled(ctx, dir, &name, &shown, |out, _| {
        stored_as = write_stored(ctx, &src, compression, seal.as_ref(), out)?;
        Ok(())
    })?;
    if crate::store::trust::Policy::of(ctx)?.signing.is_some() {
        if let Err(e) = crate::store::trust::sign_local(ctx, &target, stored_as.0, stored_as.1, None) {
            eprintln!("warning: {} was pulled but not signed ({e:#}); read it with --allow-unsigned", target.display());
        }
    }
    Ok(target)
}

/// The snapshot's tar stream as an archive's bytes are stored (compressed, then age when
/// sealed) into `out`; their size and SHA-256.
fn write_stored(
    ctx: &Ctx,
    src: &Source,
    compression: archive::Compression,
    seal: Option<&crate::model::offsite::Encryption>,
    out: &mut std::fs::File,
) -> Result<(u64, [u8; 32])> {
    let progress = ctx.ui.progress(&format!("pull {}", src.path.display()));
    let tar = src.tar().into_inner();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let compressed = archive::compression::encoding_reader(Box::new(tar), compression, threads)?;
    let stored: Box<dyn Read + Send> = match seal {
        Some(enc) => Box::new(crate::engine::crypt::encrypt(enc, compressed)?),
        None => compressed,
    };
    let tick = |n| progress.inc(n);
    let mut hashing = HashingReader::new(ticking(stored, &tick));
    let n = std::io::copy(&mut hashing, out)?;
    progress.finish(&format!("pulled {} ({})", src.path.display(), human_bytes(n)));
    Ok((n, hashing.hasher.finalize().into()))
}

/// `prune --remote VAULT`: the local retention over this project's complete snapshots (per kind,
/// by the archives' own times), the rest forgotten with `restic forget`, then `restic prune`.
/// Other projects' snapshots in the same repository are never looked at. restic's own
/// `--keep-*` is not used: it groups snapshots by path, and each archive has a path of its own.
pub fn prune(ctx: &Ctx, spec: &VaultSpec, r: &Retention, dry_run: bool) -> Result<()> {
    let restic = vault::open(spec, false)?;
    let listing = vault::list_judged(ctx, &restic)?;
    let archives = &listing.archives;
    let now = OffsetDateTime::now_utc();
    let mut doomed: Vec<(&VaultArchive, String)> = Vec::new();
    for a in archives.iter().filter(|a| a.complete && a.problem.is_some()) {
        println!("keep {} (not counted: {})", a.file, a.problem.as_deref().unwrap_or_default());
    }
    for a in archives.iter().filter(|a| !a.complete) {
        // Its age from when restic took it, not from its name (an old archive pushed today).
        let taken = OffsetDateTime::parse(&a.snapshot_time, &Rfc3339).unwrap_or(now);
        if now - taken > LEFTOVER_AGE {
            doomed.push((a, "incomplete, left by an interrupted push".into()));
        } else {
            println!("keep {} (incomplete, but less than a day old: a push may be running)", a.file);
        }
    }
    for kind in ["full", "db"] {
        let group: Vec<&VaultArchive> =
            archives.iter().filter(|a| a.complete && a.problem.is_none() && a.kind == kind).collect();
        let facts: Vec<(OffsetDateTime, bool)> = group.iter().enumerate().map(|(i, a)| (a.created, i == 0)).collect();
        for (a, why) in group.iter().zip(retention::decide(&facts, r)) {
            if why.is_empty() {
                doomed.push((a, "not kept by the retention policy".into()));
            } else {
                println!("keep {} ({})", a.file, why.join(", "));
            }
        }
    }
    for (a, why) in &doomed {
        println!(
            "{} {} (snapshot {}): {why}",
            if dry_run { "would forget" } else { "forget" },
            a.file,
            &a.snapshot[..8]
        );
    }
    let mut ids: Vec<String> = doomed.iter().map(|(a, _)| a.snapshot.clone()).collect();
    ids.extend(doomed_parts(&listing, &doomed, now, dry_run));
    if dry_run {
        return Ok(());
    }
    restic.forget_and_prune(&ids).with_context(|| format!("prune remote {}", spec.name))
}

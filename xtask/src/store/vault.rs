//! Remotes that are restic repositories (`url: "restic:…"`), as places that hold archives: the
//! project's snapshots listed like archives, and the one a reader streams. Only snapshots tagged
//! `xtask` and `project=P` whose `archive=` tag is a name of our grammar are considered; one
//! counts as complete only with its `tar-sha256=` tag, added after the push finished, and its
//! bytes are checked against it as they stream. Anyone with the repository's password can write
//! a snapshot: under `x-xtask.sign` one counts only with this host's kind of proof, a `sig=` tag
//! (added with the completion tag) signing its stream's name, size (`tar-size=`), SHA-256 and
//! project by an allowed key; any other is "in doubt": never latest, never pulled or restored,
//! never counted or forgotten by prune.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::archive::Source;
use crate::context::Ctx;
use crate::engine::restic::{Restic, Snapshot, COMPLETE_TAG, PART_TAG, SIG_TAG, SIZE_TAG, TREES_TAG};
use crate::model::offsite::VaultSpec;
use crate::store::local;

/// An archive in a restic repository: one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct VaultArchive {
    /// The archive's name as it was pushed (`full_backup_….tar.gz`).
    pub file: String,
    pub snapshot: String,
    pub created_at: String,
    #[serde(skip)]
    pub created: OffsetDateTime,
    pub kind: &'static str,
    /// The push finished: the snapshot has its `tar-sha256=` tag.
    pub complete: bool,
    /// When the snapshot was taken (restic's time), RFC 3339.
    pub snapshot_time: String,
    /// Why its date is in doubt (named in the future, or after its own snapshot): then it is
    /// never "latest" and never counted or forgotten by prune.
    pub problem: Option<String>,
    #[serde(skip)]
    pub tar_sha256: Option<[u8; 32]>,
    /// Its stream's size and signature tags (with `x-xtask.sign`).
    #[serde(skip)]
    pub tar_size: Option<u64>,
    #[serde(skip)]
    pub signature: Option<String>,
    /// Under `x-xtask.sign`: why its signature does not vouch for it (then `problem` says so too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub untrusted: Option<String>,
    /// The tree form: the tree id of the snapshot holding its volumes and binds as file trees
    /// (its record's `trees=` tag); None: the stream form (everything in one tar stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trees: Option<String>,
}

impl VaultArchive {
    /// The name the tar stream has inside the snapshot: the archive's name as `.tar`.
    pub fn stored_name(&self) -> String {
        stored_name(&self.file)
    }

    /// What its signed statement names as the file: the stored name, and in the tree form its
    /// trees' id (`full_backup_X.tar@tree=HEX`), so a signature vouches for every file of it.
    pub fn signed_name(&self) -> String {
        signed_name(&self.file, self.trees.as_deref())
    }
}

/// [`VaultArchive::signed_name`] of archive `file` with trees `tree`.
pub fn signed_name(file: &str, tree: Option<&str>) -> String {
    match tree {
        Some(tree) => format!("{}@tree={tree}", stored_name(file)),
        None => stored_name(file),
    }
}

/// `full_backup_X.tar.zst[.age]` (or `.tar.gz[.age]`) -> `full_backup_X.tar`: what a snapshot
/// holds (the uncompressed tar stream, whatever the archive's codec).
pub fn stored_name(file: &str) -> String {
    let stem = file.strip_suffix(".age").unwrap_or(file);
    let stem = stem.strip_suffix(".gz").or_else(|| stem.strip_suffix(".zst")).unwrap_or(stem);
    stem.to_string()
}

/// The restic repository remote named `name` in `x-xtask.remotes`, if it is one.
pub fn lookup(ctx: &Ctx, name: &str) -> Result<Option<VaultSpec>> {
    Ok(ctx.offsite()?.vaults.get(name).cloned())
}

/// The repository, opened (restic found, version checked, the password given); a missing one is
/// created when `create` (asked for with `--yes`), else named with how to create it when a
/// command finds it missing.
pub fn open(spec: &VaultSpec, create: bool) -> Result<Arc<Restic>> {
    let restic = Restic::open(spec)?;
    if create {
        ensure(&restic, create)?;
    }
    // Otherwise the first command says it (a missing repository, a wrong password: see
    // `engine::restic::explain`): a check first would cost one more key derivation.
    Ok(Arc::new(restic))
}

/// The repository there and opened by the password, or created when `create`; whether it had
/// to be created.
pub fn ensure(restic: &Restic, create: bool) -> Result<bool> {
    if restic.exists()? {
        return Ok(false);
    }
    if !create {
        bail!(
            "remote {}: the restic repository {} does not exist yet; add --yes to create it (restic init)",
            restic.spec.name,
            restic.spec.shown()
        );
    }
    restic.init()?;
    Ok(true)
}

/// A snapshot as one of this project's archives, if it is one: exactly one `project=` tag (a
/// snapshot claimed by two projects is neither's), a name of our grammar, a `kind=` that agrees.
fn archive_of(s: &Snapshot, project: &str, now: OffsetDateTime) -> Option<VaultArchive> {
    if s.tags.iter().any(|t| t == PART_TAG) {
        return None;
    }
    let projects: Vec<&String> = s.tags.iter().filter(|t| t.starts_with("project=")).collect();
    if projects.len() != 1 || projects[0].strip_prefix("project=") != Some(project) {
        return None;
    }
    let file = s.tag("archive")?.to_string();
    if !local::is_our_name(&file) || s.tag("kind").is_some_and(|k| k != local::name_kind(&file)) {
        return None;
    }
    let created = local::name_stamp(&file)?;
    let taken = OffsetDateTime::parse(&s.time, &Rfc3339).ok();
    let tar_sha256 =
        s.tags.iter().find_map(|t| t.strip_prefix(COMPLETE_TAG)).and_then(crate::engine::remote::parse_hex32);
    let tar_size = s.tags.iter().find_map(|t| t.strip_prefix(SIZE_TAG)).and_then(|n| n.parse().ok());
    let signature = s.tags.iter().find_map(|t| t.strip_prefix(SIG_TAG)).map(String::from);
    let trees = s.tags.iter().find_map(|t| t.strip_prefix(TREES_TAG)).filter(|t| is_tree_id(t)).map(String::from);
    Some(VaultArchive {
        trees,
        problem: date_doubt(created, taken, now),
        created_at: created.format(&Rfc3339).unwrap_or_default(),
        kind: local::name_kind(&file),
        complete: tar_sha256.is_some(),
        snapshot: s.id.clone(),
        snapshot_time: s.time.clone(),
        file,
        created,
        tar_sha256,
        tar_size,
        signature,
        untrusted: None,
    })
}

/// A genuine push is named before its snapshot is taken, and not in the future.
fn date_doubt(named: OffsetDateTime, taken: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<String> {
    let slack = time::Duration::minutes(5);
    if named - now > slack {
        return Some(format!("it is named {named}, in the future"));
    }
    match taken {
        None => Some("restic's time of its snapshot is not RFC 3339".into()),
        Some(t) if named - t > slack => Some(format!("it is named {named}, after its snapshot was taken ({t})")),
        Some(_) => None,
    }
}

/// The project's archives in the repository, newest first.
pub fn scan(restic: &Restic, project: &str) -> Result<Vec<VaultArchive>> {
    Ok(archives_in(&restic.snapshots(project)?, project))
}

fn archives_in(snapshots: &[Snapshot], project: &str) -> Vec<VaultArchive> {
    let now = OffsetDateTime::now_utc();
    let mut out: Vec<VaultArchive> = snapshots.iter().filter_map(|s| archive_of(s, project, now)).collect();
    out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.snapshot_time.cmp(&a.snapshot_time)));
    out
}

/// [`scan`] judged by the reading policy: under `x-xtask.sign`, a complete snapshot without a
/// valid signature by an allowed key is in doubt (its `problem` says why).
pub fn scan_judged(ctx: &Ctx, restic: &Restic) -> Result<Vec<VaultArchive>> {
    Ok(list_judged(ctx, restic)?.archives)
}

/// One listing of the repository (one `restic snapshots`): the project's archives judged as
/// [`scan_judged`] does, and the trees snapshots of those in the tree form.
pub struct Listing {
    pub archives: Vec<VaultArchive>,
    snapshots: Vec<Snapshot>,
    project: String,
}

/// [`Listing`] of the project's snapshots.
pub fn list_judged(ctx: &Ctx, restic: &Restic) -> Result<Listing> {
    judged(ctx, restic.snapshots(&ctx.stack.name)?)
}

/// [`Listing`] of `snapshots`, the project's as `Restic::snapshots` listed them.
pub fn judged(ctx: &Ctx, snapshots: Vec<Snapshot>) -> Result<Listing> {
    let project = ctx.stack.name.clone();
    let mut archives = archives_in(&snapshots, &project);
    let policy = crate::store::trust::Policy::of(ctx)?;
    if policy.signing.is_some() {
        for a in archives.iter_mut() {
            let Some(digest) = a.tar_sha256 else { continue };
            a.untrusted = policy.unsigned_stream(&a.signed_name(), a.tar_size, digest, a.signature.as_deref());
            if a.problem.is_none() {
                a.problem.clone_from(&a.untrusted);
            }
        }
    }
    Ok(Listing { archives, snapshots, project })
}

impl Listing {
    /// The snapshot holding the trees of archive `file`: one of its parts whose root tree is
    /// exactly `tree` (restic checks every object it reads against its id, so the files
    /// restored are the ones that tree names).
    pub fn part(&self, file: &str, tree: &str) -> Option<String> {
        self.snapshots.iter().find(|s| is_part_of(s, &self.project, file) && s.tree == tree).map(|s| s.id.clone())
    }

    /// The trees snapshots of the project (snapshot id, archive name, time), for prune.
    pub fn parts(&self) -> Vec<(String, String, String)> {
        self.snapshots
            .iter()
            .filter_map(|s| {
                let file = s.tag("archive")?.to_string();
                is_part_of(s, &self.project, &file).then(|| (s.id.clone(), file, s.time.clone()))
            })
            .collect()
    }
}

/// The archive an argument names: its file name, or a snapshot id prefix of 8 hex digits or more
/// that only one snapshot has.
fn named<'a>(archives: &'a [VaultArchive], f: &str) -> Option<&'a VaultArchive> {
    if let Some(a) = archives.iter().find(|a| a.file == f) {
        return Some(a);
    }
    let id_like = f.len() >= 8 && f.bytes().all(|b| b.is_ascii_hexdigit());
    let mut by_id = archives.iter().filter(|a| id_like && a.snapshot.starts_with(f));
    match (by_id.next(), by_id.next()) {
        (Some(a), None) => Some(a),
        _ => None,
    }
}

/// The archive `file` (None: the newest complete one whose date is not in doubt) of the
/// repository, ready to stream.
pub fn pick(ctx: &Ctx, spec: &VaultSpec, file: Option<&str>) -> Result<(Source, VaultArchive)> {
    let restic = open(spec, false)?;
    let listing = list_judged(ctx, &restic)?;
    let archives = &listing.archives;
    let name = &spec.name;
    let found = match file {
        Some(f) => named(archives, f).with_context(|| {
            format!(
                "remote {name} has no archive {f} of project {} (an archive's name, or at least 8 hex digits of one \
                 snapshot id); see `cargo xtask backups --remote {name}`",
                ctx.stack.name
            )
        })?,
        None => archives.iter().find(|a| a.complete && a.problem.is_none()).with_context(|| {
            format!(
                "remote {name} has no complete archive of project {}; push one with `cargo xtask push --latest --to {name}`",
                ctx.stack.name
            )
        })?,
    };
    let Some(digest) = found.tar_sha256 else {
        bail!(
            "{name}: snapshot {} of {} is incomplete (its push was interrupted); push it again",
            found.snapshot,
            found.file
        );
    };
    if let Some(why) = &found.untrusted {
        bail!("{name}: snapshot {} of {} is untrusted: {why}", found.snapshot, found.file);
    }
    let source = match &found.trees {
        None => Source::restic(restic, &found.snapshot, &found.stored_name(), digest),
        Some(tree) => {
            let part = listing.part(&found.file, tree).with_context(|| {
                format!(
                    "{name}: archive {} is in the tree form, but no snapshot of the repository holds its trees (tree \
                     {tree}): they were forgotten or altered; refused",
                    found.file
                )
            })?;
            Source::restic_trees(restic, (&found.snapshot, &found.stored_name(), digest), &part)
        }
    };
    Ok((source, found.clone()))
}

/// A restic tree id: 64 lower-case hex digits.
fn is_tree_id(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` is the trees part of archive `file` of `project`.
fn is_part_of(s: &Snapshot, project: &str, file: &str) -> bool {
    let projects: Vec<&String> = s.tags.iter().filter(|t| t.starts_with("project=")).collect();
    s.tags.iter().any(|t| t == PART_TAG)
        && projects.len() == 1
        && projects[0].strip_prefix("project=") == Some(project)
        && s.tag("archive") == Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(tags: &[&str]) -> Snapshot {
        Snapshot {
            id: "0123456789abcdef".into(),
            short_id: "01234567".into(),
            time: "2026-12-06T05:00:00.5Z".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            paths: vec![],
            tree: String::new(),
        }
    }

    #[test]
    fn a_snapshot_is_an_archive_of_ours_complete_only_with_its_digest() {
        assert_eq!(stored_name("full_backup_20261206_050000.tar.gz.age"), "full_backup_20261206_050000.tar");
        assert_eq!(
            stored_name("db_backup_20261206_050000_pre-migration.tar.gz"),
            "db_backup_20261206_050000_pre-migration.tar"
        );
        assert_eq!(stored_name("full_backup_20261206_050000.tar.zst"), "full_backup_20261206_050000.tar");
        assert_eq!(stored_name("full_backup_20261206_050000.tar.zst.age"), "full_backup_20261206_050000.tar");
        let name = "archive=full_backup_20261206_050000.tar.gz";
        let now = OffsetDateTime::parse("2026-12-07T00:00:00Z", &Rfc3339).unwrap();
        let of = |tags: &[&str]| archive_of(&snapshot(&[&["project=p"][..], tags].concat()), "p", now);
        let pushing = of(&["xtask", name]).unwrap();
        assert!(!pushing.complete && pushing.tar_sha256.is_none());
        let digest = format!("{COMPLETE_TAG}{}", "ab".repeat(32));
        let done = of(&["xtask", name, &digest]).unwrap();
        assert_eq!((done.complete, done.kind, done.tar_sha256), (true, "full", Some([0xab; 32])));
        assert_eq!(done.problem, None);
        let short = format!("{COMPLETE_TAG}abc");
        assert!(!of(&[name, &short]).unwrap().complete, "a malformed digest is no digest");
        assert!(of(&["archive=../../etc/passwd"]).is_none(), "only names of our grammar");
        assert!(of(&["xtask"]).is_none());
        assert!(of(&[name, "project=q"]).is_none(), "a snapshot claimed by two projects is neither's");
        assert!(archive_of(&snapshot(&[name]), "p", now).is_none(), "another project's (none here)");
        assert!(of(&[name, "kind=db"]).is_none(), "a kind that disagrees with the name");
        let future = of(&["archive=full_backup_20990101_000000.tar.gz", &digest]).unwrap();
        assert!(future.problem.unwrap().contains("future"));
        let after = of(&["archive=full_backup_20261206_060000.tar.gz", &digest]).unwrap();
        assert!(after.problem.unwrap().contains("after its snapshot"), "named after it was taken (05:00)");
    }

    #[test]
    fn a_tree_form_archive_is_its_record_and_its_trees_only_the_part_with_that_tree() {
        let name = "archive=full_backup_20261206_050000.tar.zst";
        let now = OffsetDateTime::parse("2026-12-07T00:00:00Z", &Rfc3339).unwrap();
        let tree = "ab".repeat(32);
        let trees_tag = format!("{TREES_TAG}{tree}");
        let digest = format!("{COMPLETE_TAG}{}", "cd".repeat(32));
        let record = snapshot(&["xtask", "project=p", name, &digest, &trees_tag]);
        let a = archive_of(&record, "p", now).unwrap();
        assert_eq!(a.trees.as_deref(), Some(tree.as_str()));
        assert_eq!(a.signed_name(), format!("full_backup_20261206_050000.tar@tree={tree}"));
        let mut part = snapshot(&["xtask", "project=p", name, PART_TAG]);
        part.id = "part1".into();
        part.tree = tree.clone();
        assert!(archive_of(&part, "p", now).is_none(), "a part is never an archive of its own");
        let mut other = part.clone();
        other.id = "part2".into();
        other.tree = "ef".repeat(32);
        let short = snapshot(&["xtask", "project=p", name, &digest, &format!("{TREES_TAG}abc")]);
        assert_eq!(archive_of(&short, "p", now).unwrap().trees, None, "a malformed tree id is none");
        let listing = Listing { archives: vec![a], snapshots: vec![record, other, part], project: "p".into() };
        let file = "full_backup_20261206_050000.tar.zst";
        assert_eq!(listing.part(file, &tree).as_deref(), Some("part1"), "only the part with the tagged tree");
        assert_eq!(listing.part("full_backup_20261206_060000.tar.zst", &tree), None, "another archive's");
        assert_eq!(listing.parts().len(), 2);
    }
}

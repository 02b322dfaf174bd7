//! The restic tier's tree form, end to end on the live engine: `backup --push VAULT
//! --no-keep-local` hands restic each volume (at its mountpoint) and bind (at its host path) as
//! a file tree; a volume that cannot be read as one (a local volume with mount options) stays in
//! the stream form. After clean-all, `restore --remote` brings back content, modes, owners,
//! mtimes, symbolic links, hard links and odd names; a second backup adds about the bytes of the
//! one file that changed; a trees snapshot forged by someone with the repository's password (a
//! device node) is refused before anything changes, and under `x-xtask.sign` a record pointed at
//! another tree is untrusted; an archive whose record lost its completion tag is INCOMPLETE and
//! never used; `prune --remote` forgets an archive with its trees snapshot; a backup that keeps
//! its local archive (whole) pushes the tree form too, and `restore --only` reads the trees of
//! the volumes it restores alone.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const COMPOSE: &str = r#"name: trees
services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - media:/media
      - scratch:/scratch
      - ./photos:/photos
volumes:
  media:
    name: ${TREES_PREFIX}-media
    labels: {xtask.role: uploads, xtask.priority: critical}
  scratch:
    name: ${TREES_PREFIX}-scratch
    driver_opts: {type: none, o: bind, device: "${TREES_SCRATCH}"}
    labels: {xtask.role: uploads, xtask.priority: critical}
x-xtask:
  remotes:
    vault: {url: "restic:${TREES_REPO}", password_file: "${TREES_PASSWORD}"}
"#;

fn ready() -> bool {
    if !engine() {
        return false;
    }
    if Command::new("sh").args(["-c", "command -v restic"]).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "restic missing under CI=true: run scripts/provision.sh");
    eprintln!("SKIPPED: restic missing (run scripts/provision.sh)");
    false
}

/// The test's stack, its repository and the host directories its binds and scratch volume use.
struct Bed {
    stack: TestStack,
    project: TempDir,
    repo: std::path::PathBuf,
    password: std::path::PathBuf,
    backups: TempDir,
}

impl Bed {
    fn new(name: &str) -> Bed {
        Bed::with_compose(name, COMPOSE)
    }

    /// With `x-xtask.sign`: a key of its own, allowed, and used to sign.
    fn signed(name: &str) -> Bed {
        let keys = TempDir::new(&format!("{name}-keys"));
        let (key, public) = ssh_keypair(&keys, "host");
        let mut bed = Bed::with_compose(name, &format!("{COMPOSE}  sign: {{allowed_signers: [\"{public}\"]}}\n"));
        let kept = bed.project.0.join("signing-key");
        std::fs::copy(&key, &kept).unwrap();
        bed.stack.env.push(("XTASK_SIGNING_KEY".into(), kept.to_string_lossy().into_owned()));
        bed
    }

    fn with_compose(name: &str, compose: &str) -> Bed {
        let (project, mut stack) = stack_from(name, compose, "TREES_PREFIX");
        let (repo, password) = (project.0.join("repo"), project.0.join("restic.pw"));
        std::fs::write(&password, "a test repository password\n").unwrap();
        for d in ["photos", "scratch"] {
            std::fs::create_dir_all(project.0.join(d)).unwrap();
        }
        let path = |p: &Path| p.to_string_lossy().into_owned();
        stack.env.push(("TREES_SCRATCH".into(), path(&project.0.join("scratch"))));
        stack.env.push(("TREES_REPO".into(), path(&repo)));
        stack.env.push(("TREES_PASSWORD".into(), path(&password)));
        stack.unset.extend(["RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY"].map(String::from));
        let backups = TempDir::new(&format!("{name}-backups"));
        Bed { stack, project, repo, password, backups }
    }

    fn restic(&self, args: &[&str]) -> String {
        let out = Command::new("restic")
            .args(args)
            .env("RESTIC_REPOSITORY", &self.repo)
            .env("RESTIC_PASSWORD_FILE", &self.password)
            .output()
            .unwrap();
        assert!(out.status.success(), "restic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn raw_bytes(&self) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.restic(&["stats", "--mode", "raw-data", "--json"])).unwrap();
        v["total_size"].as_u64().unwrap()
    }

    /// `backup --push vault --no-keep-local --all`: its stderr.
    fn backup(&self) -> String {
        let dir = self.backups.s();
        let args = ["backup", "--push", "vault", "--no-keep-local", "--all", "--yes", "--output-dir", dir];
        let (ok, _, err) = self.stack.xtask(&args);
        assert!(ok, "{err}");
        err
    }

    fn archives(&self) -> serde_json::Value {
        self.stack.xtask_json(&["backups", "--remote", "vault", "--json"])
    }

    /// Every entry below the three trees: name, mode, owner, size, mtime, type, links, target,
    /// content digest.
    fn state(&self) -> String {
        let media = on_volume(&self.stack.volume("media"), Access::ReadOnly, &format!("cd /v && {LISTING}"));
        let host = |d: &str| {
            let dir = self.project.0.join(d);
            let out = Command::new("sh").args(["-c", &format!("cd \"$1\" && {LISTING}"), "_"]).arg(&dir).output();
            String::from_utf8(out.unwrap().stdout).unwrap()
        };
        // (The scratch volume, a bind by mount options, is compared in the pulled archive: a
        // restore writes a volume's `_data`, which such a volume does not use.)
        format!("media:\n{media}\nphotos:\n{}", host("photos"))
    }
}

/// A listing both busybox and coreutils print the same way.
const LISTING: &str = "find . | sort | while IFS= read -r p; do \
     s=$(stat -c '%n|%a|%u|%g|%s|%Y|%F|%h' \"$p\"); h=-; \
     if [ -L \"$p\" ]; then h=$(readlink \"$p\"); elif [ -f \"$p\" ]; then h=$(sha256sum < \"$p\" | cut -c1-16); fi; \
     echo \"$s|$h\"; done";

/// Files with every attribute the round trip must keep, in `dir` (a shell path).
const SEED: &str = "cd \"$1\" && mkdir -p 'sub dir/deeper' && head -c 300000 /dev/urandom > 'sub dir/photo 1.jpg' \
    && echo hello > ünïcode.txt && chmod 0640 ünïcode.txt && chown 33:44 ünïcode.txt \
    && ln ünïcode.txt hard-link && ln -s ../../etc/passwd out-link && ln -s 'sub dir/photo 1.jpg' in-link \
    && echo dash > ./-leading && printf x > \"$(printf 'new\\nline')\" && chmod 0750 'sub dir' \
    && touch -d '2024-02-03 04:05:06' 'sub dir/photo 1.jpg' ünïcode.txt 'sub dir/deeper'";

fn seed(bed: &Bed) {
    on_volume(&bed.stack.volume("media"), Access::Write, &SEED.replace("\"$1\"", "/v"));
    for d in ["photos", "scratch"] {
        let ok = Command::new("sh").args(["-c", SEED, "_"]).arg(bed.project.0.join(d)).status().unwrap();
        assert!(ok.success());
    }
}

#[test]
fn a_tree_snapshot_round_trips_volumes_and_binds_and_the_next_adds_only_what_changed() {
    if !ready() {
        return;
    }
    let bed = Bed::new("trees");
    bed.stack.xtask_ok(&["up"]);
    seed(&bed);
    // 8 MiB that stay the same, so the second backup has something to skip.
    let big = bed.project.0.join("photos/big.bin");
    assert!(Command::new("sh")
        .args(["-c", "head -c 8388608 /dev/urandom > \"$1\"", "_"])
        .arg(&big)
        .status()
        .unwrap()
        .success());

    let err = bed.backup();
    let media_at = format!("{}-media: read by restic as a file tree at /", bed.stack.project);
    assert!(err.contains(&media_at), "the volume is read at its mountpoint: {err}");
    assert!(err.contains("binds/") && err.contains("photos"), "{err}");
    let scratch = format!("{}-scratch: in the stream form", bed.stack.project);
    assert!(err.contains(&scratch), "a volume with mount options falls back to the stream: {err}");
    let listed = bed.archives();
    assert_eq!(listed.as_array().unwrap().len(), 1, "one archive, its trees a part of it: {listed}");
    assert_eq!(listed[0]["complete"], true, "{listed}");
    assert_eq!(listed[0]["trees"].as_str().map(str::len), Some(64), "{listed}");

    // A second backup with one new file of 1 MiB adds about its bytes, not the 8 MiB again.
    let first = bed.raw_bytes();
    let new = bed.project.0.join("photos/new.bin");
    assert!(Command::new("sh")
        .args(["-c", "head -c 1048576 /dev/urandom > \"$1\"", "_"])
        .arg(&new)
        .status()
        .unwrap()
        .success());
    let err = bed.backup();
    assert!(err.contains("unchanged files skipped"), "the previous trees were the parent: {err}");
    let added = bed.raw_bytes() - first;
    eprintln!("second backup added {added} bytes (1 MiB new file)");
    // Besides the file: the record's stream (metadata, sums, and the chunk of the stream-form
    // volume's 300 kB photo that the changed metadata shares), and restic's trees.
    assert!((1 << 20..(1 << 20) + (512 << 10)).contains(&added), "added {added} bytes for a 1 MiB file");
    let before = bed.state();

    // Pulled: one archive holding the trees under their volumes' prefixes beside the
    // stream-form volume, that verifies.
    let pulled = bed.stack.xtask_ok(&["pull", "--from", "vault", "--latest", "--output-dir", bed.backups.s()]);
    let archive = std::fs::read_dir(&bed.backups.0).unwrap().flatten().map(|e| e.path()).find(|p| {
        p.file_name().unwrap().to_string_lossy().starts_with("full_backup_") && !p.to_string_lossy().ends_with(".sig")
    });
    let archive = archive.unwrap_or_else(|| panic!("pull wrote no archive: {pulled}"));
    let names: Vec<String> = load(&archive).iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
    for v in ["media", "scratch"] {
        let photo = format!("volumes/{}-{v}/sub dir/photo 1.jpg", bed.stack.project);
        assert!(names.contains(&photo), "{photo} in {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("binds/") && n.ends_with("/new.bin")), "{names:?}");
    bed.stack.xtask_ok(&["verify", archive.to_str().unwrap(), "--output-dir", bed.backups.s()]);
    std::fs::remove_file(&archive).unwrap();

    // Everything gone: the stack's volumes, and the bind's files changed.
    bed.stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING"]);
    for d in ["photos", "scratch"] {
        let dir = bed.project.0.join(d);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
    }
    std::fs::write(bed.project.0.join("photos/stray"), "not in the backup").unwrap();
    bed.stack.xtask_ok(&["verify", "--remote", "vault", "--latest", "--output-dir", bed.backups.s()]);
    bed.stack.xtask_ok(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", bed.backups.s()]);
    assert_eq!(bed.state(), before, "content, modes, owners, mtimes, links and odd names came back");
}

#[test]
fn a_forged_tree_or_an_incomplete_record_is_never_used() {
    if !ready() {
        return;
    }
    let bed = Bed::new("trees-forged");
    bed.stack.xtask_ok(&["up"]);
    seed(&bed);
    bed.backup();
    let listed = bed.archives();
    let (record, tree) = (listed[0]["snapshot"].as_str().unwrap(), listed[0]["trees"].as_str().unwrap());
    let before = bed.state();

    // Someone with the password backs up a tree with a device node at the same paths and points
    // the record at it.
    let photos = bed.project.0.join("photos");
    let forged_tree = forge_trees(&bed, record, tree);
    assert_ne!(forged_tree, tree);
    std::fs::write(photos.join("marker"), "live data").unwrap();
    let before_live = bed.state();
    let (ok, _, err) =
        bed.stack.xtask(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", bed.backups.s()]);
    assert!(!ok, "a forged tree is refused: {err}");
    assert!(err.contains("null"), "the device node is named: {err}");
    // (The bind's own directory gets a new mtime: the restore's staging inside it came and went,
    // as for any refused restore of a bind.)
    let entries = |s: String| s.lines().filter(|l| !l.starts_with(".|")).collect::<Vec<_>>().join("\n");
    assert_eq!(entries(bed.state()), entries(before_live), "nothing changed");
    std::fs::remove_file(photos.join("marker")).unwrap();
    assert_eq!(entries(bed.state()), entries(before));

    // The record without its completion tag: INCOMPLETE, never the latest, never restored.
    let listed = bed.archives();
    let record = listed[0]["snapshot"].as_str().unwrap().to_string();
    let tags: serde_json::Value = serde_json::from_str(&bed.restic(&["snapshots", "--json", &record])).unwrap();
    let complete =
        tags[0]["tags"].as_array().unwrap().iter().find_map(|t| t.as_str().filter(|t| t.starts_with("tar-sha256=")));
    bed.restic(&["tag", "--remove", complete.unwrap(), &record]);
    let listed = bed.archives();
    assert_eq!(listed[0]["complete"], false, "{listed}");
    let (ok, out, _) = bed.stack.xtask(&["backups", "--remote", "vault"]);
    assert!(ok && out.contains("INCOMPLETE"), "{out}");
    let (ok, _, err) =
        bed.stack.xtask(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", bed.backups.s()]);
    assert!(!ok && err.contains("no complete archive"), "{err}");
}

/// What someone holding the repository's password can do: a trees snapshot with a device node
/// in the bind, at the same paths and with the same tags as the genuine part, and the record
/// `record` re-tagged to name its tree instead of `tree`. Returns the forged tree's id.
fn forge_trees(bed: &Bed, record: &str, tree: &str) -> String {
    let parts: serde_json::Value =
        serde_json::from_str(&bed.restic(&["snapshots", "--json", "--tag", "part=trees"])).unwrap();
    let part = &parts[0];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
    };
    let photos = bed.project.0.join("photos");
    assert!(Command::new("mknod").arg(photos.join("null")).args(["c", "1", "3"]).status().unwrap().success());
    let mut args = vec!["backup".to_string(), "--host".into(), "xtask".into(), "--json".into(), "--quiet".into()];
    for t in strings(&part["tags"]) {
        args.extend(["--tag".to_string(), t]);
    }
    args.extend(strings(&part["paths"]));
    let summary = bed.restic(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::remove_file(photos.join("null")).unwrap();
    let line = summary.lines().rev().find(|l| l.contains("snapshot_id")).unwrap();
    let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["snapshot_id"].as_str().unwrap().to_string();
    let forged: serde_json::Value = serde_json::from_str(&bed.restic(&["snapshots", "--json", &id])).unwrap();
    let forged_tree = forged[0]["tree"].as_str().unwrap().to_string();
    bed.restic(&["tag", "--remove", &format!("trees={tree}"), "--add", &format!("trees={forged_tree}"), record]);
    forged_tree
}

#[test]
fn with_sign_set_a_record_pointed_at_another_tree_is_not_trusted() {
    if !ready() {
        return;
    }
    let bed = Bed::signed("trees-signed");
    bed.stack.xtask_ok(&["up"]);
    seed(&bed);
    bed.backup();
    let listed = bed.archives();
    assert!(listed[0]["untrusted"].is_null(), "this host's own tree snapshot is signed: {listed}");
    let (record, tree) = (listed[0]["snapshot"].as_str().unwrap(), listed[0]["trees"].as_str().unwrap());
    forge_trees(&bed, record, tree);
    let listed = bed.archives();
    let why = listed[0]["untrusted"].as_str().unwrap_or_default();
    assert!(why.contains("signature is not valid"), "the signature names the genuine tree: {listed}");
    let (ok, _, err) =
        bed.stack.xtask(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", bed.backups.s()]);
    assert!(!ok && err.contains("no complete archive"), "never the latest: {err}");
}

/// `prune --remote` forgets a tree-form archive with its trees snapshot, keeps the newer one's,
/// and what is kept still reads whole.
#[test]
fn prune_forgets_a_tree_archive_together_with_its_trees() {
    if !ready() {
        return;
    }
    let bed = Bed::new("trees-prune");
    bed.stack.xtask_ok(&["up"]);
    seed(&bed);
    bed.backup();
    // Archives are named by the second (with no local file, nothing else tells two apart): the
    // next one in a second of its own.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(bed.project.0.join("photos/later.txt"), "later").unwrap();
    bed.backup();
    let listed = bed.archives();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let newer_tree = listed[0]["trees"].as_str().unwrap().to_string();
    let keep_one = ["--keep-last", "1", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0"];
    let out = bed.stack.xtask_ok(&[&["prune", "--remote", "vault"][..], &keep_one].concat());
    assert!(out.contains("the file trees of an archive forgotten"), "{out}");
    let left: serde_json::Value = serde_json::from_str(&bed.restic(&["snapshots", "--json"])).unwrap();
    let left = left.as_array().unwrap();
    assert_eq!(left.len(), 2, "the newer record and its trees: {left:?}");
    let part = left.iter().find(|s| s["tags"].as_array().unwrap().iter().any(|t| t == "part=trees")).unwrap();
    assert_eq!(part["tree"].as_str(), Some(newer_tree.as_str()), "the kept archive's own trees");
    bed.stack.xtask_ok(&["verify", "--remote", "vault", "--latest", "--output-dir", bed.backups.s()]);
}

/// The default `backup --push VAULT` keeps its local archive whole (every volume and bind in
/// its stream, verified, its own index) and still pushes the trees form: the repository's record
/// names the trees, restic skips what did not change on the next night, and a restore from the
/// repository brings back what the local archive holds.
#[test]
fn a_backup_that_keeps_its_local_archive_pushes_the_trees_too() {
    if !ready() {
        return;
    }
    let bed = Bed::new("trees-local");
    bed.stack.xtask_ok(&["up"]);
    seed(&bed);
    let dir = bed.backups.s();
    let (ok, _, err) = bed.stack.xtask(&["backup", "--push", "vault", "--all", "--yes", "--output-dir", dir]);
    assert!(ok, "{err}");
    let media_at = format!("{}-media: read by restic as a file tree at /", bed.stack.project);
    assert!(err.contains(&media_at), "the tree form although a local archive is kept: {err}");
    let listed = bed.archives();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["complete"], true, "{listed}");
    assert_eq!(listed[0]["trees"].as_str().map(str::len), Some(64), "{listed}");

    // The local archive holds every volume and bind itself, and verifies.
    let local = std::fs::read_dir(&bed.backups.0).unwrap().flatten().map(|e| e.path()).find(|p| {
        p.file_name().unwrap().to_string_lossy().starts_with("full_backup_") && !p.to_string_lossy().ends_with(".sig")
    });
    let local = local.unwrap_or_else(|| panic!("no local archive in {}", bed.backups.s()));
    assert_eq!(listed[0]["file"].as_str(), local.file_name().unwrap().to_str(), "the same name in both places");
    let names: Vec<String> = load(&local).iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
    for v in ["media", "scratch"] {
        let photo = format!("volumes/{}-{v}/sub dir/photo 1.jpg", bed.stack.project);
        assert!(names.contains(&photo), "{photo} in the local archive: {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("binds/") && n.ends_with("/photo 1.jpg")), "{names:?}");
    bed.stack.xtask_ok(&["verify", local.to_str().unwrap(), "--output-dir", dir]);

    // The next backup: restic's parent is the first one's trees.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(bed.project.0.join("photos/later.txt"), "later").unwrap();
    let (ok, _, err) = bed.stack.xtask(&["backup", "--push", "vault", "--all", "--yes", "--output-dir", dir]);
    assert!(ok && err.contains("unchanged files skipped"), "{err}");
    let before = bed.state();

    bed.stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING"]);
    let photos = bed.project.0.join("photos");
    std::fs::remove_dir_all(&photos).unwrap();
    std::fs::create_dir_all(&photos).unwrap();
    bed.stack.xtask_ok(&["restore", "--remote", "vault", "--latest", "--yes", "--output-dir", dir]);
    assert_eq!(bed.state(), before, "the repository's trees bring back what was there");

    // `--only media`: the volume comes back, the bind (whose tree restic was not asked for) keeps
    // what it has now.
    on_volume(&bed.stack.volume("media"), Access::Write, "rm -rf '/v/sub dir' && echo changed > /v/ünïcode.txt");
    std::fs::write(photos.join("after.txt"), "written after the backup").unwrap();
    let only = ["restore", "--remote", "vault", "--latest", "--only", "media", "--yes", "--no-safety-backup"];
    bed.stack.xtask_ok(&[&only[..], &["--output-dir", dir]].concat());
    let now = bed.state();
    let media = |s: &str| s.split("photos:").next().unwrap().to_string();
    assert_eq!(media(&now), media(&before), "the volume asked for came back");
    assert!(now.contains("./after.txt|"), "the bind not asked for was left alone: {now}");
}

//! Attacks on the restic tier's tree form through the binary (the pure parts are attacked in
//! unit tests: `archive::trees`, `engine::restic`, `files`). Each test names the property it
//! checks; those that showed a problem say so in their doc comment.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

const COMPOSE: &str = r#"name: attack7
services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - media:/media
      - ./photos:/photos
volumes:
  media:
    name: ${ATTACK7_PREFIX}-media
    labels: {xtask.role: uploads, xtask.priority: critical}
x-xtask:
  remotes:
    vault: {url: "restic:${ATTACK7_REPO}", password_file: "${ATTACK7_PASSWORD}"}
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

/// The test's stack (a volume and a bind, both read as trees), its repository, its backups.
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

    fn with_compose(name: &str, compose: &str) -> Bed {
        let (project, mut stack) = stack_from(name, compose, "ATTACK7_PREFIX");
        let (repo, password) = (project.0.join("repo"), project.0.join("restic.pw"));
        std::fs::write(&password, "a test repository password\n").unwrap();
        std::fs::create_dir_all(project.0.join("photos")).unwrap();
        std::fs::write(project.0.join("photos/photo.jpg"), vec![7u8; 200_000]).unwrap();
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        stack.env.push(("ATTACK7_REPO".into(), path(&repo)));
        stack.env.push(("ATTACK7_PASSWORD".into(), path(&password)));
        stack.unset.extend(["RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_REPOSITORY"].map(String::from));
        let backups = TempDir::new(&format!("{name}-backups"));
        Bed { stack, project, repo, password, backups }
    }

    /// With `x-xtask.sign`: a key of its own, allowed, and used to sign.
    fn signed(name: &str) -> Bed {
        let keys = TempDir::new(&format!("{name}-keys"));
        let (key, public) = ssh_keypair(&keys, "host");
        let compose = format!("{COMPOSE}  sign: {{allowed_signers: [\"{public}\"]}}\n");
        let mut bed = Bed::with_compose(name, &compose);
        let kept = bed.project.0.join("signing-key");
        std::fs::copy(&key, &kept).unwrap();
        bed.stack.env.push(("XTASK_SIGNING_KEY".into(), kept.to_string_lossy().into_owned()));
        bed
    }

    /// `restic ARGS` on the test's repository, `stdin` as its input; its stdout.
    fn restic(&self, args: &[&str], stdin: &[u8]) -> String {
        let mut child = Command::new("restic")
            .args(args)
            .env("RESTIC_REPOSITORY", &self.repo)
            .env("RESTIC_PASSWORD_FILE", &self.password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "restic {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.restic(&["snapshots", "--json"], b""))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `backup --push vault --no-keep-local --all`: its stderr.
    fn backup(&self) -> String {
        let dir = self.backups.s();
        let args = ["backup", "--push", "vault", "--no-keep-local", "--all", "--yes", "--output-dir", dir];
        let (ok, _, err) = self.stack.xtask(&args);
        assert!(ok, "{err}");
        err
    }
}

fn tags(s: &serde_json::Value) -> Vec<String> {
    s["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
}

fn is_part(s: &serde_json::Value) -> bool {
    tags(s).iter().any(|t| t == "part=trees")
}

fn archive_of(s: &serde_json::Value) -> String {
    tags(s).iter().find_map(|t| t.strip_prefix("archive=").map(String::from)).unwrap()
}

/// Finding 5: without `x-xtask.sign`, the parent of the next trees snapshot was the newest
/// complete archive's trees, whoever wrote them: someone with the repository's password added
/// an archive (a record with any digest, a trees snapshot at the same paths) and this host's
/// next genuine snapshot was compared with it (restic takes a file whose size, mtime, inode
/// and ctime match the parent's node from the parent, content and all: a forged node with the
/// genuine metadata and other content would be carried into this host's own archive). The
/// parent is now only a tree this host pushed itself (its private record) or, under sign, one
/// whose archive is signed.
#[test]
fn the_parent_of_the_trees_is_never_a_snapshot_this_host_did_not_push() {
    if !ready() {
        return;
    }
    let bed = Bed::new("attack7-parent");
    bed.stack.xtask_ok(&["up"]);
    bed.backup();
    let first = bed.snapshots();
    let genuine_part = first.iter().find(|s| is_part(s)).unwrap().clone();
    let genuine = archive_of(&genuine_part);

    // Someone with the password: a complete archive a second newer, its trees at the same paths.
    let forged = shifted(&genuine, 1);
    let mut args: Vec<String> = ["backup", "--host", "xtask", "--json", "--quiet"].map(String::from).to_vec();
    for t in tags(&genuine_part).iter().filter(|t| !t.starts_with("archive=")) {
        args.extend(["--tag".to_string(), t.clone()]);
    }
    args.extend(["--tag".to_string(), format!("archive={forged}")]);
    let paths = genuine_part["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string());
    args.extend(paths);
    bed.restic(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    let forged_part = bed.snapshots().into_iter().find(|s| is_part(s) && archive_of(s) == forged).unwrap();
    let forged_tree = forged_part["tree"].as_str().unwrap().to_string();
    let record_tags = [
        "xtask".to_string(),
        format!("project={}", bed.stack.project),
        "kind=full".into(),
        format!("archive={forged}"),
        format!("tar-sha256={}", "ab".repeat(32)),
        format!("trees={forged_tree}"),
    ];
    let stored = forged.trim_end_matches(".zst").trim_end_matches(".gz").to_string();
    let mut record: Vec<String> =
        ["backup", "--stdin", "--stdin-filename", &stored, "--host", "xtask", "--quiet"].map(String::from).to_vec();
    for t in &record_tags {
        record.extend(["--tag".to_string(), t.clone()]);
    }
    bed.restic(&record.iter().map(String::as_str).collect::<Vec<_>>(), b"not an archive");
    let listed = bed.stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    assert_eq!(listed[0]["file"].as_str(), Some(forged.as_str()), "the forged archive is the newest: {listed}");
    assert_eq!(listed[0]["complete"], true, "{listed}");

    // Archives are named by the second: the next one in a second of its own.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(bed.project.0.join("photos/later.txt"), "later").unwrap();
    let err = bed.backup();
    let next = bed
        .snapshots()
        .into_iter()
        .find(|s| is_part(s) && archive_of(s) != genuine && archive_of(s) != forged)
        .unwrap_or_else(|| panic!("no new trees snapshot: {err}"));
    assert_ne!(next["parent"], forged_part["id"], "the forged trees were the parent: {err}");
    assert_eq!(next["parent"], genuine_part["id"], "this host's own trees are the parent: {err}");
}

/// The record `id` (archive `file`) again, its metadata changed by `edit`, pushed as the
/// archive's only record (the genuine one forgotten) with its digest and `trees=tree`: what
/// someone with the password (no `x-xtask.sign`) can write.
fn rewrite_record(bed: &Bed, (id, file, tree): (&str, &str, &str), edit: &dyn Fn(&mut serde_json::Value)) {
    use sha2::Digest;
    let stored = file.trim_end_matches(".zst").trim_end_matches(".gz").to_string();
    let dump = Command::new("restic")
        .args(["dump", id, &format!("/{stored}")])
        .env("RESTIC_REPOSITORY", &bed.repo)
        .env("RESTIC_PASSWORD_FILE", &bed.password)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let mut out = tar::Builder::new(Vec::new());
    for e in tar::Archive::new(&dump.stdout[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let (path, mut header) = (e.path().unwrap().into_owned(), e.header().clone());
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path.to_str() == Some("metadata.json") {
            let mut meta: serde_json::Value = serde_json::from_slice(&data).unwrap();
            edit(&mut meta);
            data = serde_json::to_vec_pretty(&meta).unwrap();
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        out.append(&header, &data[..]).unwrap();
    }
    let bytes = out.into_inner().unwrap();
    let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    bed.restic(&["forget", id], b"");
    let mut args: Vec<String> =
        ["backup", "--stdin", "--stdin-filename", &stored, "--host", "xtask", "--quiet"].map(String::from).to_vec();
    let tags = [
        "xtask".to_string(),
        format!("project={}", bed.stack.project),
        "kind=full".into(),
        format!("archive={file}"),
        format!("tar-sha256={digest}"),
        format!("trees={tree}"),
    ];
    for t in tags {
        args.extend(["--tag".to_string(), t]);
    }
    bed.restic(&args.iter().map(String::as_str).collect::<Vec<_>>(), &bytes);
}

/// Finding 6: `restore --in-place --only VOLUME` verified the archive before its plan chose its
/// volumes, through a second handle made before `only_volumes`: every tree of the snapshot was
/// restored into $TMPDIR for the verification and again for each volume filled, and the room
/// check demanded room for all of them. Here the bind's tree claims more bytes than any disk
/// holds: a restore of the volume alone must not need room for it, in place or not.
#[test]
fn an_in_place_restore_of_one_volume_reads_only_its_tree() {
    if !ready() {
        return;
    }
    let bed = Bed::new("attack7-inplace");
    bed.stack.xtask_ok(&["up"]);
    on_volume(&bed.stack.volume("media"), Access::Write, "echo genuine > /v/a.txt");
    bed.backup();
    let listed = bed.stack.xtask_json(&["backups", "--remote", "vault", "--json"]);
    let (id, file, tree) = (listed[0]["snapshot"].as_str(), listed[0]["file"].as_str(), listed[0]["trees"].as_str());
    let huge = |meta: &mut serde_json::Value| {
        for v in meta["volumes"].as_array_mut().unwrap() {
            if v["name"].as_str().unwrap().starts_with("binds/") {
                v["size_bytes"] = serde_json::json!(1u64 << 60);
            }
        }
    };
    rewrite_record(&bed, (id.unwrap(), file.unwrap(), tree.unwrap()), &huge);
    on_volume(&bed.stack.volume("media"), Access::Write, "echo changed > /v/a.txt");
    let restore = ["restore", "--remote", "vault", "--latest", "--only", "media", "--yes", "--no-safety-backup"];
    let dir = ["--output-dir", bed.backups.s()];
    let (ok, _, err) = bed.stack.xtask(&[&restore[..], &["--in-place"], &dir].concat());
    assert!(ok, "an in-place restore of the volume alone needs no room for the bind's tree: {err}");
    let read = on_volume(&bed.stack.volume("media"), Access::ReadOnly, "cat /v/a.txt");
    assert_eq!(read.trim(), "genuine");
    on_volume(&bed.stack.volume("media"), Access::Write, "echo changed > /v/a.txt");
    bed.stack.xtask_ok(&[&restore[..], &dir].concat());
    let read = on_volume(&bed.stack.volume("media"), Access::ReadOnly, "cat /v/a.txt");
    assert_eq!(read.trim(), "genuine", "the one pass too");
}

/// A trees snapshot at the same paths with the same tags as `part` (archive `archive`), holding
/// a file the genuine one does not: its id and tree.
fn forge_part(bed: &Bed, part: &serde_json::Value, archive: &str) -> (String, String) {
    let planted = bed.project.0.join("photos/planted.txt");
    std::fs::write(&planted, "forged").unwrap();
    let mut args: Vec<String> = ["backup", "--host", "xtask", "--json", "--quiet"].map(String::from).to_vec();
    for t in tags(part).iter().filter(|t| !t.starts_with("archive=")) {
        args.extend(["--tag".to_string(), t.clone()]);
    }
    args.extend(["--tag".to_string(), format!("archive={archive}")]);
    args.extend(part["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()));
    let summary = bed.restic(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    std::fs::remove_file(&planted).unwrap();
    let line = summary.lines().rev().find(|l| l.contains("snapshot_id")).unwrap();
    let id = serde_json::from_str::<serde_json::Value>(line).unwrap()["snapshot_id"].as_str().unwrap().to_string();
    let forged = bed.snapshots().into_iter().find(|s| s["id"].as_str().unwrap().starts_with(&id)).unwrap();
    (forged["id"].as_str().unwrap().to_string(), forged["tree"].as_str().unwrap().to_string())
}

/// Held: under `x-xtask.sign`, a second trees snapshot of a signed archive (same name, same
/// paths, a planted file) is neither read by a restore (the signed tree id picks the genuine
/// one) nor the next push's parent; with the genuine one forgotten, the archive is refused.
#[test]
fn with_sign_a_second_trees_snapshot_of_an_archive_is_never_used() {
    if !ready() {
        return;
    }
    let bed = Bed::signed("attack7-signed");
    bed.stack.xtask_ok(&["up"]);
    bed.backup();
    let genuine_part = bed.snapshots().into_iter().find(is_part).unwrap();
    let archive = archive_of(&genuine_part);
    let (forged_id, forged_tree) = forge_part(&bed, &genuine_part, &archive);
    assert_ne!(forged_tree, genuine_part["tree"].as_str().unwrap());

    let dir = ["--output-dir", bed.backups.s()];
    bed.stack.xtask_ok(&[&["pull", "--from", "vault", &archive][..], &dir].concat());
    let pulled = bed.backups.0.join(&archive);
    let names: Vec<String> = load(&pulled).iter().map(|e| String::from_utf8_lossy(&e.name).into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with("planted.txt")), "the genuine trees were read: {names:?}");
    std::fs::remove_file(&pulled).unwrap();

    std::thread::sleep(std::time::Duration::from_millis(1100));
    let err = bed.backup();
    let next = bed.snapshots().into_iter().find(|s| is_part(s) && archive_of(s) != archive).unwrap();
    assert_ne!(next["parent"].as_str(), Some(forged_id.as_str()), "{err}");
    assert_eq!(next["parent"], genuine_part["id"], "the signed archive's own trees are the parent: {err}");

    bed.restic(&["forget", genuine_part["id"].as_str().unwrap()], b"");
    let (ok, _, err) = bed.stack.xtask(&[&["verify", "--remote", "vault", &archive][..], &dir].concat());
    assert!(!ok && err.contains("no snapshot of the repository holds its trees"), "{err}");
}

const TWO_BINDS: &str = r#"name: attack7paths
services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - ./one:/one
      - ./two:/two
x-xtask: {}
"#;

/// `script`'s shell command for `args`, each single-quoted.
fn quoted(args: &[String]) -> String {
    args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect::<Vec<_>>().join(" ")
}

/// `xtask ARGS` of `stack` at a terminal (`script`): once it asks for confirmation,
/// `before_yes`, then "yes". Whether it succeeded, and what it printed.
fn confirmed_after(stack: &TestStack, args: &[&str], before_yes: &dyn Fn()) -> (bool, String) {
    let mut all = vec![env!("CARGO_BIN_EXE_xtask").to_string(), "--project-name".into(), stack.project.clone()];
    for f in &stack.files {
        all.extend(["--file".to_string(), f.to_string_lossy().into_owned()]);
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &quoted(&all), "/dev/null"]).envs(stack.env.iter().map(|(k, v)| (k, v)));
    for v in &stack.unset {
        cmd.env_remove(v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<u8>();
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for b in std::io::Read::bytes(&mut stdout).map_while(Result::ok) {
            let _ = tx.send(b);
        }
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("Type yes") {
        match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(b) => seen.push(b),
            Err(_) => panic!("no confirmation asked: {}", String::from_utf8_lossy(&seen)),
        }
    }
    before_yes();
    child.stdin.as_mut().unwrap().write_all(b"yes\n").unwrap();
    let status = child.wait().unwrap();
    seen.extend(rx.try_iter());
    (status.success(), String::from_utf8_lossy(&seen).into_owned())
}

/// `archive` rewritten in place as a forgery of its first read: only its metadata, with the
/// binds at `one` and `two` (host paths) swapped (each bind's key is its path). The archive
/// name of the bind at `one`.
fn swap_binds_in_place(archive: &std::path::Path, one: &str, two: &str) -> String {
    let first = load(archive).into_iter().next().unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&first.data).unwrap();
    let at = |p: &str| meta["volumes"].as_array().unwrap().iter().position(|v| v["bind"].as_str() == Some(p));
    let (a, b) = (at(one).unwrap(), at(two).unwrap());
    let one_name = meta["volumes"][a]["name"].as_str().unwrap().to_string();
    for field in ["bind", "key", "bind_mounts"] {
        let (x, y) = (meta["volumes"][a][field].clone(), meta["volumes"][b][field].clone());
        meta["volumes"][a][field] = y;
        meta["volumes"][b][field] = x;
    }
    let json = serde_json::to_vec_pretty(&meta).unwrap();
    let mut forged = tar::Builder::new(compressor(archive));
    let mut header = first.header.clone();
    header.set_size(json.len() as u64);
    header.set_cksum();
    forged.append(&header, &json[..]).unwrap();
    forged.into_inner().unwrap().flush().unwrap();
    one_name
}

/// Finding 7: `restore --path` made its plan (which bind of the stack each archived bind is
/// written into) from the metadata of a first read, then verified a second read and never
/// compared the two: an archive whose bytes changed between them (a remote object served
/// twice, a file rewritten in place) had its verified content written where other metadata
/// said, here bind `one`'s file into bind `two`. Under `x-xtask.sign` the signature covers the
/// verified read only. A path restore now refuses a metadata that is not the verified one.
#[test]
fn a_path_restore_refuses_an_archive_whose_metadata_changed_since_it_was_read() {
    if !engine() {
        return;
    }
    let (project, stack) = stack_from("attack7-paths", TWO_BINDS, "ATTACK7_PREFIX");
    for (d, text) in [("one", "ONE"), ("two", "TWO")] {
        std::fs::create_dir_all(project.0.join(d)).unwrap();
        std::fs::write(project.0.join(d).join("f.txt"), text).unwrap();
    }
    stack.xtask_ok(&["up"]);
    let backups = TempDir::new("attack7-paths-backups");
    stack.xtask_ok(&["backup", "--output-dir", backups.s()]);
    let archive = std::fs::read_dir(&backups.0).unwrap().flatten().map(|e| e.path()).find(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name.starts_with("full_backup_") && name.ends_with(".tar.zst")
    });
    let archive = archive.expect("an archive");
    let genuine = std::fs::read(&archive).unwrap();
    let host = |d: &str| project.0.join(d).to_string_lossy().into_owned();
    let one_name = swap_binds_in_place(&archive, &host("one"), &host("two"));

    let path = format!("{one_name}/f.txt");
    let restore = ["restore", archive.to_str().unwrap(), "--path", &path, "--output-dir", backups.s()];
    // The second read finds the genuine bytes again (the same file, rewritten in place).
    let (ok, out) = confirmed_after(&stack, &restore, &|| {
        std::fs::OpenOptions::new().write(true).truncate(true).open(&archive).unwrap().write_all(&genuine).unwrap();
    });
    let read = |d: &str| std::fs::read_to_string(project.0.join(d).join("f.txt")).unwrap();
    assert_eq!((read("one"), read("two")), ("ONE".into(), "TWO".into()), "nothing crossed over: {out}");
    assert!(!ok && out.contains("changed since its metadata was read"), "{out}");
}

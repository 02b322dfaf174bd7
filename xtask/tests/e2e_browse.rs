//! Looking into archives on the live engine: `ls`, `cat` and `diff` over a zstd and a gzip
//! backup of the sample stack (the output says how each was read), `cat` giving exactly the
//! content each archive holds, `diff` naming exactly the files changed, added and removed and
//! the row counts, `restore --path … --to DIR` bringing deleted files back into a new private
//! directory (never into a non-empty one), and into the live volume (only those paths change,
//! a failure after the swap renames the old ones back, the undo restores them); crafted archives (a digest that does not match, a
//! name outside its volume, a path through a symbolic link) refused by every command, nothing
//! written.
#![allow(clippy::disallowed_methods)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A clear sample backup with `compression`: its path.
fn backup(stack: &TestStack, dir: &TempDir, compression: &str) -> String {
    let out = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--compression", compression]);
    out["path"].as_str().unwrap().to_string()
}

fn sha256(data: &[u8]) -> String {
    format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(data))
}

/// `cat` through a pipe: the raw bytes.
fn cat(stack: &TestStack, archive: &str, path: &str) -> Vec<u8> {
    let (ok, out, err) = stack.xtask_bytes(&["cat", archive, path]);
    assert!(ok, "cat {archive} {path}: {err}");
    out
}

#[test]
fn ls_cat_diff_and_restore_into_a_directory_read_zstd_and_gzip_archives() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("browse");
    let dir = TempDir::new("browse");
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let media = stack.volume("backend-media");
    let before = backup(&stack, &dir, "zstd");
    let photo = on_volume(&media, Access::ReadOnly, "sha256sum '/v/sub dir/photo.bin' | cut -d' ' -f1");

    // ls: every entry, the path asked for, how it was read.
    // A zstd archive (format version 4) is read by its index, a gzip one sequentially.
    let (ok, listed, err) = stack.xtask(&["ls", &before]);
    assert!(ok && err.contains("read by its index"), "{err}");
    for line in [format!("{media}/upload.txt"), format!("{media}/sub dir/"), format!("{media}/sub dir/photo.bin")] {
        assert!(listed.lines().any(|l| l == line), "{line} in:\n{listed}");
    }
    assert!(listed.lines().any(|l| l.starts_with("databases/db/")), "{listed}");
    let long = stack.xtask_ok(&["ls", &before, &format!("{media}/upload.txt"), "--long"]);
    assert!(long.starts_with("file     0640    33:33") && long.trim_end().ends_with("/upload.txt"), "{long}");
    let json = stack.xtask_json(&["ls", "--latest", &format!("{media}/sub dir"), "--json", "--output-dir", dir.s()]);
    let names: Vec<&str> = json["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, [format!("{media}/sub dir"), format!("{media}/sub dir/photo.bin")]);
    assert_eq!(json["entries"][1]["sha256"].as_str().unwrap(), photo.trim());
    assert_eq!(json["access"], "indexed", "{json}");

    // cat: the bytes the archive holds.
    assert_eq!(cat(&stack, &before, &format!("{media}/upload.txt")), b"an upload\n");
    assert_eq!(sha256(&cat(&stack, &before, &format!("{media}/sub dir/photo.bin"))), photo.trim());
    let (ok, _, err) = stack.xtask(&["cat", &before, &format!("{media}/sub dir")]);
    assert!(!ok && err.contains("is a directory"), "{err}");
    let (ok, _, err) = stack.xtask(&["cat", &before, &format!("{media}/nothing")]);
    assert!(!ok && err.contains("holds no entry"), "{err}");

    // A change of each kind, then a gzip backup.
    let backend = format!("{}-backend-1", stack.project);
    let change =
        "echo changed > /app/media/upload.txt && echo new > /app/media/new.txt && rm '/app/media/sub dir/photo.bin'";
    docker_ok(&["exec", &backend, "sh", "-c", change]);
    psql(&format!("{}-db-1", stack.project), "app", "DELETE FROM items WHERE id > 250");
    let after = backup(&stack, &dir, "gzip:1");
    let (ok, _, err) = stack.xtask(&["ls", &after]);
    assert!(ok && err.contains("read sequentially") && err.contains("gzip"), "{err}");
    assert_eq!(cat(&stack, &after, &format!("{media}/upload.txt")), b"changed\n");

    // diff: exactly these files, and the rows.
    let d = stack.xtask_json(&["diff", &before, &after, "--json"]);
    let group = &d["volumes"][&media];
    assert_eq!(group["added"], serde_json::json!([format!("{media}/new.txt")]), "{d}");
    assert_eq!(group["removed"], serde_json::json!([format!("{media}/sub dir/photo.bin")]), "{d}");
    let changed: Vec<&str> = group["changed"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(changed, [format!("{media}/upload.txt")], "{d}");
    assert_eq!(group["changed"][0]["what"][0], "content");
    let app = d["databases"].as_array().unwrap().iter().find(|db| db["database"] == "app").unwrap();
    assert_eq!((app["rows_before"].as_u64(), app["rows_after"].as_u64()), (Some(500), Some(250)), "{d}");
    assert_eq!((&d["before"]["access"], &d["after"]["access"]), (&"indexed".into(), &"sequential".into()));
    let text = stack.xtask_ok(&["diff", &before, &after]);
    assert!(
        text.contains(&format!("  + {media}/new.txt")) && text.contains(&format!("  ~ {media}/upload.txt (content"))
    );

    // restore --path --to DIR: the deleted file and the old content back, in a private directory.
    let out = dir.0.join("restored");
    let to = out.to_str().unwrap();
    let paths = [format!("{media}/upload.txt"), format!("{media}/sub dir")];
    let dry = stack.xtask_ok(&["restore", &before, "--path", &paths[0], "--to", to, "--dry-run"]);
    assert!(dry.contains("would restore") && !out.exists(), "{dry}");
    stack.xtask_ok(&["restore", &before, "--path", &paths[0], "--path", &paths[1], "--to", to]);
    assert_eq!(std::fs::read(out.join(&media).join("upload.txt")).unwrap(), b"an upload\n");
    assert_eq!(sha256(&std::fs::read(out.join(&media).join("sub dir/photo.bin")).unwrap()), photo.trim());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!((mode(&out), mode(&out.join(&media).join("upload.txt"))), (0o700, 0o640));
    let mut found: Vec<String> = walk(&out);
    found.sort();
    assert_eq!(
        found,
        [
            media.clone(),
            format!("{media}/sub dir"),
            format!("{media}/sub dir/photo.bin"),
            format!("{media}/upload.txt")
        ]
    );
    // Never over what is there: a second restore into it is refused and changes nothing.
    let (ok, _, err) = stack.xtask(&["restore", &after, "--path", &paths[0], "--to", to]);
    assert!(!ok && err.contains("not empty"), "{err}");
    assert_eq!(std::fs::read(out.join(&media).join("upload.txt")).unwrap(), b"an upload\n");
    // The live volume was not touched by any of it.
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/upload.txt; ls '/v/sub dir'"), "changed\n");
    assert!(!dir.names().iter().any(|n| n.starts_with(".xtask-restore-")), "no staging left");
}

/// Every path below `root`, relative to it.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        let rel = p.file_name().unwrap().to_string_lossy().into_owned();
        out.push(rel.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p).into_iter().map(|r| format!("{rel}/{r}")));
        }
    }
    out
}

fn file(name: &str, data: &[u8]) -> Entry {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    Entry { header: h, name: name.as_bytes().to_vec(), link: None, data: data.to_vec() }
}

/// Inserts `e` after the last content entry: before the index (format version 4) or
/// `SHA256SUMS`.
fn insert_before_sums(entries: &mut Vec<Entry>, e: Entry) {
    let at = content_end(entries);
    entries.insert(at, e);
}

#[test]
fn crafted_archives_are_refused_by_ls_cat_diff_and_restore_into_a_directory() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("browse-craft");
    let dir = TempDir::new("browse-craft");
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let media = stack.volume("backend-media");
    let genuine = backup(&stack, &dir, "gzip:1");
    let escape = dir.0.join("escaped");
    let upload = format!("volumes/{media}/upload.txt");
    type Craft = Box<dyn Fn(&mut Vec<Entry>) -> bool>;
    let (m1, m2, e1, up) = (media.clone(), media.clone(), escape.clone(), upload.clone());
    let cases: Vec<(&str, Craft, &str)> = vec![
        (
            "digest",
            Box::new(move |es| {
                es.iter_mut().find(|e| e.name == up.as_bytes()).unwrap().data = b"forged\n".to_vec();
                false
            }),
            "checksum mismatch",
        ),
        (
            "outside",
            Box::new(move |es| {
                insert_before_sums(es, file(&format!("volumes/{m1}/../../escaped"), b"x"));
                true
            }),
            "'..'",
        ),
        (
            "absolute",
            Box::new(move |es| {
                insert_before_sums(es, file(e1.to_str().unwrap(), b"x"));
                true
            }),
            "absolute",
        ),
        (
            "through-link",
            Box::new(move |es| {
                let mut link = file(&format!("volumes/{m2}/ln"), b"");
                link.header.set_entry_type(tar::EntryType::Symlink);
                link.link = Some(b"/tmp".to_vec());
                insert_before_sums(es, link);
                insert_before_sums(es, file(&format!("volumes/{m2}/ln/escaped"), b"x"));
                true
            }),
            "not an earlier directory entry",
        ),
    ];
    for (name, craft, rule) in cases {
        let mut entries = load(Path::new(&genuine));
        let rewrite = craft(&mut entries);
        let forged = dir.0.join(format!("full_backup_20260101_00000{}_{name}.tar.gz", name.len() % 10));
        save(&forged, entries, rewrite);
        let forged = forged.to_str().unwrap();
        let to = dir.0.join(format!("to-{name}"));
        let runs: [Vec<&str>; 4] = [
            vec!["ls", forged],
            vec!["cat", forged, &upload[8..]],
            vec!["diff", &genuine, forged],
            vec!["restore", forged, "--path", &upload[8..], "--to", to.to_str().unwrap()],
        ];
        for args in runs {
            let (ok, out, err) = stack.xtask(&args);
            assert!(!ok && err.contains(rule), "{name}: {args:?} was not refused for {rule}: {err}");
            assert!(!out.contains("forged") && !out.contains("an upload"), "{name}: {args:?} printed {out}");
        }
        assert!(
            !to.exists() && !escape.exists() && !Path::new("/tmp/escaped").exists(),
            "{name}: something was written"
        );
        assert!(!dir.names().iter().any(|n| n.starts_with(".xtask-restore-")), "{name}: a staging was left");
    }
    // The genuine archive still reads.
    assert_eq!(cat(&stack, &genuine, &upload[8..]), b"an upload\n");
}

/// The start time of a service's container (changes when it is restarted).
fn started_at(stack: &TestStack, service: &str) -> String {
    docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &format!("{}-{service}-1", stack.project)])
}

#[test]
fn restore_path_into_the_live_volume_changes_only_that_path_and_can_be_undone() {
    if !engine() {
        return;
    }
    let mut stack = TestStack::sample("browse-live");
    let dir = TempDir::new("browse-live");
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let media = stack.volume("backend-media");
    let archive = backup(&stack, &dir, "zstd");
    let tree =
        "cd /v && find . | sort && find . -type f -exec sha256sum {} + | sort && stat -c '%n %a %u' ./upload.txt";
    let original = on_volume(&media, Access::ReadOnly, tree);

    // Changed since: the two paths to restore, and a file the restore must leave alone.
    let backend = format!("{}-backend-1", stack.project);
    let change =
        "echo changed > /app/media/upload.txt && rm '/app/media/sub dir/photo.bin' && echo keep > /app/media/kept.txt";
    docker_ok(&["exec", &backend, "sh", "-c", change]);
    let changed = on_volume(&media, Access::ReadOnly, tree);
    let db_started = started_at(&stack, "db");
    let paths = [format!("{media}/upload.txt"), format!("{media}/sub dir")];

    // --dry-run says what it replaces and changes nothing.
    let plan = stack.xtask_ok(&["restore", &archive, "--path", &paths[0], "--path", &paths[1], "--dry-run"]);
    assert!(plan.contains("upload.txt replaced") && plan.contains("backend"), "{plan}");
    assert_eq!(on_volume(&media, Access::ReadOnly, tree), changed);

    // A failure right after the swap takes the way back: the old paths renamed back.
    let args = ["restore", &archive, "--path", &paths[0], "--path", &paths[1], "--yes", "--output-dir", dir.s()];
    stack.env.push(("XTASK_FAULT_AFTER".into(), "path-swap".into()));
    let (ok, _, err) = stack.xtask(&args);
    stack.env.pop();
    assert!(!ok && err.contains("fault injected") && err.contains("the old paths are back"), "{err}");
    assert_eq!(on_volume(&media, Access::ReadOnly, tree), changed, "the way back left the volume as it was");
    let state = docker_ok(&["inspect", "--format", "{{.State.Running}}", &backend]);
    assert_eq!(state.trim(), "true", "its user runs again after the way back");

    let out = stack.xtask_ok(&[
        "restore",
        &archive,
        "--path",
        &paths[0],
        "--path",
        &paths[1],
        "--yes",
        "--output-dir",
        dir.s(),
    ]);
    assert!(out.contains("to undo this restore:") && out.contains("--path"), "{out}");
    // Exactly the two paths are back; the file added since is still there, as it was.
    let now = on_volume(&media, Access::ReadOnly, tree);
    let without_kept: String = now.lines().filter(|l| !l.contains("kept.txt")).map(|l| format!("{l}\n")).collect();
    assert_eq!(without_kept, original, "the restored paths are the archive's, with mode and owner");
    assert_eq!(on_volume(&media, Access::ReadOnly, "cat /v/kept.txt"), "keep\n");
    assert_eq!(
        on_volume(&media, Access::ReadOnly, "ls -a /v | grep -c '^.xtask-' || true").trim(),
        "0",
        "no staging or trash left"
    );
    assert_eq!(started_at(&stack, "db"), db_started, "only the users of the volume were stopped");
    let state = docker_ok(&["inspect", "--format", "{{.State.Running}}", &backend]);
    assert_eq!(state.trim(), "true", "its user runs again");

    // The undo: the same paths from the safety backup.
    let safety =
        dir.names().into_iter().find(|n| n.contains("_pre-restore") && !n.starts_with('.')).expect("a safety backup");
    let safety = dir.0.join(safety);
    let safety = safety.to_str().unwrap();
    stack.xtask_ok(&["restore", safety, "--path", &paths[0], "--path", &paths[1], "--yes", "--no-safety-backup"]);
    assert_eq!(on_volume(&media, Access::ReadOnly, tree), changed, "undone");

    // A crafted archive (one file's bytes not those SHA256SUMS gives) is refused; nothing changes.
    let mut entries = load(Path::new(&archive));
    let name = format!("volumes/{media}/upload.txt");
    entries.iter_mut().find(|e| e.name == name.as_bytes()).unwrap().data = b"forged\n".to_vec();
    let forged = dir.0.join("full_backup_20260101_000000_forged.tar.zst");
    save(&forged, entries, false);
    let (ok, _, err) =
        stack.xtask(&["restore", forged.to_str().unwrap(), "--path", &paths[0], "--yes", "--output-dir", dir.s()]);
    assert!(!ok && err.contains("checksum mismatch"), "{err}");
    assert_eq!(on_volume(&media, Access::ReadOnly, tree), changed, "nothing changed");
    // A path the archive does not hold, and a whole volume, are refused by name.
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--path", &format!("{media}/nothing"), "--yes"]);
    assert!(!ok && err.contains("holds no entry"), "{err}");
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--path", &media, "--yes"]);
    assert!(!ok && err.contains("--only"), "{err}");
    assert_eq!(on_volume(&media, Access::ReadOnly, tree), changed, "nothing changed");
}

#[test]
fn ls_cat_and_restore_to_a_directory_read_a_remote_archive() {
    if !engine() || !Path::new("/usr/bin/rclone").exists() && std::env::var("CI").as_deref() != Ok("true") {
        return;
    }
    // The directory first: dropped after the stack, whose overlay it holds.
    let dir = TempDir::new("browse-remote");
    let mut stack = TestStack::sample("browse-remote");
    // An rclone remote `loc` (an alias of a local directory), named `nas` in x-xtask.remotes.
    let store = dir.0.join("store");
    std::fs::create_dir_all(&store).unwrap();
    stack.env.push(("RCLONE_CONFIG_LOC_TYPE".into(), "alias".into()));
    stack.env.push(("RCLONE_CONFIG_LOC_REMOTE".into(), store.to_string_lossy().into_owned()));
    let overlay = dir.0.join("remote.yaml");
    std::fs::write(&overlay, "x-xtask:\n  remotes:\n    nas: {url: \"rclone:loc:backups\"}\n").unwrap();
    stack.files.push(overlay);
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let media = stack.volume("backend-media");
    let pushed = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--push", "nas", "--no-keep-local"]);
    let name = Path::new(pushed["path"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
    assert!(!dir.0.join(&name).exists(), "no local copy");

    let (ok, listed, err) = stack.xtask(&["ls", "--remote", "nas", "--latest", &format!("{media}/upload.txt")]);
    // By its index, through ranged reads of the object (nothing downloaded whole).
    assert!(ok && listed.trim() == format!("{media}/upload.txt") && err.contains("read by its index"), "{listed}{err}");
    let (ok, bytes, err) = stack.xtask_bytes(&["cat", "--remote", "nas", &name, &format!("{media}/upload.txt")]);
    assert!(ok && bytes == b"an upload\n", "{err}");
    let to = dir.0.join("from-remote");
    let path = format!("{media}/sub dir");
    stack.xtask_ok(&["restore", &name, "--remote", "nas", "--path", &path, "--to", to.to_str().unwrap()]);
    let photo = on_volume(&media, Access::ReadOnly, "sha256sum '/v/sub dir/photo.bin' | cut -d' ' -f1");
    assert_eq!(sha256(&std::fs::read(to.join(&media).join("sub dir/photo.bin")).unwrap()), photo.trim());
}

//! Bind mounts end to end on the live engine, in an Immich-like stack (PostgreSQL's data in a
//! bind directory from DB_DATA_LOCATION, uploads in a bind from UPLOAD_LOCATION outside the
//! project directory, a named model cache) that is also authentik-like (`./media`), with a
//! read-only config file, `/etc/localtime` and the Docker socket bound: `volumes` shows every
//! mount with its kind and role; backup copies the data binds and says what it left out (the
//! socket is never read); the bind directories' contents deleted and the table emptied, restore
//! brings back every file's checksum, mode and mtime and every row; clean-all keeps the binds;
//! an archive naming a bind outside the project is refused by verify.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const COMPOSE: &str = r#"name: binds
services:
  database:
    image: ${POSTGRES_IMAGE:-postgres:16}
    environment: {POSTGRES_USER: app, POSTGRES_PASSWORD: app-pw, POSTGRES_DB: immich}
    volumes:
      - ${DB_DATA_LOCATION}:/var/lib/postgresql/data
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U app -d immich"]
      interval: 1s
      retries: 60
  server:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    volumes:
      - ${UPLOAD_LOCATION}:/data
      - model-cache:/cache
      - ./media:/media
      - ./config/app.conf:/etc/app.conf:ro
      - /etc/localtime:/etc/localtime:ro
      - /var/run/docker.sock:/var/run/docker.sock
volumes:
  model-cache:
    name: ${BINDS_PREFIX}-model-cache
"#;

/// The stack in its own project directory, the uploads in a directory outside it. Bind them in
/// this order (`let (project, uploads, stack)`): locals drop in reverse, so the stack is taken
/// down while its compose file still exists.
fn setup(name: &str) -> (TempDir, TempDir, TestStack) {
    let project = TempDir::new(&format!("binds-{name}"));
    let uploads = TempDir::new(&format!("binds-{name}-uploads"));
    std::fs::write(project.0.join("compose.yaml"), COMPOSE).unwrap();
    std::fs::create_dir_all(project.0.join("config")).unwrap();
    std::fs::write(project.0.join("config/app.conf"), "setting = 1\n").unwrap();
    std::fs::create_dir_all(project.0.join("media")).unwrap();
    let mut stack = TestStack::sample(name);
    stack.files = vec![project.0.join("compose.yaml")];
    stack.env.push(("BINDS_PREFIX".into(), stack.project.clone()));
    stack.env.push(("DB_DATA_LOCATION".into(), format!("{}/pgdata", project.s())));
    stack.env.push(("UPLOAD_LOCATION".into(), uploads.s().to_string()));
    (project, uploads, stack)
}

/// Every entry under `dir` as `path|mode|uid|size|mtime|type|sha256`, sorted (read on the host).
fn listing(dir: &Path) -> String {
    let script = "cd \"$1\" && find . -mindepth 1 | sort | while IFS= read -r p; do \
                  s=$(stat -c '%n|%a|%u|%s|%Y|%F' \"$p\"); h=-; \
                  if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then h=$(sha256sum < \"$p\"); fi; echo \"$s|$h\"; done";
    let out = Command::new("sh").args(["-c", script, "_"]).arg(dir).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn psql(stack: &TestStack, sql: &str) -> String {
    stack.exec("database", &["psql", "-X", "-At", "-U", "app", "-d", "immich", "-c", sql], "").trim().to_string()
}

fn seed(stack: &TestStack, project: &TempDir, uploads: &TempDir) {
    psql(stack, "CREATE TABLE assets (id int PRIMARY KEY, path text); INSERT INTO assets SELECT g, 'p' || g FROM generate_series(1, 300) g;");
    let seed = "mkdir -p \"$1/2026/11\" \"$1/thumbs\" && head -c 300000 /dev/urandom > \"$1/2026/11/IMG 0001.jpg\" \
                && echo hello > \"$1/thumbs/a.txt\" && chmod 0640 \"$1/thumbs/a.txt\" && ln -s ../thumbs/a.txt \"$1/2026/link\" \
                && touch -d '2024-02-03 04:05:06' \"$1/2026/11/IMG 0001.jpg\" \"$1/2026\"";
    for d in [uploads.0.clone(), project.0.join("media")] {
        assert!(Command::new("sh").args(["-c", seed, "_"]).arg(&d).status().unwrap().success());
    }
}

fn by_name<'a>(inv: &'a Value, name: &str) -> &'a Value {
    inv["volumes"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("{name}: {inv}"))
}

fn entry_names(archive: &str) -> Vec<String> {
    let mut a = tar::Archive::new(common::decompressed(Path::new(archive)));
    a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn binds_are_listed_backed_up_and_restored_and_the_socket_never_read() {
    if !engine() {
        return;
    }
    let (project, uploads, stack) = setup("immich");
    let backups = TempDir::new("binds-immich-backups");
    stack.xtask_ok(&["up"]);
    seed(&stack, &project, &uploads);

    let inv = stack.xtask_json(&["volumes", "--json"]);
    let media = format!("{}/media", project.s());
    let pgdata = format!("{}/pgdata", project.s());
    let conf = format!("{}/config/app.conf", project.s());
    for (name, kind, role) in [
        (uploads.s(), "bind", "uploads"),
        (media.as_str(), "bind", "uploads"),
        (pgdata.as_str(), "bind", "database"),
        (conf.as_str(), "bind", "config"),
        ("/etc/localtime", "bind", "system"),
        ("/var/run/docker.sock", "bind", "system"),
    ] {
        let v = by_name(&inv, name);
        assert_eq!((v["kind"].as_str(), v["role"].as_str()), (Some(kind), Some(role)), "{v}");
    }
    let cache = by_name(&inv, &stack.volume("model-cache"));
    assert_eq!((cache["kind"].as_str(), cache["role"].as_str()), (Some("volume"), Some("cache")));
    assert!(by_name(&inv, &media)["size_bytes"].as_u64().unwrap() > 300_000, "measured through a helper");

    let (ok, out, err) = stack.xtask(&["backup", "--output-dir", backups.s(), "--json"]);
    assert!(ok, "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    let archive = summary["path"].as_str().unwrap().to_string();
    let skipped = summary["skipped"].to_string();
    for (what, why) in [
        ("/var/run/docker.sock", "system path"),
        ("/etc/localtime", "system path"),
        (conf.as_str(), "configuration"),
        (pgdata.as_str(), "dump of service database"),
    ] {
        assert!(skipped.contains(what) && err.contains(what), "{what} reported: {skipped}\n{err}");
        assert!(skipped.contains(why), "{why}: {skipped}");
    }
    let names = entry_names(&archive);
    assert!(names.iter().any(|n| n.starts_with("binds/") && n.ends_with("IMG 0001.jpg")), "{names:?}");
    assert!(names.iter().all(|n| !n.contains("docker.sock") && !n.contains("localtime") && !n.contains("app.conf")));
    assert!(names.iter().any(|n| n.starts_with("databases/database/")), "the database's bind is dumped");

    let before = (
        listing(&uploads.0),
        listing(Path::new(&media)),
        psql(&stack, "SELECT md5(string_agg(id || path, ',' ORDER BY id)) FROM assets"),
    );
    // clean-all removes the volumes and keeps every bind.
    let out = stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", backups.s()]);
    assert!(out.contains(&format!("kept bind mount {media}")), "{out}");
    assert_eq!(listing(Path::new(&media)), before.1, "clean-all left the bind alone");
    stack.xtask_ok(&["up"]);
    psql(&stack, "DELETE FROM assets WHERE id > 10");
    let wipe = "find \"$1\" -mindepth 1 -delete";
    for d in [uploads.0.clone(), project.0.join("media")] {
        assert!(Command::new("sh").args(["-c", wipe, "_"]).arg(&d).status().unwrap().success());
    }
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    let after = (
        listing(&uploads.0),
        listing(Path::new(&media)),
        psql(&stack, "SELECT md5(string_agg(id || path, ',' ORDER BY id)) FROM assets"),
    );
    assert_eq!(after, before, "every file's checksum, mode and mtime and every row came back");
    assert!(!before.0.is_empty() && before.0.contains("IMG 0001.jpg"));

    // An archive naming a bind outside the project (and not bound by the stack) is refused.
    let forged = backups.0.join("full_backup_20200101_000000.tar.gz");
    repack_with_metadata(&archive, &forged, &|m| {
        let v = m["volumes"].as_array_mut().unwrap().iter_mut().find(|v| v["bind"] == uploads.s()).unwrap();
        v["bind"] = "/srv/elsewhere".into();
        v["key"] = "/srv/elsewhere".into();
    });
    let (ok, _, err) = stack.xtask(&["verify", forged.to_str().unwrap()]);
    assert!(
        !ok && err.contains("/srv/elsewhere") && err.contains("no service of this stack's compose file binds it"),
        "{err}"
    );
}

/// Rewrites `metadata.json` of `src` into `dst`, every other entry as it was, and, as a forger
/// with write access to the backup directory would, a SHA256SUMS that matches.
fn repack_with_metadata(src: &str, dst: &Path, edit: &dyn Fn(&mut Value)) {
    let mut entries = load(Path::new(src));
    let meta = entries.iter_mut().find(|e| e.name == b"metadata.json").unwrap();
    let mut m: Value = serde_json::from_slice(&meta.data).unwrap();
    edit(&mut m);
    meta.data = serde_json::to_vec_pretty(&m).unwrap();
    save(dst, entries, true);
}

/// A forged archive (SHA256SUMS rewritten to match) whose `./media` bind names another place is
/// refused by verify and restore with that place named, and nothing appears there; a bind that
/// is, or sits below, a symbolic link is refused at restore time and nothing is written through it.
#[test]
fn forged_bind_paths_and_symlinked_binds_are_refused() {
    if !engine() {
        return;
    }
    let (project, uploads, mut stack) = setup("forged");
    let backups = TempDir::new("binds-forged-backups");
    // The uploads below a directory that later becomes a symbolic link.
    let real = TempDir::new("binds-forged-real");
    let deep_uploads = format!("{}/a/uploads", real.s());
    std::fs::create_dir_all(&deep_uploads).unwrap();
    std::fs::write(format!("{deep_uploads}/photo.jpg"), "photo").unwrap();
    stack.env.retain(|(k, _)| k != "UPLOAD_LOCATION");
    stack.env.push(("UPLOAD_LOCATION".into(), deep_uploads.clone()));
    stack.xtask_ok(&["up"]);
    seed(&stack, &project, &uploads);
    let summary = stack.xtask_json(&["backup", "--output-dir", backups.s(), "--json"]);
    let archive = summary["path"].as_str().unwrap().to_string();
    let media = format!("{}/media", project.s());
    let elsewhere = TempDir::new("binds-forged-elsewhere");
    let (git, cargo) = (format!("{}/.git", project.s()), format!("{}/.cargo", project.s()));
    let cases: [(&str, &str, bool); 5] = [
        ("git", git.as_str(), false),
        ("cargo", cargo.as_str(), true),
        ("backups", backups.s(), true),
        ("outside", "/srv/elsewhere", true),
        ("elsewhere", elsewhere.s(), false),
    ];
    for (i, (what, path, keep_mounts)) in cases.into_iter().enumerate() {
        let forged = backups.0.join(format!("full_backup_2020010{}_000000.tar.gz", i + 1));
        repack_with_metadata(&archive, &forged, &|m| {
            let v = m["volumes"].as_array_mut().unwrap().iter_mut().find(|v| v["bind"] == media.as_str()).unwrap();
            v["bind"] = path.into();
            v["key"] = path.into();
            if !keep_mounts {
                v.as_object_mut().unwrap().remove("bind_mounts");
            }
        });
        let forged = forged.to_str().unwrap();
        let (ok, _, err) = stack.xtask(&["verify", forged]);
        assert!(
            !ok && err.contains(path) && err.contains("no service of this stack's compose file binds it"),
            "{what}: {err}"
        );
        let (ok, _, err) = stack.xtask(&["restore", forged, "--yes", "--output-dir", backups.s()]);
        assert!(!ok && err.contains("no service of this stack's compose file binds it"), "{what}: {err}");
    }
    assert!(!Path::new(&git).exists() && !Path::new(&cargo).exists(), "nothing was created");
    assert_eq!(listing(&elsewhere.0), "", "nothing was written elsewhere");

    // The declared bind is now a symbolic link to another directory: refused, nothing written there.
    let media_before = listing(Path::new(&media));
    std::fs::rename(&media, project.0.join("media-real")).unwrap();
    std::os::unix::fs::symlink(elsewhere.s(), &media).unwrap();
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    assert!(!ok && err.contains(&media) && err.contains("symbolic link"), "{err}");
    assert_eq!(listing(&elsewhere.0), "", "nothing was written through the link");
    std::fs::remove_file(&media).unwrap();
    std::fs::rename(project.0.join("media-real"), &media).unwrap();
    assert_eq!(listing(Path::new(&media)), media_before);

    // A directory above a declared bind is a symbolic link: refused, naming it.
    std::fs::remove_file(format!("{deep_uploads}/photo.jpg")).unwrap();
    std::fs::rename(format!("{}/a", real.s()), format!("{}/a-real", real.s())).unwrap();
    std::os::unix::fs::symlink(format!("{}/a-real", real.s()), format!("{}/a", real.s())).unwrap();
    let (ok, _, err) =
        stack.xtask(&["restore", &archive, "--yes", "--output-dir", backups.s(), "--only", &deep_uploads]);
    let link = format!("{}/a above it is a symbolic link", real.s());
    assert!(!ok && err.contains(&link), "{err}");
    assert_eq!(listing(&real.0.join("a-real/uploads")), "", "nothing was written through the link");
    std::fs::remove_file(format!("{}/a", real.s())).unwrap();
}

/// A helper that writes into a bind checks, once Docker has mounted it, that it got the
/// directory the tool resolved (device and inode, no link followed): a path swapped for a
/// symbolic link between the check and the mount gets nothing, and the link's target neither.
#[test]
fn a_bind_swapped_for_a_link_after_its_check_receives_nothing() {
    if !engine() {
        return;
    }
    let dir = TempDir::new("bind-guard");
    let (bind, moved, victim) = (dir.0.join("uploads"), dir.0.join("uploads.real"), dir.0.join("victim"));
    std::fs::create_dir_all(&bind).unwrap();
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep.txt"), b"mine").unwrap();
    let write = |h: &xtask::engine::docker::Helper| {
        let mut cmd = h.to_cmd();
        cmd.args.retain(|a| a != "-i");
        Command::new("docker").args(&cmd.args).stdin(std::process::Stdio::null()).output().unwrap()
    };
    let touch = ["sh", "-c", "touch /v/0/written"];
    // Checked and mounted as it is: the command runs.
    let ok = write(&xtask::engine::docker::Helper::writer(bind.to_str().unwrap(), &touch));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(bind.join("written").exists());
    // Checked, then swapped for a link to another directory before Docker mounts it.
    let checked = xtask::engine::docker::Helper::writer(bind.to_str().unwrap(), &touch);
    std::fs::rename(&bind, &moved).unwrap();
    std::os::unix::fs::symlink(&victim, &bind).unwrap();
    let refused = write(&checked);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(97), "{err}");
    assert!(err.contains("is not the directory the tool checked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&victim).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["keep.txt"], "nothing was written through the link");
}

/// A forged archive (sums rewritten) that puts a root-owned set-uid program and a set-gid one
/// into a bind: restored, both are plain executables on the host, the restore says what it
/// dropped, and a directory keeps its set-gid bit (group inheritance, nothing to execute).
#[test]
fn set_uid_programs_never_reach_a_host_directory() {
    if !engine() {
        return;
    }
    let (project, uploads, stack) = setup("setuid");
    let backups = TempDir::new("binds-setuid-backups");
    stack.xtask_ok(&["up"]);
    seed(&stack, &project, &uploads);
    let summary = stack.xtask_json(&["backup", "--output-dir", backups.s(), "--json"]);
    let archive = summary["path"].as_str().unwrap().to_string();
    let mut entries = load(Path::new(&archive));
    let uploads_name = uploads.0.file_name().unwrap().to_str().unwrap().to_string();
    let img = entries.iter().find(|e| {
        let n = String::from_utf8_lossy(&e.name);
        n.starts_with("binds/") && n.contains(&uploads_name) && n.ends_with("2026/11/IMG 0001.jpg")
    });
    let img = String::from_utf8(img.expect("the uploads bind is archived").name.clone()).unwrap();
    let prefix = img.strip_suffix("2026/11/IMG 0001.jpg").unwrap().to_string();
    let at = content_end(&entries);
    let entry = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        Entry { header: h, name: format!("{prefix}{name}").into_bytes(), link: None, data: data.to_vec() }
    };
    entries.insert(at, entry("rootshell", tar::EntryType::Regular, 0o4755, b"#!/bin/sh\nid\n"));
    entries.insert(at, entry("groupshell", tar::EntryType::Regular, 0o2711, b"#!/bin/sh\nid\n"));
    entries.insert(at, entry("shared/", tar::EntryType::Directory, 0o2775, b""));
    let forged = backups.0.join("full_backup_20200101_000000.tar.gz");
    save(&forged, entries, true);
    let (ok, _, err) = stack.xtask(&["restore", forged.to_str().unwrap(), "--yes", "--output-dir", backups.s()]);
    assert!(ok, "{err}");
    assert!(err.contains("set-uid/set-gid bits dropped from 2 file(s)") && err.contains("rootshell"), "{err}");
    let mode = |name: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(uploads.0.join(name)).unwrap().permissions())
            & 0o7777
    };
    assert_eq!((mode("rootshell"), mode("groupshell"), mode("shared")), (0o755, 0o711, 0o2775));
}

/// A bind a restore writes only when named (here: inside the backup directory) is restored with
/// `--only`, and when that restore fails after its swap the way back puts it back too (the
/// safety backup holds only what was named), and the undo it prints names it.
#[test]
fn a_held_bind_named_with_only_has_a_way_back() {
    if !engine() {
        return;
    }
    let (_project, _uploads, mut stack) = setup("held");
    let backups = TempDir::new("binds-held-backups");
    let inside = backups.0.join("uploads");
    std::fs::create_dir_all(&inside).unwrap();
    stack.env.retain(|(k, _)| k != "UPLOAD_LOCATION");
    stack.env.push(("UPLOAD_LOCATION".into(), inside.to_string_lossy().into_owned()));
    stack.xtask_ok(&["up"]);
    std::fs::write(inside.join("photo.txt"), "archived").unwrap();
    let b = backups.s();
    let archive = stack.xtask_json(&["backup", "--output-dir", b, "--json"])["path"].as_str().unwrap().to_string();
    std::fs::write(inside.join("photo.txt"), "current").unwrap();
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("only when you name it") && err.contains("inside the backup directory"), "{err}");
    let only = inside.to_str().unwrap();
    stack.env.push(("XTASK_FAULT_AFTER".into(), "start".into()));
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--only", only, "--output-dir", b]);
    assert!(!ok && err.contains("restored from the safety backup"), "the way back took it back: {err}");
    assert_eq!(std::fs::read_to_string(inside.join("photo.txt")).unwrap(), "current");
    stack.env.retain(|(k, _)| k != "XTASK_FAULT_AFTER");
    let out = stack.xtask_ok(&["restore", &archive, "--yes", "--only", only, "--output-dir", b]);
    assert_eq!(std::fs::read_to_string(inside.join("photo.txt")).unwrap(), "archived");
    assert!(out.contains(&format!("--only {only}")), "the undo names the bind: {out}");
}

const NESTED: &str = r#"name: nested
services:
  dovecot:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - ./data/conf:/etc/x
      - ./data/conf/auth/x.php:/usr/lib/x.php
  sieve:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes:
      - ./data/conf/sieve:/sieve
      - ./media:/media
"#;

/// The archive's entries with the inner bind's directory `auth` of the outer bind replaced by a
/// symbolic link to `to` (SHA256SUMS rewritten to match, as a forger would).
fn with_auth_as_link(archive: &str, forged: &Path, to: &str) {
    let mut entries = load(Path::new(archive));
    let php = entries.iter().find(|e| e.name.ends_with(b"/auth/x.php")).expect("x.php archived");
    let dir = php.name[..php.name.len() - "/x.php".len()].to_vec();
    let at = entries.iter().position(|e| e.name.starts_with(&dir)).unwrap();
    let mut header = entries[at].header.clone();
    entries.retain(|e| !e.name.starts_with(&dir));
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    entries.insert(at, Entry { header, name: dir, link: Some(to.as_bytes().to_vec()), data: Vec::new() });
    save(forged, entries, true);
}

/// Nested binds, as mailcow writes them: `./data/conf` bound, and inside it a file
/// (`auth/x.php`) and a directory (`sieve`, another service's) bound too. Backup copies the
/// outer tree once and says the inner ones are part of it; verify --deep passes; restore brings
/// the whole tree back and the inner mounts see the restored content; a forged tree whose
/// `auth` is a symbolic link is caught at the swap (before the services start) and the way back
/// puts the old tree back; an archive with a bind this stack does not declare is judged on its
/// own: verify and restore list the refused item (not "do not restore from it"), and
/// `--skip-refused` restores the rest.
#[test]
fn nested_binds_restore_as_part_of_the_outer_tree() {
    if !engine() {
        return;
    }
    let (project, stack) = stack_from("nested", NESTED, "NESTED_PREFIX");
    let backups = TempDir::new("binds-nested-backups");
    let conf = project.0.join("data/conf");
    std::fs::create_dir_all(conf.join("auth")).unwrap();
    std::fs::create_dir_all(conf.join("sieve")).unwrap();
    std::fs::create_dir_all(project.0.join("media")).unwrap();
    std::fs::write(conf.join("a.conf"), "mail_location = maildir\n").unwrap();
    std::fs::write(conf.join("auth/x.php"), "<?php // v1\n").unwrap();
    std::fs::write(conf.join("sieve/rule"), "keep;\n").unwrap();
    std::fs::write(project.0.join("media/photo.jpg"), "photo").unwrap();
    stack.xtask_ok(&["up"]);
    let in_container = |service: &str, path: &str| stack.exec(service, &["cat", path], "");
    assert_eq!(in_container("dovecot", "/usr/lib/x.php"), "<?php // v1\n");

    let (ok, out, err) = stack.xtask(&["backup", "--output-dir", backups.s(), "--json"]);
    assert!(ok && !err.contains("warning:"), "{err}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    let archive = summary["path"].as_str().unwrap().to_string();
    let sieve_dir = format!("{}/sieve", conf.display());
    let sieve_skip = summary["skipped"].as_array().unwrap().iter().find(|s| s["name"] == sieve_dir.as_str());
    assert!(sieve_skip.is_some_and(|s| s["reason"].as_str().unwrap().contains("part of it")), "{summary}");
    let names = entry_names(&archive);
    assert!(names.iter().any(|n| n.ends_with("/auth/x.php")) && names.iter().any(|n| n.ends_with("/sieve/rule")));
    let (ok, _, err) = stack.xtask(&["verify", "--deep", &archive, "--output-dir", backups.s()]);
    assert!(ok && err.contains("OK:"), "{err}");
    let before = listing(&conf);

    // The tree changed: the inner file rewritten, a file and the inner directory's file gone.
    std::fs::write(conf.join("auth/x.php"), "<?php // v2\n").unwrap();
    std::fs::remove_file(conf.join("a.conf")).unwrap();
    std::fs::remove_file(conf.join("sieve/rule")).unwrap();
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", backups.s()]);
    assert!(ok, "{err}");
    assert_eq!(listing(&conf), before, "the whole tree came back, the inner binds with it");
    assert_eq!(in_container("dovecot", "/usr/lib/x.php"), "<?php // v1\n", "the inner file mount sees it");
    assert_eq!(in_container("sieve", "/sieve/rule"), "keep;\n", "the inner directory mount sees it");

    // A tree whose `auth` is a link: refused at the swap, the way back puts the tree back.
    let elsewhere = TempDir::new("binds-nested-elsewhere");
    let forged = backups.0.join("full_backup_20200101_000000.tar.gz");
    with_auth_as_link(&archive, &forged, elsewhere.s());
    let (ok, _, err) = stack.xtask(&["restore", forged.to_str().unwrap(), "--yes", "--output-dir", backups.s()]);
    assert!(!ok && err.contains("symbolic link") && err.contains("safety backup"), "{err}");
    assert_eq!(listing(&conf), before, "the way back put the old tree back");
    assert_eq!(listing(&elsewhere.0), "", "nothing was written through the link");
    assert_eq!(in_container("dovecot", "/usr/lib/x.php"), "<?php // v1\n", "dovecot runs again, as it was");

    // A bind this stack does not declare: listed by verify and restore; the rest restores.
    let media = format!("{}/media", project.s());
    let moved = backups.0.join("full_backup_20200102_000000.tar.gz");
    repack_with_metadata(&archive, &moved, &|m| {
        let v = m["volumes"].as_array_mut().unwrap().iter_mut().find(|v| v["bind"] == media.as_str()).unwrap();
        v["bind"] = "/srv/elsewhere".into();
        v["key"] = "/srv/elsewhere".into();
    });
    let moved = moved.to_str().unwrap();
    let (ok, _, err) = stack.xtask(&["verify", "--deep", moved, "--output-dir", backups.s()]);
    assert!(!ok && err.contains("OK:") && err.contains("/srv/elsewhere"), "{err}");
    assert!(err.contains("the archive is sound") && !err.contains("do not restore from it"), "{err}");
    std::fs::remove_file(conf.join("sieve/rule")).unwrap();
    let (ok, _, err) = stack.xtask(&["restore", moved, "--yes", "--output-dir", backups.s()]);
    assert!(!ok && err.contains("/srv/elsewhere") && err.contains("--skip-refused"), "{err}");
    assert!(!conf.join("sieve/rule").exists(), "nothing was changed");
    let (ok, _, err) = stack.xtask(&["restore", moved, "--yes", "--skip-refused", "--output-dir", backups.s()]);
    assert!(ok && err.contains("/srv/elsewhere"), "{err}");
    assert_eq!(listing(&conf), before, "the rest of the archive was restored");
}

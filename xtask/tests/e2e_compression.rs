//! Compression end to end on the live engine: a backup is zstd by default (`….tar.zst`, zstd's
//! magic, level 3), verifies (also `--deep`) and restores the sample stack identically over
//! changed data (the safety backup is zstd too); `--compression gzip:1` still writes a
//! `….tar.gz` that restores the same; an archive whose name says another codec than its bytes
//! is refused with its name.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::*;

/// Changes every part of the sample's state: a file, a row, a Redis key.
fn change(stack: &TestStack, round: &str) {
    let backend = format!("{}-backend-1", stack.project);
    docker_ok(&[
        "exec",
        &backend,
        "sh",
        "-c",
        &format!("echo {round} > /app/media/upload.txt && echo {round} > /app/media/new.txt"),
    ]);
    psql(&format!("{}-db-1", stack.project), "app", "DELETE FROM items WHERE id > 250");
    docker_ok(&["exec", &format!("{}-redis-1", stack.project), "redis-cli", "SET", "k0", round]);
}

fn first_bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()[..4].to_vec()
}

#[test]
fn zstd_by_default_verifies_and_restores_identically_and_gzip_still_does() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("zstd");
    let dir = TempDir::new("zstd");
    stack.xtask_ok(&["up"]);
    seed_sample(&stack);
    let original = sample_state(&stack);

    let zst = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"]);
    let zst_path = zst["path"].as_str().unwrap().to_string();
    let name = Path::new(&zst_path).file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("full_backup_") && name.ends_with(".tar.zst"), "{name}");
    assert_eq!(zst["compression"], "zstd:3");
    assert_eq!(first_bytes(&zst_path), [0x28, 0xb5, 0x2f, 0xfd], "zstd's magic");
    stack.xtask_ok(&["verify", "--deep", &zst_path]);
    let listed = stack.xtask_json(&["backups", "--output-dir", dir.s(), "--json"]);
    assert_eq!(listed[0]["file"], name, "listed under its .tar.zst name: {listed}");

    change(&stack, "after-zstd");
    assert_ne!(sample_state(&stack), original);
    stack.xtask_ok(&["restore", &zst_path, "--yes", "--output-dir", dir.s()]);
    stack.xtask_ok(&["up"]);
    assert_eq!(sample_state(&stack), original, "every file, row and key back from the zstd archive");
    let safety = dir.names().into_iter().find(|n| n.contains("_pre-restore") && !n.starts_with('.'));
    assert!(safety.as_deref().is_some_and(|n| n.ends_with(".tar.zst")), "the safety backup is zstd: {safety:?}");

    let gz = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--compression", "gzip:1"]);
    let gz_path = gz["path"].as_str().unwrap().to_string();
    assert!(gz_path.ends_with(".tar.gz") && gz["compression"] == "gzip:1", "{gz}");
    assert_eq!(first_bytes(&gz_path)[..3], [0x1f, 0x8b, 0x08], "gzip's magic");
    stack.xtask_ok(&["verify", &gz_path]);
    change(&stack, "after-gzip");
    stack.xtask_ok(&["restore", &gz_path, "--yes", "--output-dir", dir.s()]);
    stack.xtask_ok(&["up"]);
    assert_eq!(sample_state(&stack), original, "every file, row and key back from the gzip archive");

    // The zstd archive under a gzip name: refused, the archive named, nothing restored.
    let renamed = dir.0.join(name.replace(".tar.zst", "_renamed.tar.gz"));
    std::fs::copy(&zst_path, &renamed).unwrap();
    let (ok, _, err) = stack.xtask(&["verify", renamed.to_str().unwrap()]);
    assert!(!ok && err.contains("named as a gzip archive (.tar.gz) but its bytes are a zstd stream"), "{err}");
    assert!(err.contains(renamed.to_str().unwrap()), "{err}");
    let (ok, _, err) = stack.xtask(&["backup", "--output-dir", dir.s(), "--compression", "lz4"]);
    assert!(!ok && err.contains("unknown compression \"lz4\""), "{err}");
}

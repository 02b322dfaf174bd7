//! The seeds' acceptance story end to end on the live engine: data survives stop/start and
//! container recreation, a backup, `clean-all` (volumes gone), and a restore brings back every
//! file, table and Redis key; `clean-logs` / `clean-cache` remove exactly their volumes; refusals
//! (no confirmation, damaged archive) change nothing; kill -9 during a backup leaves no archive
//! under a final name and the next backup works.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::*;

fn existing(stack: &TestStack) -> Vec<String> {
    let mut v: Vec<String> = docker_ok(&["volume", "ls", "--quiet"])
        .lines()
        .filter(|n| n.starts_with(&stack.project))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn acceptance_story_backup_clean_all_restore() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("story");
    let dir = TempDir::new("story");
    stack.xtask_ok(&["up"]);
    let db = format!("{}-db-1", stack.project);
    seed_sample(&stack);
    let original = sample_state(&stack);
    assert_eq!(original.redis[4], "v4");

    stack.compose(&["stop"]);
    stack.xtask_ok(&["up"]);
    assert_eq!(sample_state(&stack), original, "stop and start");
    stack.compose(&["up", "--detach", "--wait", "--force-recreate"]);
    assert_eq!(sample_state(&stack), original, "containers recreated");

    let summary = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"]);
    let archive = summary["path"].as_str().unwrap().to_string();
    let all_volumes = existing(&stack);
    assert_eq!(all_volumes.len(), 6);

    // clean-all refuses without the exact phrase (no terminal here), and changes nothing.
    let (ok, _, err) = stack.xtask(&["clean-all", "--output-dir", dir.s()]);
    assert!(!ok && err.contains("--confirm \"DELETE EVERYTHING\""), "{err}");
    let (ok, _, err) = stack.xtask(&["clean-all", "--confirm", "delete everything"]);
    assert!(!ok && err.contains("must be exactly"), "{err}");
    assert_eq!(existing(&stack), all_volumes);
    let dry = stack.xtask_ok(&["clean-all", "--dry-run"]);
    assert!(dry.contains("docker volume rm") && dry.contains("WARNING"), "{dry}");
    assert_eq!(existing(&stack), all_volumes, "--dry-run removes nothing");

    let out = stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", dir.s()]);
    assert_eq!(out.matches("removed volume").count(), 6, "{out}");
    assert!(existing(&stack).is_empty(), "clean-all removed every stack volume");

    // Restore refuses without --yes when there is no terminal, then restores with it.
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--output-dir", dir.s()]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert!(existing(&stack).is_empty(), "nothing restored without confirmation");
    let out = stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    assert!(out.contains("nothing existed before"), "after clean-all there is nothing to undo: {out}");
    let media_labels =
        docker_ok(&["volume", "inspect", "-f", "{{index .Labels \"xtask.role\"}}", &stack.volume("backend-media")]);
    assert_eq!(media_labels.trim(), "uploads", "recreated with its labels");
    stack.xtask_ok(&["up"]);
    assert_eq!(sample_state(&stack), original, "everything is back after clean-all and restore");
    let st = stack.xtask_json(&["status", "--json"]);
    assert!(st["services"].as_array().unwrap().iter().all(|s| s["health"] == "healthy"), "{st}");

    // A damaged archive is refused before anything is touched.
    let bytes = std::fs::read(&archive).unwrap();
    let bad = dir.0.join("damaged.tar.zst");
    let mut b = bytes.clone();
    let at = b.len() / 2;
    b[at] ^= 0x10;
    std::fs::write(&bad, b).unwrap();
    docker_ok(&[
        "exec",
        &format!("{}-backend-1", stack.project),
        "sh",
        "-c",
        "echo changed-after > /app/media/later.txt",
    ]);
    let (ok, _, err) = stack.xtask(&["restore", bad.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
    assert!(!ok && err.contains("failed verification"), "{err}");
    let later = docker_ok(&["exec", &format!("{}-backend-1", stack.project), "cat", "/app/media/later.txt"]);
    assert_eq!(later.trim(), "changed-after", "a refused restore wrote nothing");

    // --only db restores the database alone; the undo command brings back what it replaced.
    psql(&db, "app", "DELETE FROM items WHERE id > 100");
    let out = stack.xtask_ok(&["restore", &archive, "--only", "db", "--yes", "--output-dir", dir.s()]);
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM items"), "500");
    let later = docker_ok(&["exec", &format!("{}-backend-1", stack.project), "cat", "/app/media/later.txt"]);
    assert_eq!(later.trim(), "changed-after", "--only db left the volumes alone");
    // The undo names this stack (-p, -f), whatever directory it is run from.
    let undo = out.lines().find_map(|l| l.strip_prefix("to undo this restore: cargo xtask ")).unwrap();
    assert!(undo.starts_with(&format!("-p {} -f ", stack.project)), "{undo}");
    let undo_path = undo.split(" restore ").nth(1).unwrap().trim_end_matches(" --yes");
    stack.xtask_ok(&["restore", undo_path, "--yes", "--no-safety-backup", "--output-dir", dir.s()]);
    assert_eq!(
        psql(&db, "app", "SELECT count(*) FROM items"),
        "100",
        "the undo brought back the state before the restore"
    );

    // clean-logs and clean-cache remove exactly their volumes.
    let before = existing(&stack);
    let out = stack.xtask_ok(&["clean-logs", "--yes"]);
    assert!(out.contains(&stack.volume("proxy-logs")), "{out}");
    let after: Vec<String> = existing(&stack);
    assert_eq!(before.iter().filter(|v| !after.contains(v)).collect::<Vec<_>>(), [&stack.volume("proxy-logs")]);
    let out = stack.xtask_ok(&["clean-cache", "--yes"]);
    assert!(out.contains("comes back empty"), "{out}");
    let after2 = existing(&stack);
    assert_eq!(after.iter().filter(|v| !after2.contains(v)).collect::<Vec<_>>(), [&stack.volume("redis-data")]);
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM items"), "100", "the database was not touched");
    // Nothing left to remove: no question asked, and it says so.
    let out = stack.xtask_ok(&["clean-logs"]);
    assert!(out.contains("no volume to remove"), "{out}");
    // --dry-run prints each step once and runs none.
    let out = stack.xtask_ok(&["clean", "--dry-run"]);
    let downs = out.lines().filter(|l| l.contains(" down ")).count();
    assert_eq!(downs, 1, "each step printed once: {out}");
}

#[test]
fn kill_during_backup_leaves_no_archive_and_the_next_backup_works() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("kill");
    let dir = TempDir::new("kill");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    docker_ok(&[
        "exec",
        &format!("{}-backend-1", stack.project),
        "sh",
        "-c",
        "head -c 209715200 /dev/urandom > /app/media/big.bin",
    ]);
    let mut child = stack.spawn(&["--quiet", "backup", "--output-dir", dir.s(), "--level", "9"]);
    // Wait until the archive is being written, then kill -9.
    let temp_seen = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::fs::read_dir(&dir.0).unwrap().flatten().any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(temp_seen, "the backup never started writing");
    let names = || -> Vec<String> {
        std::fs::read_dir(&dir.0).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    assert!(
        names().iter().all(|n| !n.ends_with(".tar.zst") || n.starts_with('.')),
        "no archive under a final name: {:?}",
        names()
    );
    // The volume is untouched and the next backup works, removing the stale partial file.
    let size = docker_ok(&["exec", &format!("{}-backend-1", stack.project), "stat", "-c", "%s", "/app/media/big.bin"]);
    assert_eq!(size.trim(), "209715200");
    let out = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--level", "1"]);
    assert!(Path::new(out["path"].as_str().unwrap()).exists());
    assert!(names().iter().all(|n| !n.contains(".tmp-")), "stale partial archive removed: {:?}", names());
    let orphans = helpers_on(&stack.volume("backend-media"));
    assert!(orphans.is_empty(), "helpers left by the killed run were removed: {orphans}");
    stack.xtask_ok(&["verify", "--latest", "--output-dir", dir.s()]);
}

/// Every entry of a volume as `stat` sees it (name, mode, owner, type, link target, mtime, link
/// count) and every file's checksum.
fn exact_listing(volume: &str) -> String {
    on_volume(volume, Access::ReadOnly, "cd /v && find . -exec stat -c '%n|%a|%u|%g|%F|%N|%Y|%h' {} + | sort && find . -type f -exec sha256sum {} + | sort")
}

#[test]
fn a_round_trip_keeps_every_entry_exactly() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("fidelity");
    let dir = TempDir::new("fidelity");
    stack.xtask_ok(&["up", "backend"]);
    let media = stack.volume("backend-media");
    let seed = r#"set -e; cd /v
        mkdir -p 'a dir/nested/deep' empty 'ünï'
        echo one > 'a dir/nested/deep/file one'
        chmod 0640 'a dir/nested/deep/file one' && chown 1234:5678 'a dir/nested/deep/file one'
        ln 'a dir/nested/deep/file one' hard
        mkdir -p 'with hard link' && ln 'a dir/nested/deep/file one' 'with hard link/again'
        ln -s 'a dir/nested' link-to-dir && ln -s /etc/passwd abs-link && ln -s missing dangling
        printf x > "$(printf 'new\nline')"
        chmod 0750 'a dir' && chmod 1777 empty && chown 42:42 empty
        touch -h -d '2001-02-03 04:05:06' link-to-dir abs-link dangling
        touch -d '2002-03-04 05:06:07' 'a dir/nested/deep/file one'
        touch -d '2003-04-05 06:07:08' 'a dir/nested/deep' 'a dir/nested' 'a dir' empty 'ünï' 'with hard link'
        touch -d '2004-05-06 07:08:09' /v"#;
    on_volume(&media, Access::Write, seed);
    let before = exact_listing(&media);
    assert!(before.contains("|2003-") || before.contains("|1049"), "seeded mtimes present: {before}");
    let archive = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--level", "1"]);
    let wipe = "rm -rf /v/* /v/.[!.]* && touch /v";
    on_volume(&media, Access::Write, wipe);
    assert_ne!(exact_listing(&media), before);
    let path = archive["path"].as_str().unwrap();
    stack.xtask_ok(&["restore", path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    assert_eq!(exact_listing(&media), before, "modes, owners, types, links, mtimes and contents as archived");
}

#[test]
fn a_swap_cut_off_by_a_crash_is_finished_by_the_next_run() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("halfswap");
    let dir = TempDir::new("halfswap");
    stack.xtask_ok(&["up", "backend"]);
    let media = stack.volume("backend-media");
    // What a restore by a process that no longer exists left when it died in the middle of its
    // swap: part of the current content moved aside, the marker of the swap's first half not yet
    // written, the staged content complete.
    let pid = 4_194_304; // the kernel's PID_MAX_LIMIT: never a live process
    let crashed = format!(
        "set -e; cd /v; echo old-a > a; echo old-b > b; mkdir .xtask-old-{pid}; mv a .xtask-old-{pid}/; \
         mkdir -p .xtask-staging-{pid}/sub; echo new > .xtask-staging-{pid}/sub/new.txt; echo new-b > .xtask-staging-{pid}/b"
    );
    on_volume(&media, Access::Write, &crashed);
    // Any data command settles it first: here a backup.
    let (ok, _, err) = stack.xtask(&["backup", "--output-dir", dir.s()]);
    assert!(ok && err.contains(&format!("finish the swap an interrupted restore (pid {pid}) had begun")), "{err}");
    let listing = exact_listing(&media);
    assert!(!listing.contains(".xtask-"), "no leftovers: {listing}");
    let content = on_volume(&media, Access::ReadOnly, "cat /v/b /v/sub/new.txt; ls /v");
    assert_eq!(content, "new-b\nnew\nb\nsub\n", "the staged content is in place, the old one gone");
}

/// The engine's directory of `volume` (its `_data`), as `docker volume inspect` says.
fn data_dir(volume: &str) -> std::path::PathBuf {
    docker_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", volume]).trim().into()
}

/// Where the tool sees the engine's volume directory (root on a local engine, as on the test
/// bed), a volume's copy is staged beside its `_data`, out of its services' reach, and swapped
/// in by two renames whatever it holds: 5,000 top-level entries come back exactly, nothing
/// named `.xtask-*` ever appears inside the volume (a watcher lists it the whole time), `_data`
/// is a new directory (the staged one, renamed in) and nothing is left beside it.
#[test]
fn a_volume_is_staged_beside_its_data_and_swapped_in_whole() {
    if !engine() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stack = TestStack::sample("beside");
    let dir = TempDir::new("beside");
    stack.xtask_ok(&["up", "backend"]);
    let media = stack.volume("backend-media");
    on_volume(
        &media,
        Access::Write,
        "cd /v && seq 1 5000 | while read i; do echo $i > f$i; done; mkdir sub; echo deep > sub/x",
    );
    let before = exact_listing(&media);
    let archive = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"]);
    on_volume(&media, Access::Write, "echo changed > /v/f1; rm /v/f2; touch /v/new");
    let data = data_dir(&media);
    let inode_before = std::fs::metadata(&data).unwrap().ino();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (s, watched) = (stop.clone(), data.clone());
    let watcher = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !s.load(Ordering::SeqCst) {
            for e in std::fs::read_dir(&watched).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(".xtask-") {
                    seen.insert(name);
                }
            }
        }
        seen
    });
    let path = archive["path"].as_str().unwrap();
    let restored = stack.xtask(&["restore", path, "--only", "app-backend-media", "--yes", "--output-dir", dir.s()]);
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert!(restored.0, "{}", restored.2);
    assert!(seen.is_empty(), "nothing of the restore's inside the volume: {seen:?}");
    assert_eq!(exact_listing(&media), before, "every entry as archived");
    assert_ne!(std::fs::metadata(&data).unwrap().ino(), inode_before, "_data is the staged directory, renamed in");
    let beside: Vec<String> = std::fs::read_dir(data.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["_data"], "nothing left beside the volume");
}

/// A restore killed between the two renames of a swap beside the volume leaves no `_data`
/// (the old content moved aside, the staged one not yet renamed in): the next run of any data
/// command finishes that swap before it mounts the volume.
#[test]
fn a_swap_beside_the_volume_cut_off_between_its_renames_is_finished_by_the_next_run() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("halfbeside");
    let dir = TempDir::new("halfbeside");
    stack.xtask_ok(&["up", "backend"]);
    stack.compose(&["stop"]);
    let media = stack.volume("backend-media");
    on_volume(&media, Access::Write, "echo old > /v/a");
    let data = data_dir(&media);
    let parent = data.parent().unwrap().to_path_buf();
    let pid = 4_194_304; // the kernel's PID_MAX_LIMIT: never a live process
    let staged = parent.join(format!(".xtask-staging-{pid}"));
    std::fs::create_dir_all(staged.join("sub")).unwrap();
    std::fs::write(staged.join("sub/new.txt"), "new\n").unwrap();
    std::fs::rename(&data, parent.join(format!(".xtask-old-{pid}"))).unwrap();
    let (ok, _, err) = stack.xtask(&["backup", "--output-dir", dir.s()]);
    assert!(ok && err.contains(&format!("finish the swap an interrupted restore (pid {pid}) had begun")), "{err}");
    let beside: Vec<String> =
        std::fs::read_dir(&parent).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(beside, ["_data"], "the swap finished, its old content removed");
    assert_eq!(
        on_volume(&media, Access::ReadOnly, "cat /v/sub/new.txt; ls /v"),
        "new\nsub\n",
        "the staged content is in place"
    );
}

/// A service with `healthcheck: {disable: true}` counts as up once it runs, and a one-shot job
/// that exited 0 as done: `up` and a restore that stops and starts the service both succeed
/// (Compose's own `--wait` fails on such a service), the data comes back and the service runs.
#[test]
fn services_without_a_health_check_count_as_up_when_running() {
    if !engine() {
        return;
    }
    let compose = r#"name: nohealth
services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    healthcheck: {disable: true}
    volumes: [data:/data]
  job:
    image: ${APP_IMAGE:-busybox}
    command: ["true"]
volumes:
  data:
    name: ${NOHEALTH_PREFIX}-data
    labels: {xtask.role: data, xtask.priority: critical}
"#;
    let (_project, stack) = stack_from("nohealth", compose, "NOHEALTH_PREFIX");
    let backups = TempDir::new("nohealth-backups");
    stack.xtask_ok(&["up"]);
    let app = format!("{}-app-1", stack.project);
    docker_ok(&["exec", &app, "sh", "-c", "echo before > /data/f"]);
    let out = stack.xtask_json(&["backup", "--output-dir", backups.s(), "--json"]);
    let archive = out["path"].as_str().unwrap().to_string();
    docker_ok(&["exec", &app, "sh", "-c", "echo after > /data/f"]);
    let out = stack.xtask_json(&["restore", &archive, "--yes", "--json", "--output-dir", backups.s()]);
    assert!(out["downtime_seconds"].as_f64().is_some(), "the service was stopped and started again: {out}");
    assert_eq!(docker_ok(&["exec", &app, "cat", "/data/f"]).trim(), "before");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Running}}", &app]).trim(), "true");
}

/// A restore whose data leaves a service unhealthy after the swap takes the way back by itself:
/// the safety backup is restored, the service runs healthy again, and the error says so.
#[test]
fn a_service_unhealthy_after_the_swap_takes_the_way_back() {
    if !engine() {
        return;
    }
    let compose = r#"name: unhealthy
services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    healthcheck:
      test: ["CMD", "sh", "-c", "test ! -f /data/poison"]
      interval: 1s
      timeout: 2s
      retries: 2
    volumes: [data:/data]
volumes:
  data:
    name: ${UNHEALTHY_PREFIX}-data
    labels: {xtask.role: data, xtask.priority: critical}
"#;
    let (_project, stack) = stack_from("unhealthy", compose, "UNHEALTHY_PREFIX");
    let backups = TempDir::new("unhealthy-backups");
    stack.xtask_ok(&["up"]);
    let app = format!("{}-app-1", stack.project);
    docker_ok(&["exec", &app, "sh", "-c", "touch /data/poison"]);
    let out = stack.xtask_json(&["backup", "--output-dir", backups.s(), "--json"]);
    let poisoned = out["path"].as_str().unwrap().to_string();
    docker_ok(&["exec", &app, "sh", "-c", "rm /data/poison && echo now > /data/current"]);
    let (ok, _, err) = stack.xtask(&["restore", &poisoned, "--yes", "--output-dir", backups.s()]);
    assert!(!ok, "the restore reports its failure: {err}");
    assert!(err.contains("did not come back healthy") && err.contains("restored from the safety backup"), "{err}");
    let files = docker_ok(&["exec", &app, "ls", "/data"]);
    assert!(files.contains("current") && !files.contains("poison"), "the data as before the restore: {files}");
    stack.xtask_ok(&["status"]);
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &app]).trim(), "healthy");
}

/// SIGINT while a staged restore stops the volume's users (Compose's grace period, seconds):
/// the last moment with nothing replaced. The restore stops there: the staged copies go, the
/// services start again, the volume is as it was, and the exit says so.
#[test]
fn a_signal_while_the_services_stop_replaces_nothing() {
    if !engine() {
        return;
    }
    use std::io::Read;
    let stack = TestStack::sample("stopsig");
    let dir = TempDir::new("stopsig");
    stack.xtask_ok(&["up", "backend"]);
    let backend = format!("{}-backend-1", stack.project);
    docker_ok(&["exec", &backend, "sh", "-c", "echo old > /app/media/old.txt"]);
    let archive = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--level", "1"]);
    let archive = archive["path"].as_str().unwrap().to_string();
    docker_ok(&["exec", &backend, "sh", "-c", "rm /app/media/old.txt && echo current > /app/media/current.txt"]);
    let media = stack.volume("backend-media");
    let listing = || on_volume(&media, Access::ReadOnly, "cd /v && find . -type f -exec sha256sum {} + | sort");
    let before = listing();
    let mut child = stack.spawn(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    let mut stderr = child.stderr.take().unwrap();
    let (mut seen, mut buf) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&seen).contains("for the swap") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "the restore ended before it stopped its services: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "still stopping the services");
    std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    stderr.read_to_end(&mut seen).unwrap();
    let status = child.wait().unwrap();
    let text = String::from_utf8_lossy(&seen);
    assert!(!status.success() && text.contains("before the swap") && text.contains("as they were"), "{text}");
    assert_eq!(listing(), before, "nothing was replaced");
    let leftovers = on_volume(&media, Access::ReadOnly, "ls -a /v");
    assert!(!leftovers.contains(".xtask-"), "the staged copy went: {leftovers}");
    let st = stack.xtask_json(&["status", "--json"]);
    let state = st["services"].as_array().unwrap().iter().find(|s| s["service"] == "backend").unwrap()["state"].clone();
    assert_eq!(state, "running", "the service runs again");
}

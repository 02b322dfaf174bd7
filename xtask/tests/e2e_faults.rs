//! Faults on the live engine, each asserting that nothing was lost: kill -9 during a restore
//! (the safety backup brings the state back), the database container dying mid-dump (the backup
//! fails, no archive), a backup directory too small (refused before writing, nothing left), a
//! failure after each step of a restore's swap (the way back brings the state before it back).
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::*;

fn media_listing(stack: &TestStack) -> String {
    on_volume(&stack.volume("backend-media"), Access::ReadOnly, "cd /v && find . -type f -exec sha256sum {} + | sort")
}

#[test]
fn kill_during_restore_then_the_safety_backup_brings_the_state_back() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("killrestore");
    let dir = TempDir::new("killrestore");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    let backend = format!("{}-backend-1", stack.project);
    // The archive to restore: big enough that the restore takes a while.
    docker_ok(&["exec", &backend, "sh", "-c", "head -c 157286400 /dev/urandom > /app/media/old-big.bin"]);
    let old = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--level", "1"]);
    // The state the restore will overwrite.
    docker_ok(&["exec", &backend, "sh", "-c", "rm /app/media/old-big.bin && echo current > /app/media/current.txt"]);
    let before = media_listing(&stack);

    let mut child = stack.spawn(&["restore", old["path"].as_str().unwrap(), "--yes", "--output-dir", dir.s()]);
    // Wait for the safety backup to be complete, then for the refill to start, and kill -9.
    let safety = (0..600).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        dir.names().into_iter().find(|n| n.contains("_pre-restore.tar.zst") && !n.starts_with('.'))
    });
    let safety = safety.expect("the safety backup was written before anything was replaced");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the restore was still running when killed");
    child.kill().unwrap();
    child.wait().unwrap();

    // Whatever the kill left, the safety backup brings back the state from before.
    let undo = dir.0.join(&safety);
    stack.xtask_ok(&["restore", undo.to_str().unwrap(), "--yes", "--no-safety-backup", "--output-dir", dir.s()]);
    stack.xtask_ok(&["up", "backend"]);
    assert_eq!(media_listing(&stack), before, "the state before the interrupted restore is back");
    let orphans = helpers_on(&stack.volume("backend-media"));
    assert!(orphans.is_empty(), "helpers left by the killed run were removed: {orphans}");
}

#[test]
fn database_dying_mid_dump_fails_the_backup_and_leaves_no_archive() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("dbcrash");
    let dir = TempDir::new("dbcrash");
    stack.xtask_ok(&["up", "db"]);
    let db = format!("{}-db-1", stack.project);
    docker_ok(&[
        "exec", &db, "psql", "-U", "app", "-d", "app", "-q", "-c",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload FROM generate_series(1, 3000000) g",
    ]);
    let mut child = stack.spawn(&["backup-db", "--output-dir", dir.s()]);
    let dumping = (0..400).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(25));
        // The roles dump first (small), then the database's, each a file with no name.
        spooled_by(child.id(), &dir.0).iter().any(|&n| n > 1 << 20)
    });
    assert!(dumping, "the dump never started");
    docker_ok(&["kill", "--signal", "KILL", &db]);
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "a backup whose database died must fail");
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
    let left: Vec<String> = dir.names().into_iter().filter(|n| !n.starts_with(".xtask-")).collect();
    assert!(left.is_empty(), "no archive and no partial files left: {left:?}");
}

#[test]
fn backup_directory_too_small_is_refused_before_writing() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("full");
    let dir = TempDir::new("full");
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&dir.0).status();
    if !mounted.is_ok_and(|s| s.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a small tmpfs for the disk-full test (need root)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here");
        return;
    }
    stack.xtask_ok(&["up", "backend"]);
    docker_ok(&[
        "exec",
        &format!("{}-backend-1", stack.project),
        "sh",
        "-c",
        "head -c 20971520 /dev/urandom > /app/media/big.bin",
    ]);
    let (ok, _, err) = stack.xtask(&["backup", "--output-dir", dir.s(), "--exclude", &stack.volume("redis-data")]);
    assert!(!ok, "a backup that cannot fit must fail");
    assert!(err.contains("not enough free space") && err.contains(dir.s()), "{err}");
    let left: Vec<String> = dir.names().into_iter().filter(|n| !n.starts_with(".xtask-")).collect();
    assert!(left.is_empty(), "nothing written: {left:?}");
    let size = docker_ok(&["exec", &format!("{}-backend-1", stack.project), "stat", "-c", "%s", "/app/media/big.bin"]);
    assert_eq!(size.trim(), "20971520", "the data is untouched");
}

#[test]
fn a_service_that_fails_to_start_leaves_the_others_as_found() {
    if !engine() {
        return;
    }
    let mut stack = TestStack::sample("guard");
    let dir = TempDir::new("guard");
    stack.xtask_ok(&["up", "db", "redis"]);
    // No containers, the volumes kept: the backup has to start db and then redis.
    stack.compose(&["rm", "--stop", "--force", "db", "redis"]);
    // Redis now cannot start (an image named like Redis but without redis-server): the second
    // start fails.
    let broken = BrokenImage(format!("xtask-test/redis-broken-{}:local", std::process::id()));
    docker_ok(&["tag", "xtask-test/busybox:local", &broken.0]);
    stack.env.push(("REDIS_IMAGE".into(), broken.0.clone()));
    let (ok, _, err) = stack.xtask(&["backup", "--all", "--output-dir", dir.s()]);
    assert!(!ok, "the backup cannot succeed without Redis");
    assert!(err.contains("start service redis"), "{err}");
    let filter = format!("label=com.docker.compose.project={}", stack.project);
    let left = docker_ok(&["ps", "--all", "--quiet", "--filter", &filter]);
    assert!(left.trim().is_empty(), "db, started first, was removed again as it was found: {left}");
    assert!(
        dir.names().iter().all(|n| !n.ends_with(".tar.zst") && !n.ends_with(".tar.gz")),
        "no archive: {:?}",
        dir.names()
    );
}

#[test]
fn a_failure_after_each_step_of_the_swap_takes_the_way_back() {
    if !engine() {
        return;
    }
    let mut stack = TestStack::sample("faultswap");
    let dir = TempDir::new("faultswap");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    seed_sample(&stack);
    let old = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"]);
    // The state the restore replaces: more rows, another upload.
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "INSERT INTO items SELECT g, 'later' FROM generate_series(501, 600) g");
    docker_ok(&["exec", &format!("{}-backend-1", stack.project), "sh", "-c", "echo current > /app/media/current.txt"]);
    let before = sample_state(&stack);
    let running = || {
        let filter = format!("label=com.docker.compose.project={}", stack.project);
        let names = docker_ok(&["ps", "--filter", &filter, "--filter", "status=running", "--format", "{{.Names}}"]);
        let mut names: Vec<String> = names.lines().map(str::to_string).collect();
        names.sort();
        names
    };
    let services_before = running();
    assert_eq!(services_before.len(), 3, "db, redis and backend run: {services_before:?}");
    for step in ["volume-swap", "database-swap", "start", "health"] {
        stack.env.push(("XTASK_FAULT_AFTER".into(), step.into()));
        let (ok, _, err) = stack.xtask(&["restore", old["path"].as_str().unwrap(), "--yes", "--output-dir", dir.s()]);
        stack.env.pop();
        assert!(!ok, "a failure after {step} fails the restore");
        let said = format!("fault injected after the {step} step");
        assert!(
            err.contains(&said)
                && err.contains("the restore failed; the state before it was restored from the safety backup"),
            "after {step}: {err}"
        );
        assert_eq!(sample_state(&stack), before, "after a failure at {step}: the state before the restore is back");
        assert_eq!(running(), services_before, "after a failure at {step}: every service runs as before");
        let left = psql(&db, "postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'xtask%'");
        assert_eq!(left.trim(), "0", "after a failure at {step}: no staged or old database is left");
    }
}

/// An image tag this test made; removed (the tag only) when dropped.
struct BrokenImage(String);

impl Drop for BrokenImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}

/// `clean-all` does what was confirmed as far as it safely can: a step the engine refuses (here
/// one volume, which a container of someone else's still uses) does not keep the other volumes
/// from being removed; the exit is non-zero and names what is left and how to finish.
#[test]
fn clean_all_goes_on_past_a_step_the_engine_refuses() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("cleanpast");
    let dir = TempDir::new("cleanpast");
    stack.xtask_ok(&["up", "db", "backend", "proxy"]);
    let held = stack.volume("proxy-logs");
    let squatter = format!("{}-squatter", stack.project);
    let mount = format!("{held}:/held");
    docker_ok(&["run", "-d", "--name", &squatter, "-v", &mount, "xtask-test/busybox:local", "sleep", "600"]);
    let (ok, _, err) = stack.xtask(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", dir.s()]);
    let _ = docker(&["rm", "-f", &squatter]);
    assert!(!ok, "a refused step makes the exit non-zero: {err}");
    assert!(err.contains("1 of") && err.contains(&format!("remove volume {held}")), "{err}");
    assert!(err.contains("run `cargo xtask clean-all` again"), "{err}");
    let left = docker_ok(&["volume", "ls", "--quiet", "--filter", &format!("name=^{}-", stack.project)]);
    assert_eq!(left.trim(), held, "every other volume of the stack was removed all the same");
    stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", dir.s()]);
}

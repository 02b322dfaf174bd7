//! Archives are a trust boundary, on the live engine. A generator derives each attack from a
//! genuine archive of a test stack (as someone with write access to the backup directory
//! would, rewriting SHA256SUMS to match), and for each: `verify` exits 1 naming the entry and
//! the rule, `restore --yes` exits 1, and the volumes, databases, a volume outside the stack
//! and the host are exactly as before; no connection leaves for the address a crafted database
//! name points at; no file appears in the database container. The genuine archive still
//! verifies and restores. Then SIGTERM in the middle of a restore takes the way back.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn file(name: &str, data: &[u8]) -> Entry {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(data.len() as u64);
    Entry { header: h, name: name.as_bytes().to_vec(), link: None, data: data.to_vec() }
}

fn special(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Entry {
    let mut e = file(name, data);
    e.header.set_entry_type(kind);
    e.link = link.map(|l| l.as_bytes().to_vec());
    e
}

fn edit_metadata(entries: &mut [Entry], f: impl FnOnce(&mut serde_json::Value)) {
    let mut m: serde_json::Value = serde_json::from_slice(&entries[0].data).unwrap();
    f(&mut m);
    entries[0].data = serde_json::to_vec_pretty(&m).unwrap();
}

fn insert_before_sums(entries: &mut Vec<Entry>, e: Entry) {
    let at = content_end(entries);
    entries.insert(at, e);
}

/// An edit of a genuine archive's entries.
type Attack<'a> = dyn Fn(&mut Vec<Entry>) + 'a;

/// Everything an attack must leave as it was.
#[derive(Debug, PartialEq)]
struct World {
    media: String,
    victim: String,
    items: String,
    databases: String,
    db_tmp: String,
}

fn listing(volume: &str) -> String {
    on_volume(
        volume,
        Access::ReadOnly,
        "cd /v && find . -exec stat -c '%n|%a|%u|%g|%F|%s' {} + | sort && find . -type f -exec sha256sum {} + | sort",
    )
}

fn world(stack: &TestStack, victim: &str) -> World {
    let db = format!("{}-db-1", stack.project);
    World {
        media: listing(&stack.volume("backend-media")),
        victim: listing(victim),
        items: psql(&db, "app", "SELECT count(*) || ':' || md5(string_agg(i::text, ',' ORDER BY id)) FROM items i"),
        databases: psql(&db, "postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"),
        db_tmp: docker_ok(&["exec", &db, "sh", "-c", "ls -a /tmp /var/lib/postgresql; ls -a / | sort"]),
    }
}

/// A volume outside the stack, with content an attack must not touch; removed when dropped.
struct Victim(String);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "--force", &self.0]);
    }
}

#[test]
fn crafted_archives_are_refused_and_change_nothing() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("trust");
    let dir = TempDir::new("trust");
    let victim = Victim(format!("{}-victim", stack.project.replace("xt-", "xv-")));
    docker_ok(&["volume", "create", &victim.0]);
    on_volume(&victim.0, Access::Write, "echo precious > /v/keep");
    stack.xtask_ok(&["up", "db", "backend"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 300) g;");
    let backend = format!("{}-backend-1", stack.project);
    docker_ok(&["exec", &backend, "sh", "-c", "mkdir -p /app/media/sub && echo upload > /app/media/sub/a.txt"]);
    let own = dir.0.join("made-by-the-tool");
    let genuine = stack.xtask_json(&["backup", "--output-dir", own.to_str().unwrap(), "--json", "--level", "1"]);
    let genuine = PathBuf::from(genuine["path"].as_str().unwrap());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&own).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "a directory the tool creates is private");
    let before = world(&stack, &victim.0);
    let entries = load(&genuine);
    let media = format!("volumes/{}", stack.volume("backend-media"));

    // Where a crafted connection string would send the password: a listener on the stack's gateway.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = docker_ok(&[
        "network",
        "inspect",
        &format!("{}_default", stack.project),
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    let conn = format!("host={} port={port} dbname=app", gateway.trim());

    let attacks: Vec<(&str, Box<Attack>, &str)> = vec![
        (
            "connection-string",
            Box::new(|e| edit_metadata(e, |m| m["databases"][0]["databases"][0]["name"] = conn.clone().into())),
            "outside the allowed characters",
        ),
        (
            "template1",
            Box::new(|e| edit_metadata(e, |m| m["databases"][0]["databases"][0]["name"] = "dbname=template1".into())),
            "outside the allowed characters",
        ),
        (
            "table-sql",
            Box::new(|e| {
                edit_metadata(e, |m| {
                    let t = m["databases"][0]["databases"]
                        .as_array_mut()
                        .unwrap()
                        .iter_mut()
                        .find(|d| d["name"] == "app")
                        .unwrap();
                    t["tables"] = serde_json::json!({"\"public\".\"items\"; DROP TABLE items; --": 300});
                })
            }),
            "table",
        ),
        (
            "dir-with-data",
            Box::new(|e| {
                insert_before_sums(
                    e,
                    special(&format!("{media}/hidden/"), tar::EntryType::Directory, None, b"a hidden tar stream"),
                )
            }),
            "carries 19 bytes",
        ),
        (
            "device",
            Box::new(|e| insert_before_sums(e, special(&format!("{media}/sda"), tar::EntryType::Block, None, b""))),
            "--allow-special-files",
        ),
        (
            "fifo",
            Box::new(|e| insert_before_sums(e, special(&format!("{media}/pipe"), tar::EntryType::Fifo, None, b""))),
            "--allow-special-files",
        ),
        (
            "duplicate-dump",
            Box::new(|e| {
                let dump = e.iter().find(|x| x.name == b"databases/db/app.sql").unwrap().clone();
                let mut evil = dump.clone();
                evil.data = b"DROP TABLE items;\n".to_vec();
                let at = e.iter().position(|x| x.name == b"databases/db/app.sql").unwrap();
                e.insert(at, evil);
            }),
            "appears twice",
        ),
        (
            "dot-component",
            Box::new(|e| insert_before_sums(e, file(&format!("{media}/./sub/x"), b"x"))),
            "'.' path component",
        ),
        (
            "double-slash",
            Box::new(|e| insert_before_sums(e, file(&format!("{media}//sub/x"), b"x"))),
            "empty path component",
        ),
        (
            "dotdot",
            Box::new(|e| insert_before_sums(e, file(&format!("{media}/../../../tmp/xtask-pwned"), b"x"))),
            "'..'",
        ),
        (
            "symlink-escape",
            Box::new(|e| {
                insert_before_sums(e, special(&format!("{media}/esc"), tar::EntryType::Symlink, Some("/"), b""));
                insert_before_sums(e, file(&format!("{media}/esc/tmp/xtask-pwned"), b"x"));
            }),
            "not an earlier directory entry",
        ),
        (
            "hardlink-out",
            Box::new(|e| {
                insert_before_sums(e, special(&format!("{media}/h"), tar::EntryType::Link, Some("/etc/shadow"), b""))
            }),
            "hard link",
        ),
        (
            "shell-in-dump",
            Box::new(|e| {
                let d = e.iter_mut().find(|x| x.name == b"databases/db/app.sql").unwrap();
                let at = d.data.windows(4).position(|w| w == b"\nSET").unwrap() + 1;
                d.data.splice(at..at, b"\\! touch /tmp/pwned\n".iter().copied());
            }),
            "psql meta-command",
        ),
        (
            "copy-program",
            Box::new(|e| {
                let d = e.iter_mut().find(|x| x.name == b"databases/db/app.sql").unwrap();
                let at = d.data.windows(4).position(|w| w == b"\nSET").unwrap() + 1;
                d.data.splice(at..at, b"COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned';\n".iter().copied());
            }),
            "PROGRAM",
        ),
        (
            "copy-in-roles",
            Box::new(|e| {
                let d = e.iter_mut().find(|x| x.name == b"databases/db/globals.sql").unwrap();
                d.data.extend_from_slice(b"COPY nothing FROM stdin;\n\\! touch /tmp/pwned\n\\.\n");
            }),
            "holds table data",
        ),
        ("huge-metadata", Box::new(|e| e[0].data.extend(std::iter::repeat_n(b' ', 17 << 20))), "at most 16 MiB"),
        ("after-sums", Box::new(|e| e.push(file(&format!("{media}/late"), b"late"))), "after SHA256SUMS"),
        (
            "stray-top-level",
            Box::new(|e| insert_before_sums(e, file("etc/cron.d/x", b"* * * * * root id"))),
            "outside metadata.json",
        ),
    ];
    for (name, attack, rule) in &attacks {
        let mut crafted = entries.clone();
        attack(&mut crafted);
        let path = dir.0.join(format!("crafted-{name}.tar.gz"));
        save(&path, crafted, true);
        let (ok, _, err) = stack.xtask(&["verify", path.to_str().unwrap(), "--output-dir", dir.s()]);
        assert!(!ok, "{name}: verify passed");
        assert!(
            err.contains(rule) && err.contains("entry") || err.contains(rule) && err.contains("metadata"),
            "{name}: {err}"
        );
        let (ok, _, err) = stack.xtask(&["restore", path.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
        assert!(!ok, "{name}: restore passed");
        assert!(err.contains(rule) && !err.contains("swap"), "{name}: refused before any swap: {err}");
        assert_eq!(world(&stack, &victim.0), before, "{name}: something changed");
    }

    // Content altered without rewriting SHA256SUMS: a checksum mismatch.
    let mut altered = entries.clone();
    altered.iter_mut().find(|x| x.name.ends_with(b"sub/a.txt")).unwrap().data = b"forged\n".to_vec();
    let path = dir.0.join("crafted-altered.tar.gz");
    save(&path, altered, false);
    let (ok, _, err) = stack.xtask(&["verify", path.to_str().unwrap(), "--output-dir", dir.s()]);
    assert!(!ok && err.contains("sub/a.txt") && err.contains("checksum mismatch"), "{err}");
    // Restored, it fails late (the mismatch shows only at SHA256SUMS, after the staging): the
    // staged copies are removed and nothing else changed; no safety backup was needed.
    let (ok, _, err) = stack.xtask(&["restore", path.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
    assert!(!ok && err.contains("checksum mismatch") && err.contains("before anything was replaced"), "{err}");
    assert_eq!(world(&stack, &victim.0), before, "late failure: something changed");
    assert!(!listing(&stack.volume("backend-media")).contains(".xtask-"), "staging removed");
    assert!(dir.names().iter().all(|n| !n.contains("pre-restore")), "no safety backup taken: {:?}", dir.names());

    // A volume outside the stack in a well-formed archive: restore refuses, the volume is untouched.
    let mut outside = entries.clone();
    edit_metadata(&mut outside, |m| {
        let vols = m["volumes"].as_array_mut().unwrap();
        let mut v = vols.iter().find(|v| v["key"] == "app-backend-media").unwrap().clone();
        v["key"] = "intruder".into();
        v["name"] = victim.0.clone().into();
        v["entry"] = format!("volumes/{}/", victim.0).into();
        vols.push(v);
    });
    insert_before_sums(&mut outside, special(&format!("volumes/{}/", victim.0), tar::EntryType::Directory, None, b""));
    insert_before_sums(&mut outside, file(&format!("volumes/{}/keep", victim.0), b"overwritten\n"));
    let path = dir.0.join("crafted-outside.tar.gz");
    save(&path, outside, true);
    let (ok, _, err) =
        stack.xtask(&["restore", path.to_str().unwrap(), "--yes", "--no-safety-backup", "--output-dir", dir.s()]);
    assert!(!ok && err.contains(&victim.0) && err.contains("not a volume of this stack"), "{err}");
    assert_eq!(world(&stack, &victim.0), before, "outside: something changed");

    // A FIFO where an archive should be.
    let fifo = dir.0.join("fifo.tar.gz");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (ok, _, err) = stack.xtask(&["verify", fifo.to_str().unwrap(), "--output-dir", dir.s()]);
    assert!(!ok && err.contains("not a regular file"), "{err}");
    std::fs::remove_file(&fifo).unwrap();

    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "a connection arrived");
    assert!(!Path::new("/tmp/xtask-pwned").exists() && !Path::new("/tmp/pwned").exists());

    // The genuine archive still verifies and restores, with the dumps loaded as the postgres user.
    stack.xtask_ok(&["verify", genuine.to_str().unwrap(), "--output-dir", dir.s()]);
    // --dry-run never starts a container, not even verify --deep's throwaway ones.
    // (Its own containers only: other runs on the machine may verify at the same time.)
    let run = stack.spawn(&["verify", genuine.to_str().unwrap(), "--deep", "--dry-run", "--output-dir", dir.s()]);
    let pid = run.id();
    let out = run.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("--deep skipped"), "{err}");
    let own = format!("label=xtask.pid={pid}");
    let helpers = docker_ok(&["ps", "--all", "--quiet", "--filter", "label=xtask.helper=1", "--filter", &own]);
    assert!(helpers.trim().is_empty(), "{helpers}");
    psql(&db, "app", "DELETE FROM items WHERE id > 100");
    stack.xtask_ok(&["restore", genuine.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
    let after = world(&stack, &victim.0);
    assert_eq!((after.items, after.media, after.victim), (before.items, before.media, before.victim));
}

/// Starts a restore of `archive` and returns it once it prints `line` (stderr is read meanwhile).
fn restore_until(
    stack: &TestStack,
    archive: &str,
    dir: &TempDir,
    line: &str,
    extra: &[&str],
) -> (std::process::Child, Vec<u8>, std::sync::mpsc::Receiver<Vec<u8>>) {
    let mut args = vec!["restore", archive, "--yes", "--output-dir", dir.s()];
    args.extend(extra);
    let mut child = stack.spawn(&args);
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(line) {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "restore ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
        let _ = tx.send(rest);
    });
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "the restore was still running when signalled");
    (child, seen, rx)
}

/// The seeded stack of the interruption tests: a 200 MiB file in the archive, then other content.
fn interrupted_setup(name: &str) -> (TestStack, TempDir, String, String) {
    let stack = TestStack::sample(name);
    let dir = TempDir::new(name);
    stack.xtask_ok(&["up", "db", "backend"]);
    let backend = format!("{}-backend-1", stack.project);
    docker_ok(&["exec", &backend, "sh", "-c", "head -c 209715200 /dev/urandom > /app/media/big.bin"]);
    let old = stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json", "--level", "1"]);
    docker_ok(&["exec", &backend, "sh", "-c", "rm /app/media/big.bin && echo current > /app/media/current.txt"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE now_only (id int); INSERT INTO now_only VALUES (1), (2)");
    let archive = old["path"].as_str().unwrap().to_string();
    (stack, dir, archive, backend)
}

#[test]
fn sigterm_during_restore_leaves_everything_as_it_was() {
    if !engine() {
        return;
    }
    let (stack, dir, archive, backend) = interrupted_setup("sigterm");
    let before = listing(&stack.volume("backend-media"));
    let (mut child, mut seen, rest) = restore_until(&stack, &archive, &dir, "==> stage volume", &[]);
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    seen.extend(rest.recv().unwrap_or_default());
    let text = String::from_utf8_lossy(&seen);
    assert!(!status.success(), "an interrupted restore exits non-zero: {text}");
    assert!(text.contains("interrupted") && text.contains("before anything was replaced"), "{text}");
    assert!(!text.contains("restored from the safety backup"), "no safety backup was needed: {text}");
    assert_eq!(listing(&stack.volume("backend-media")), before, "the volume is exactly as before, no staging left");
    let db = format!("{}-db-1", stack.project);
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM now_only"), "2", "the database is as before");
    let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &backend]);
    assert_eq!(state.trim(), "true", "the service kept running while the copy was staged");
    let _ = std::io::stdout().flush();
}

#[test]
fn kill_9_while_staging_is_cleaned_by_the_next_run() {
    if !engine() {
        return;
    }
    let (stack, dir, archive, _backend) = interrupted_setup("kill9stage");
    let media = stack.volume("backend-media");
    let before = listing(&media);
    let (mut child, _, _) = restore_until(&stack, &archive, &dir, "==> stage volume", &[]);
    // Killed once its staging directory exists beside the volume's `_data` (on a loaded machine
    // the helper may take a while to start; a helper started by a killed run is the next run's
    // orphan, not this test's point).
    let data = docker_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &media]);
    let beside = std::path::Path::new(data.trim()).parent().unwrap().to_path_buf();
    let staged = || {
        std::fs::read_dir(&beside)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".xtask-staging-"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !staged() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(staged(), "the killed restore left its staging beside the volume");
    assert_eq!(listing(&media), before, "nothing inside the volume changed");
    // The next restore removes the staging left behind, says so, and restores.
    let out = stack.xtask(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    assert!(out.0 && out.2.contains("remove the staged copy an interrupted restore"), "{}", out.2);
    let restored = listing(&media);
    assert!(!restored.contains(".xtask-"), "{restored}");
    assert!(restored.contains("./big.bin"), "the archive's content is in place: {restored}");
}

#[test]
fn a_database_load_that_fails_half_way_changes_nothing() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("dbfail");
    let dir = TempDir::new("dbfail");
    stack.xtask_ok(&["up", "db"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 300) g;");
    let genuine = stack.xtask_json(&["backup-db", "--output-dir", dir.s(), "--json"]);
    let genuine = genuine["path"].as_str().unwrap().to_string();
    psql(&db, "app", "INSERT INTO items SELECT g, 'later' FROM generate_series(301, 350) g");
    let state = || {
        let items =
            psql(&db, "app", "SELECT count(*) || ':' || md5(string_agg(i::text, ',' ORDER BY id)) FROM items i");
        (items, psql(&db, "postgres", "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"))
    };
    let before = state();
    // Plain SQL that verifies (sums rewritten, counts kept) but fails half-way through the load,
    // and a roles dump that would make a superuser and lock the app's role out.
    let mut entries = load(Path::new(&genuine));
    let d = entries.iter_mut().find(|x| x.name == b"databases/db/app.sql").unwrap();
    let at = d.data.windows(4).position(|w| w == b"\n\\.\n").unwrap() + 4;
    d.data.splice(at..at, b"INSERT INTO \"public\".\"items\" VALUES (1, 'again');\n".iter().copied());
    let g = entries.iter_mut().find(|x| x.name == b"databases/db/globals.sql").unwrap();
    g.data.extend_from_slice(b"CREATE ROLE \"evil\";\nALTER ROLE \"evil\" WITH SUPERUSER LOGIN PASSWORD 'x';\nALTER ROLE \"app\" WITH NOLOGIN;\n");
    let crafted = dir.0.join("db_backup_crafted.tar.gz");
    save(&crafted, entries, true);
    stack.xtask_ok(&["verify", crafted.to_str().unwrap()]);
    let roles = || {
        psql(&db, "postgres", "SELECT string_agg(rolname || ':' || rolsuper || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('app', 'evil')")
    };
    let roles_before = roles();
    let (ok, _, err) = stack.xtask(&["restore", crafted.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
    assert!(!ok && err.contains("before anything was replaced") && err.contains("duplicate"), "{err}");
    assert!(!err.contains("restored from the safety backup"), "the live database was never touched: {err}");
    assert_eq!(state(), before, "rows, checksum and the list of databases as before");
    assert_eq!(roles(), roles_before, "no role was made or changed before the swap");
    // The genuine archive swaps in by rename, and leaves no copy behind.
    let out = stack.xtask_ok(&["restore", &genuine, "--yes", "--output-dir", dir.s()]);
    assert!(out.contains("restored"), "{out}");
    let (items, databases) = state();
    assert!(items.starts_with("300:"), "{items}");
    assert!(!databases.contains("xtask_"), "{databases}");
}

/// Seconds since the Unix epoch, as the restore reports its moments.
fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// The order of events, not a wall-clock ratio a loaded machine can break: the service runs
/// while the copy is staged, it is seen stopped only between the stop and the restart the
/// restore reports, and the swap's renames all fall inside that window.
#[test]
fn services_are_stopped_only_for_the_swap() {
    if !engine() {
        return;
    }
    let (stack, dir, archive, backend) = interrupted_setup("downtime");
    // Poll the service while the restore runs: (asked at, answered at, running).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, name) = (done.clone(), backend.clone());
    let poller = std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            let asked = unix_now();
            let out = docker(&["inspect", "-f", "{{.State.Running}}", &name]);
            samples.push((asked, unix_now(), String::from_utf8_lossy(&out.stdout).trim() == "true"));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        samples
    });
    let out = stack.xtask_json(&["restore", &archive, "--yes", "--json", "--output-dir", dir.s()]);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = poller.join().unwrap();
    let m = &out["downtime"];
    let at = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("the restore reports {k}: {out}"));
    let (stop, first, last, running) = (at("stop_began"), at("swap_began"), at("swap_ended"), at("running_again"));
    assert!(stop <= first && first <= last && last <= running, "stop, swap, restart in order: {m}");
    let reported = out["downtime_seconds"].as_f64().expect("the downtime is reported");
    assert!((reported - (running - stop)).abs() < 0.01, "downtime_seconds is the stop-to-running window: {out}");
    let staging = samples.iter().filter(|(_, answered, _)| *answered < stop).count();
    assert!(staging >= 3, "the service was polled while the copy was staged: {samples:?}");
    for (asked, answered, up) in &samples {
        let inside = *answered >= stop && *asked <= running;
        assert!(*up || inside, "seen stopped at {asked:.2}..{answered:.2}, outside {stop:.2}..{running:.2}");
    }
    assert!(samples.iter().any(|(_, _, up)| !*up) || running - stop < 0.5, "the window was seen: {samples:?}");
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.Running}}", &backend]).trim(), "true", "running again");
    assert!(listing(&stack.volume("backend-media")).contains("./big.bin"), "restored");
}

#[test]
fn sigterm_during_an_in_place_restore_takes_the_way_back() {
    if !engine() {
        return;
    }
    let (stack, dir, archive, backend) = interrupted_setup("sigterminplace");
    let before = listing(&stack.volume("backend-media"));
    // --in-place empties the volume first: once it is being refilled, only the way back helps.
    let (mut child, mut seen, rest) = restore_until(&stack, &archive, &dir, "==> fill volume", &["--in-place"]);
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    seen.extend(rest.recv().unwrap_or_default());
    let text = String::from_utf8_lossy(&seen);
    assert!(!status.success(), "an interrupted restore exits non-zero: {text}");
    assert!(text.contains("interrupted") && text.contains("restored from the safety backup"), "{text}");
    assert_eq!(listing(&stack.volume("backend-media")), before, "the volume is as before the restore");
    let db = format!("{}-db-1", stack.project);
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM now_only"), "2", "the database is as before");
    let state = docker_ok(&["inspect", "-f", "{{.State.Running}}", &backend]);
    assert_eq!(state.trim(), "true", "the stopped service was started again");
}

/// A forged dump that runs code while it loads (a function called by `CREATE TABLE … AS`, which
/// no scanner can tell from pg_dump's own statements) runs it as the throwaway role that owns
/// only the staged copy: what it tries beyond that copy is denied, and nothing live changes. A
/// genuine dump comes back with its owners, default privileges and extensions (one of them
/// one only a superuser may create), and the role is gone afterwards.
#[test]
fn a_dump_runs_as_a_role_that_owns_only_its_staged_copy() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("loader");
    let dir = TempDir::new("loader");
    stack.xtask_ok(&["up", "db"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE EXTENSION pgcrypto; CREATE EXTENSION pageinspect; CREATE ROLE reader; \
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO reader; \
        CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 300) g; \
        CREATE TABLE theirs (x int); ALTER TABLE theirs OWNER TO reader; REVOKE DELETE, TRUNCATE ON theirs FROM reader; \
        CREATE TABLE guarded (x int); INSERT INTO guarded VALUES (1), (2); ALTER TABLE guarded ENABLE ROW LEVEL SECURITY; \
        ALTER TABLE guarded FORCE ROW LEVEL SECURITY; CREATE POLICY nobody ON guarded USING (false); \
        REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT USAGE ON SCHEMA public TO reader; \
        CREATE FUNCTION named(a integer, b text) RETURNS text LANGUAGE sql AS 'SELECT b'; \
        ALTER FUNCTION named(integer, text) OWNER TO reader; REVOKE EXECUTE ON FUNCTION named(integer, text) FROM PUBLIC; \
        COMMENT ON DATABASE app IS 'the app''s data'; ALTER DATABASE postgres OWNER TO reader;");
    let genuine = stack.xtask_json(&["backup-db", "--output-dir", dir.s(), "--json"]);
    let genuine = genuine["path"].as_str().unwrap().to_string();
    let state = || {
        let items =
            psql(&db, "app", "SELECT count(*) || ':' || md5(string_agg(i::text, ',' ORDER BY id)) FROM items i");
        let roles = psql(
            &db,
            "postgres",
            "SELECT string_agg(rolname || ':' || rolsuper, ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_'",
        );
        let databases = psql(
            &db,
            "postgres",
            "SELECT string_agg(datname || ':' || pg_get_userbyid(datdba) || datconnlimit || datistemplate || datallowconn \
             || coalesce(datacl::text, '') || coalesce(shobj_description(oid, 'pg_database'), ''), ',' ORDER BY datname) \
             FROM pg_database",
        );
        let files = docker_ok(&["exec", &db, "sh", "-c", "ls -a /tmp /var/lib/postgresql"]);
        let settings = psql(&db, "postgres", "SELECT count(*) FROM pg_db_role_setting");
        let acls = psql(
            &db,
            "app",
            "SELECT string_agg(relname || ':' || coalesce(relacl::text, ''), ',' ORDER BY relname) \
            FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'",
        ) + &psql(
            &db,
            "app",
            "SELECT nspacl::text || (SELECT proowner::regrole::text || proacl::text FROM pg_proc WHERE proname = 'named') \
            FROM pg_namespace WHERE nspname = 'public'",
        );
        (items, roles, databases, files, settings, acls)
    };
    let before = state();
    assert!(!before.1.contains("xtask_"), "{}", before.1);

    let attacks: [(&str, &[u8]); 3] = [
        ("role", b"EXECUTE 'CREATE ROLE \"xtask_e2e_pwned\" SUPERUSER LOGIN';"),
        // A copy made a template cannot be dropped: the role would stay, and so would the copy.
        ("template", b"EXECUTE pg_catalog.format('ALTER DATABASE %I IS_TEMPLATE true', current_database()); \
            EXECUTE 'CREATE ROLE \"xtask_e2e_pwned\"';"),
        ("file", b"EXECUTE 'ALTER DATABASE \"postgres\" CONNECTION LIMIT 0'; EXECUTE 'COPY (SELECT 1) TO ''/tmp/pwned-by-dump''';"),
    ];
    for (name, body) in attacks {
        let mut entries = load(Path::new(&genuine));
        let d = entries.iter_mut().find(|x| x.name == b"databases/db/app.sql").unwrap();
        let at = d.data.windows(13).position(|w| w == b"\nCREATE TABLE").unwrap() + 1;
        let mut evil = b"CREATE FUNCTION \"public\".\"evil\"() RETURNS integer LANGUAGE plpgsql AS $$ BEGIN ".to_vec();
        evil.extend_from_slice(body);
        evil.extend_from_slice(
            b" RETURN 1; END $$;\nCREATE TABLE \"public\".\"pwn\" AS SELECT \"public\".\"evil\"() AS \"x\";\n",
        );
        d.data.splice(at..at, evil);
        let crafted = dir.0.join(format!("db_backup_forged-{name}.tar.gz"));
        save(&crafted, entries, true);
        // The scanner cannot tell this from pg_dump's own SQL: verify passes; the role stops it.
        stack.xtask_ok(&["verify", crafted.to_str().unwrap()]);
        let (ok, _, err) = stack.xtask(&["restore", crafted.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
        assert!(!ok && err.contains("before anything was replaced"), "{name}: {err}");
        assert!(err.contains("owns only its staged copy"), "{name}: the error says why: {err}");
        assert_eq!(state(), before, "{name}: rows, roles, databases and server files as before");
    }

    // Lines the stack's user replays that name what the dump did not make (pg_catalog's
    // functions and schema), a SECURITY DEFINER function handed to the superuser, and settings
    // on the copy's own database: the first are not replayed, nobody can call the function
    // before the swap, none of the settings reaches the live database.
    let catalog = || {
        psql(&db, "app", "SELECT (SELECT proacl::text FROM pg_proc WHERE oid = 'pg_catalog.lo_export(oid, text)'::regprocedure) \
            || '|' || (SELECT nspowner::regrole::text || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'pg_catalog')")
    };
    let catalog_before = catalog();
    let mut entries = load(Path::new(&genuine));
    let d = entries.iter_mut().find(|x| x.name == b"databases/db/app.sql").unwrap();
    let at = d.data.windows(13).position(|w| w == b"\nCREATE TABLE").unwrap() + 1;
    d.data.splice(at..at, br#"CREATE FUNCTION "public"."atk_esc"() RETURNS integer LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE 'CREATE ROLE "xtask_e2e_pwned" SUPERUSER LOGIN'; RETURN 1; END $$;
ALTER FUNCTION "public"."atk_esc"() OWNER TO "app";
GRANT ALL ON FUNCTION "pg_catalog"."lo_export"(oid, text) TO PUBLIC;
GRANT CREATE ON SCHEMA "pg_catalog" TO PUBLIC;
ALTER SCHEMA "pg_catalog" OWNER TO "reader";
CREATE FUNCTION "public"."atk_db"() RETURNS integer LANGUAGE plpgsql AS $$ BEGIN EXECUTE pg_catalog.format('ALTER DATABASE %I IS_TEMPLATE true CONNECTION LIMIT 5', current_database()); EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = public', current_database()); EXECUTE pg_catalog.format('GRANT ALL ON DATABASE %I TO PUBLIC', current_database()); RETURN 1; END $$;
CREATE TABLE "public"."atk_db_done" AS SELECT "public"."atk_db"() AS "x";
"#.iter().copied());
    let crafted = dir.0.join("db_backup_forged-catalog.tar.gz");
    save(&crafted, entries, true);
    stack.xtask_ok(&["verify", crafted.to_str().unwrap()]);
    let (_, _, err) = stack.xtask(&["restore", crafted.to_str().unwrap(), "--yes", "--output-dir", dir.s()]);
    assert!(err.contains("not replayed, it names an object the dump did not create"), "{err}");
    let after = state();
    assert!(!after.1.contains("xtask_e2e_pwned") && !after.1.contains("xtask_load"), "{err}\n{}", after.1);
    assert_eq!(after.2, before.2, "the live database is no template, unlimited, default privileges: {err}");
    assert_eq!(after.4, before.4, "no setting of the staged copy reached the live database: {err}");
    assert_eq!(catalog(), catalog_before, "pg_catalog's privileges and owner as before: {err}");

    // The genuine archive: owners, privileges, default privileges, a table only its policy
    // shows to its owner, and the extensions come back.
    psql(&db, "app", "DELETE FROM items WHERE id > 100");
    stack.xtask_ok(&["restore", &genuine, "--yes", "--output-dir", dir.s()]);
    assert_eq!(state(), before, "restored; no loading role or staged copy left");
    let owners = psql(&db, "app", "SELECT string_agg(tablename || ':' || tableowner, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(owners, "guarded:app,items:app,theirs:reader");
    let extensions = psql(&db, "app", "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension");
    assert_eq!(extensions, "pageinspect,pgcrypto,plpgsql");
    let defaults = psql(&db, "app", "SELECT count(*) FROM pg_default_acl WHERE defaclacl::text LIKE '%reader=r/app%'");
    assert_eq!(defaults, "1");
    let db_owner = psql(&db, "postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'");
    assert_eq!(db_owner, "app");
}

/// Someone who can rename entries in the backup directory (write on the directory, no read of
/// our files), watching it as an attacker would: every regular file that appears in it or in a
/// directory inside it, other than the archives themselves, is replaced at once by a forged
/// one of the same name (a rename over it). Runs until dropped; `swapped` lists what it hit.
struct Swapper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    swapped: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Swapper {
    fn watch(dir: &Path, forged: &'static [u8]) -> Swapper {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (dir, s, w) = (dir.to_path_buf(), stop.clone(), swapped.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                for path in Self::victims(&dir) {
                    let forgery = dir.join(format!(".forgery-{}", w.lock().unwrap().len()));
                    std::fs::write(&forgery, forged).unwrap();
                    if std::fs::rename(&forgery, &path).is_ok() {
                        w.lock().unwrap().push(path.display().to_string());
                    }
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        });
        Swapper { stop, swapped, thread: Some(thread) }
    }

    /// Regular files in `dir` and one level below that are not archives, signatures, markers,
    /// the lock, a partial archive (signed when complete) or the attacker's own.
    fn victims(dir: &Path) -> Vec<PathBuf> {
        let ours = |n: &str| {
            n.ends_with(".tar.zst")
                || n.ends_with(".tar.gz")
                || n.ends_with(".sig")
                || n.ends_with(".verified")
                || n.ends_with(".lock")
                || n.contains(".tmp-")
                || n.starts_with(".forgery-")
                || n.starts_with(".swapped-")
        };
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return found };
        for e in entries.flatten() {
            let (name, path) = (e.file_name().to_string_lossy().into_owned(), e.path());
            match e.file_type() {
                Ok(t) if t.is_file() && !ours(&name) => found.push(path),
                Ok(t) if t.is_dir() => {
                    let inner = std::fs::read_dir(&path).into_iter().flatten().flatten();
                    found.extend(inner.filter(|i| i.file_type().is_ok_and(|t| t.is_file())).map(|i| i.path()));
                }
                _ => {}
            }
        }
        found
    }

    fn swapped(mut self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.swapped.lock().unwrap().clone()
    }
}

#[test]
fn files_swapped_by_name_during_a_backup_and_a_restore_change_nothing() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("swap");
    let dir = TempDir::new("swap");
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    seed_sample(&stack);
    let db = format!("{}-db-1", stack.project);
    let before = sample_state(&stack);
    // What a forged dump or roles file would do if it were ever loaded.
    let forged = b"CREATE TABLE public.swapped_in (x int);\nCREATE ROLE swapped_in SUPERUSER;\n";
    let attacker = Swapper::watch(&dir.0, forged);
    let archive =
        stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"])["path"].as_str().unwrap().to_string();
    // The name's stamp and the metadata's created_at are the same moment (the backup's start),
    // however long its dumps take.
    let created_at = load(Path::new(&archive))[0].data.clone();
    let created_at = serde_json::from_slice::<serde_json::Value>(&created_at).unwrap()["created_at"].clone();
    let name = archive.rsplit('/').next().unwrap();
    let parts: Vec<&str> = name.split('_').collect();
    let stamp = format!("{}{}", parts[2], &parts[3][..6]);
    let digits: String = created_at.as_str().unwrap().chars().filter(char::is_ascii_digit).collect();
    assert_eq!(digits, stamp, "{archive}: created_at {created_at}");
    // The live state moves on; the restore must bring back exactly what was backed up.
    psql(&db, "app", "DELETE FROM items WHERE id > 250");
    stack.xtask_ok(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    let swapped = attacker.swapped();
    assert!(swapped.is_empty(), "no file the tool uses was reachable by name: {swapped:?}");
    assert_eq!(sample_state(&stack), before, "rows, files and keys as backed up");
    let tables = psql(&db, "app", "SELECT count(*) FROM pg_tables WHERE tablename = 'swapped_in'");
    let roles = psql(&db, "app", "SELECT count(*) FROM pg_roles WHERE rolname = 'swapped_in'");
    assert_eq!((tables.as_str(), roles.as_str()), ("0", "0"), "nothing forged was loaded");
    let entries = load(Path::new(&archive));
    assert!(!entries.iter().any(|e| e.data.windows(10).any(|w| w == b"swapped_in")), "nothing forged was archived");
}

/// The way back reads the safety backup through the descriptor opened, and checked against the
/// digest its writing computed, right after it was written: an attacker who renames a forged
/// archive over `…_pre-restore.tar.zst` (write on the backup directory is enough) gets the
/// restore refused before anything is replaced, or has no effect on the way back; the state
/// before the restore comes back, never the forged one.
#[test]
fn a_safety_backup_swapped_by_name_is_never_what_the_way_back_restores() {
    if !engine() {
        return;
    }
    let mut stack = TestStack::sample("safetyswap");
    let dir = TempDir::new("safetyswap");
    let aside = TempDir::new("safetyswap-aside");
    stack.xtask_ok(&["up", "db", "backend"]);
    let backend = format!("{}-backend-1", stack.project);
    let put = |text: &str| docker_ok(&["exec", &backend, "sh", "-c", &format!("echo {text} > /app/media/state.txt")]);
    let state = || docker_ok(&["exec", &backend, "cat", "/app/media/state.txt"]).trim().to_string();
    put("forged");
    let forged =
        stack.xtask_json(&["backup", "--output-dir", aside.s(), "--json"])["path"].as_str().unwrap().to_string();
    put("archived");
    let genuine =
        stack.xtask_json(&["backup", "--output-dir", dir.s(), "--json"])["path"].as_str().unwrap().to_string();
    put("current");
    // The attacker: as soon as the safety backup appears, a forged archive is renamed over it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (d, s, f) = (dir.0.clone(), stop.clone(), forged.clone());
    let watcher = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            let safety = std::fs::read_dir(&d)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with("_pre-restore.tar.zst")));
            if let Some(target) = safety {
                let tmp = d.join(".forgery");
                std::fs::copy(&f, &tmp).unwrap();
                std::fs::rename(&tmp, &target).unwrap();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        false
    });
    stack.env.push(("XTASK_FAULT_AFTER".into(), "volume-swap".into()));
    let (ok, _, err) = stack.xtask(&["restore", &genuine, "--yes", "--output-dir", dir.s()]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(watcher.join().unwrap(), "the attacker swapped the safety backup");
    assert!(!ok, "the fault (or the swap) fails the restore: {err}");
    stack.xtask_ok(&["up", "backend"]);
    assert_eq!(state(), "current", "the state before the restore, never the forged one: {err}");
}

/// `name` exists as a user (made with a home when missing), in `groups`.
fn ensure_user(name: &str, groups: &str) {
    if !Command::new("id").arg(name).output().unwrap().status.success() {
        let ok = Command::new("useradd").args(["-m", "-s", "/bin/sh", "-G", groups, name]).status().unwrap();
        assert!(ok.success(), "useradd {name}");
    } else {
        assert!(Command::new("usermod").args(["-a", "-G", groups, name]).status().unwrap().success());
    }
}

/// The same attack as above, by another user: the tool runs as an unprivileged operator (in the
/// docker group), the backup directory is group-writable for a group an attacker shares with it
/// (no read of the operator's files, which are 0600), and the attacker's own process renames
/// forged files over every new file it can see there during a backup and a restore. Nothing it
/// does reaches the archive or the stack. (As root only: the test makes the two users.)
#[test]
fn an_unprivileged_run_with_a_group_writable_backup_directory_is_not_swayed() {
    if !engine() {
        return;
    }
    if String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() != "0" {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root: this test needs it");
        eprintln!("SKIPPED: needs root to make the operator and attacker users");
        return;
    }
    let share = "xtask-e2e-share";
    if !Command::new("getent").args(["group", share]).output().unwrap().status.success() {
        assert!(Command::new("groupadd").arg(share).status().unwrap().success());
    }
    ensure_user("xtask-e2e-op", &format!("docker,{share}"));
    ensure_user("xtask-e2e-atk", share);
    let stack = TestStack::sample("unpriv");
    let dir = TempDir::new("unpriv");
    let backups = dir.0.join("backups");
    std::fs::create_dir(&backups).unwrap();
    assert!(Command::new("chown").arg(format!("root:{share}")).arg(&backups).status().unwrap().success());
    std::fs::set_permissions(&backups, std::os::unix::fs::PermissionsExt::from_mode(0o2770)).unwrap();
    let log = dir.0.join("attacker.log");
    let forged = dir.0.join("forged.sql");
    std::fs::write(&forged, "CREATE TABLE public.swapped_in (x int);\n").unwrap();
    std::fs::write(&log, "").unwrap();
    for p in [&dir.0, &log, &forged] {
        let mode = if p.is_dir() { 0o755 } else { 0o666 };
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    stack.xtask_ok(&["up", "db", "redis", "backend"]);
    seed_sample(&stack);
    let before = sample_state(&stack);
    let as_operator = |args: &[&str]| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "xtask-e2e-op", "--", "env", "HOME=/home/xtask-e2e-op"]);
        cmd.args(stack.env.iter().map(|(k, v)| format!("{k}={v}")));
        cmd.arg(env!("CARGO_BIN_EXE_xtask")).args(["--project-name", &stack.project, "--file"]).arg(&stack.files[0]);
        let out = cmd.args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "xtask {args:?} as the operator:\n{err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let script = r#"while [ ! -e "$0.stop" ]; do
  for f in "$1"/* "$1"/.[!.]* "$1"/*/* "$1"/.[!.]*/*; do
    [ -f "$f" ] || continue
    case "$f" in *.tar.zst|*.tar.gz|*.sig|*.verified|*.lock|*.tmp-*|*/.forgery*) continue ;; esac
    cp "$2" "$1/.forgery" 2>/dev/null && mv -f "$1/.forgery" "$f" 2>/dev/null && echo "$f" >> "$0"
  done
done"#;
    let mut attacker = Command::new("runuser")
        .args(["-u", "xtask-e2e-atk", "--", "sh", "-c", script])
        .args([&log, &backups, &forged])
        .spawn()
        .unwrap();
    let b = backups.to_str().unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&as_operator(&["backup", "--output-dir", b, "--json"])).unwrap();
    let archive = summary["path"].as_str().unwrap().to_string();
    psql(&format!("{}-db-1", stack.project), "app", "DELETE FROM items WHERE id > 250");
    as_operator(&["restore", &archive, "--yes", "--output-dir", b]);
    std::fs::write(format!("{}.stop", log.display()), "").unwrap();
    attacker.wait().unwrap();
    let swapped = std::fs::read_to_string(&log).unwrap();
    assert_eq!(swapped, "", "no file the tool uses was reachable by name");
    assert_eq!(sample_state(&stack), before, "rows, files and keys as backed up");
    let db = format!("{}-db-1", stack.project);
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM pg_tables WHERE tablename = 'swapped_in'"), "0");
    let mode = std::fs::metadata(&archive).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600, "the archive is 0600");
}

/// A service of the stack that controls only its own volume plants, while its volume is staged,
/// the swap's reserved names as links into the other targets (`.xtask-old-PID` -> another
/// volume, a bind's staged copy). Each target is swapped by a helper of its own that refuses
/// planted names: nothing the service wrote reaches another volume or the host directory, and
/// no set-uid file appears there.
#[test]
fn a_service_cannot_write_into_other_targets_through_the_swap() {
    if !engine() {
        return;
    }
    let compose = r#"name: plant
services:
  web:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    init: true
    volumes: [shared:/shared, ./html:/html]
  worker:
    image: ${APP_IMAGE:-busybox}
    init: true
    volumes: [evil:/data]
    command:
      - sh
      - -c
      - |
        while :; do
          echo owned > /data/pwned.txt
          for s in /data/.xtask-staging-*; do
            [ -d "$$s" ] || continue
            p=$${s##*-}
            [ -L /data/.xtask-old-$$p ] || ln -s /v/2/.xtask-staging-$$p /data/.xtask-old-$$p 2>/dev/null
          done
          sleep 0.05
        done
volumes:
  shared: {name: "${PLANT_PREFIX}-a-shared"}
  evil: {name: "${PLANT_PREFIX}-z-evil", labels: {xtask.role: uploads}}
"#;
    let (project, mut stack) = stack_from("plant", compose, "PLANT_PREFIX");
    // The place a service can reach: its volume's copy staged inside the volume (where the tool
    // cannot stage beside `_data`, e.g. as a user who cannot see the engine's directory).
    stack.env.push(("XTASK_STAGE_IN_VOLUME".into(), "1".into()));
    std::fs::create_dir_all(project.0.join("html")).unwrap();
    std::fs::write(project.0.join("html/index.html"), "genuine page").unwrap();
    let dir = TempDir::new("plant-backups");
    stack.compose(&["up", "--detach"]);
    let shared = format!("{}-a-shared", stack.project);
    on_volume(&shared, Access::Write, "echo genuine > /v/state.txt");
    let archive =
        stack.xtask_json(&["backup", "--all", "--output-dir", dir.s(), "--json"])["path"].as_str().unwrap().to_string();
    // Refused at the swap (the planted name: exit 98, the way back taken) or, had the service
    // been too slow, done: either way, nothing of the service's elsewhere.
    let _ = stack.xtask(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    let html: Vec<String> = std::fs::read_dir(project.0.join("html"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(html, ["index.html"], "nothing of the service's reached the host directory");
    assert_eq!(std::fs::read_to_string(project.0.join("html/index.html")).unwrap(), "genuine page");
    let listing = on_volume(&shared, Access::ReadOnly, "ls -A /v");
    assert!(!listing.contains("pwned"), "nothing reached the other volume: {listing}");
}

/// A running service plants, inside the staged copy of its own volume, a link to the helper's
/// FIFO directory (`.xtask-staging-PID/d -> /xtask-io`) while the restore stages it. The tool's
/// private host directory is mounted read-only in the helper: nothing but its FIFO ever appears
/// there and its mode stays 0700, whatever the archive holds under `d/` (a set-uid program).
#[test]
fn a_link_planted_in_the_staging_never_reaches_the_tools_own_directory() {
    if !engine() {
        return;
    }
    let compose = r#"name: iolink
services:
  worker:
    image: ${APP_IMAGE:-busybox}
    init: true
    volumes: [evil:/data]
    command:
      - sh
      - -c
      - |
        while :; do
          for s in /data/.xtask-staging-*; do
            [ -d "$$s" ] || continue
            [ -L "$$s/d" ] || { rm -rf "$$s/d"; ln -s /xtask-io "$$s/d"; }
          done
          sleep 0.01
        done
volumes:
  evil: {name: "${IOLINK_PREFIX}-evil", labels: {xtask.role: uploads}}
"#;
    let (_project, mut stack) = stack_from("iolink", compose, "IOLINK_PREFIX");
    // The place a service can reach: the copy staged inside its volume (see the test above).
    stack.env.push(("XTASK_STAGE_IN_VOLUME".into(), "1".into()));
    let dir = TempDir::new("iolink-backups");
    let volume = format!("{}-evil", stack.project);
    on_volume(
        &volume,
        Access::Write,
        "head -c 67108864 /dev/zero > /v/a-big && mkdir -p /v/d/sub && chmod 0777 /v/d && \
         echo '#!/bin/sh' > /v/d/sub/sh && chmod 4755 /v/d/sub/sh && head -c 33554432 /dev/zero > /v/d/big",
    );
    let archive = stack.xtask_json(&["backup", "--volume", &volume, "--output-dir", dir.s(), "--json"]);
    let archive = archive["path"].as_str().unwrap().to_string();
    stack.compose(&["up", "--detach"]);
    // The host side: every private FIFO directory of the tool, watched while the restore runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            for d in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
                if !d.file_name().to_string_lossy().starts_with("xtask-io-") {
                    continue;
                }
                if let Ok(m) = std::fs::symlink_metadata(d.path()) {
                    let mode = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777;
                    if mode != 0o700 {
                        seen.insert(format!("{} mode {mode:o}", d.path().display()));
                    }
                }
                for e in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name != "stream" && name != "times" {
                        seen.insert(format!("{}/{name}", d.path().display()));
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        seen
    });
    // Refused mid-staging (the helper cannot write there: nothing replaced), or done had the
    // service been too slow: either way, nothing in the tool's directory.
    let (ok, _, err) = stack.xtask(&["restore", &archive, "--yes", "--output-dir", dir.s()]);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    assert!(seen.is_empty(), "nothing of the archive's reached the tool's own directory: {seen:?}");
    // Refused: the helper's own words say why (its stderr), not a bare broken pipe.
    assert!(ok || (err.contains("stage volume") && err.contains("Read-only file system")), "{err}");
}

//! End to end on the live engine: a seeded sample stack (rows in several tables and a second
//! database, a role, odd files and a large one, Redis keys) is backed up; the archive is
//! checked entry by entry against a tar of the source volumes, its dumps are loaded into a
//! fresh PostgreSQL and compared, its Redis data is served by a fresh Redis; damaged archives
//! fail `verify`; a stopped stack is backed up and left stopped; the lock refuses a second run.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

fn sh(container: &str, script: &str) -> String {
    docker_ok(&["exec", container, "sh", "-c", script])
}

/// What an entry is, as the comparison sees it.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<Vec<u8>>,
    sha: Option<String>,
}

fn read_tar(reader: impl Read, strip: &[u8]) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(reader);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let raw = e.path_bytes().into_owned();
        let Some(rel) = raw.strip_prefix(strip) else { continue };
        let rel =
            rel.strip_prefix(b"./").unwrap_or(rel).strip_suffix(b"/").unwrap_or(rel.strip_prefix(b"./").unwrap_or(rel));
        let rel = if rel == b"." { &b""[..] } else { rel };
        let h = e.header().clone();
        let kind = h.entry_type().as_byte();
        let link = e.link_name_bytes().map(|l| {
            let l = l.into_owned();
            // Hard links are stored relative to the archive root: compare them volume-relative.
            let l = l.strip_prefix(strip).map(|x| x.to_vec()).unwrap_or(l);
            l.strip_prefix(b"./").map(|x| x.to_vec()).unwrap_or(l)
        });
        let sha = if h.entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Some(format!("{:x}", Sha256::digest(&data)))
        } else {
            None
        };
        out.insert(
            rel.to_vec(),
            Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link,
                sha,
            },
        );
    }
    out
}

fn archive_tar(path: &Path) -> Box<dyn Read> {
    common::decompressed(path)
}

fn entry_bytes(path: &Path, name: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(archive_tar(path));
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == name.as_bytes() {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return v;
        }
    }
    panic!("no entry {name} in {}", path.display());
}

fn seed(stack: &TestStack) {
    let db = format!("{}-db-1", stack.project);
    psql(
        &db,
        "app",
        "CREATE ROLE reporter LOGIN PASSWORD 'reporter-secret';
         CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, note text);
         INSERT INTO items SELECT g, 'item ' || g, CASE WHEN g % 7 = 0 THEN E'multi\\nline ü' END FROM generate_series(1, 2000) g;
         CREATE TABLE tags (item_id int REFERENCES items(id), tag text);
         INSERT INTO tags SELECT g, 'tag-' || (g % 13) FROM generate_series(1, 2000) g;
         GRANT SELECT ON items TO reporter;",
    );
    psql(&db, "app", "CREATE DATABASE analytics");
    psql(&db, "analytics", "CREATE TABLE events (id serial PRIMARY KEY, at timestamptz DEFAULT now(), kind text); INSERT INTO events (kind) SELECT 'k' || g FROM generate_series(1, 500) g;");
    let backend = format!("{}-backend-1", stack.project);
    sh(
        &backend,
        r#"set -e
        cd /app/media
        mkdir -p "dir with space/ünï" "empty dir" deep/a/b/c
        echo hello > "dir with space/ünï/file.txt"
        printf 'x' > "$(printf 'new\nline')"
        ln "dir with space/ünï/file.txt" hardlink
        ln -s "dir with space/ünï/file.txt" symlink
        echo owned > owned.txt && chown 1234:5678 owned.txt && chmod 0640 owned.txt
        head -c 20971520 /dev/urandom > large.bin
        dd if=/dev/zero of=sparse.img bs=1 count=0 seek=33554432 2>/dev/null
        echo private > deep/a/b/c/secret && chmod 0600 deep/a/b/c/secret
        mkdir -p /app/staticfiles/css && echo 'body{}' > /app/staticfiles/css/site.css"#,
    );
    let redis = format!("{}-redis-1", stack.project);
    for i in 0..50 {
        docker_ok(&["exec", &redis, "redis-cli", "SET", &format!("key:{i}"), &format!("value {i}")]);
    }
}

fn backup_json(stack: &TestStack, dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "--output-dir", dir.to_str().unwrap(), "--json"];
    all.extend(args);
    stack.xtask_json(&all)
}

/// A container removed when dropped.
struct Throwaway(String);

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.0]);
    }
}

#[test]
fn full_backup_matches_the_source_and_loads() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("backup");
    let out = TempDir::new("backup");
    stack.xtask_ok(&["up"]);
    seed(&stack);
    let summary = backup_json(&stack, &out.0, &["--all"]);
    let path = PathBuf::from(summary["path"].as_str().unwrap());
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(file.starts_with("full_backup_") && file.ends_with(".tar.zst"), "{file}");
    assert_eq!(summary["compression"], "zstd:3", "zstd at level 3 by default");
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&out.0), 0o755, "an existing directory keeps the mode its owner gave it");
    let skipped: Vec<&str> =
        summary["skipped"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(skipped, [stack.volume("postgres-data")], "--all copies every volume but the dumped database's");
    assert!(std::fs::read_dir(&out.0).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().contains(".tmp-")));

    // Plain tools read it (docs/archive-format.md): `zstd -d < x.tar.zst | tar t` lists it,
    // `| tar x` unpacks it, `sha256sum -c` accepts its checksum entry.
    let by_hand = |tar_args: &str| {
        let script = format!("zstd -d < \"$1\" | tar {tar_args}");
        Command::new("sh").args(["-c", &script, "sh"]).arg(&path).output().unwrap()
    };
    let listing = by_hand("-t");
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(listing.lines().next(), Some("metadata.json"));
    assert_eq!(listing.lines().last(), Some("SHA256SUMS"));
    let x = TempDir::new("extract");
    assert!(by_hand(&format!("-x -C {}", x.0.display())).status.success());
    let check = Command::new("sha256sum").args(["-c", "--quiet", "SHA256SUMS"]).current_dir(&x.0).output().unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", String::from_utf8_lossy(&check.stdout));

    // Entry by entry against a tar of each source volume read independently of the tool.
    for suffix in ["backend-media", "backend-static", "redis-data", "frontend-node-modules", "proxy-logs"] {
        let vol = stack.volume(suffix);
        let src = Command::new("docker")
            .args([
                "run",
                "--rm",
                "-v",
                &format!("{vol}:/v:ro"),
                "xtask-test/busybox:local",
                "tar",
                "-cf",
                "-",
                "-C",
                "/v",
                ".",
            ])
            .output()
            .unwrap();
        assert!(src.status.success());
        let source = read_tar(&src.stdout[..], b"");
        let prefix = format!("volumes/{vol}/");
        let copy = read_tar(archive_tar(&path), prefix.as_bytes());
        if suffix == "redis-data" {
            // Redis keeps writing: compare the set of files, content is checked by loading it below.
            assert_eq!(source.keys().collect::<Vec<_>>(), copy.keys().collect::<Vec<_>>(), "{vol}");
            continue;
        }
        assert_eq!(source.len(), copy.len(), "{vol}: same number of entries");
        for (name, want) in &source {
            let got = copy.get(name).unwrap_or_else(|| panic!("{vol}: {:?} missing", String::from_utf8_lossy(name)));
            assert_eq!(got, want, "{vol}: entry {:?}", String::from_utf8_lossy(name));
        }
    }
    let media = read_tar(archive_tar(&path), format!("volumes/{}/", stack.volume("backend-media")).as_bytes());
    assert_eq!(media[&b"owned.txt".to_vec()].uid, 1234);
    assert_eq!(media[&b"owned.txt".to_vec()].mode, 0o640);
    assert_eq!(media[&b"symlink".to_vec()].link.as_deref(), Some(&b"dir with space/\xc3\xbcn\xc3\xaf/file.txt"[..]));
    assert_eq!(media[&b"hardlink".to_vec()].kind, b'1');
    assert!(media.contains_key(b"new\nline".as_slice()) && media.contains_key(b"empty dir".as_slice()));

    // The metadata records the row counts; a fresh PostgreSQL loads the dumps and agrees.
    let meta: serde_json::Value = serde_json::from_slice(&entry_bytes(&path, "metadata.json")).unwrap();
    assert_eq!(meta["format_version"], 4);
    assert_eq!(meta["project"], stack.project.as_str());
    let pg = &meta["databases"][0];
    assert_eq!((pg["service"].as_str(), pg["engine"].as_str()), (Some("db"), Some("postgres")));
    assert!(pg["server_version"].as_str().unwrap().starts_with("15"));
    let dbs: Vec<&str> = pg["databases"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(dbs.contains(&"app") && dbs.contains(&"analytics"), "{dbs:?}");
    let app = pg["databases"].as_array().unwrap().iter().find(|d| d["name"] == "app").unwrap();
    assert_eq!(app["tables"]["\"public\".\"items\""], 2000);
    assert_eq!(app["tables"]["\"public\".\"tags\""], 2000);
    let media_meta =
        meta["volumes"].as_array().unwrap().iter().find(|v| v["name"] == stack.volume("backend-media")).unwrap();
    assert_eq!(media_meta["labels"]["xtask.role"], "uploads");
    assert_eq!(media_meta["driver"], "local");
    assert!(!String::from_utf8_lossy(&entry_bytes(&path, "metadata.json")).contains("app-dev-password"));

    let fresh = Throwaway(format!("{}-fresh-pg", stack.project));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &fresh.0,
        "--network",
        "none",
        "-e",
        "POSTGRES_PASSWORD=x",
        "-e",
        "POSTGRES_USER=app",
        "xtask-test/postgres:local",
    ]);
    for _ in 0..60 {
        if docker(&["exec", &fresh.0, "pg_isready", "-h", "127.0.0.1", "-U", "app", "-d", "postgres"]).status.success()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let load = |db: &str, entry: &str| {
        let mut child = Command::new("docker")
            .args(["exec", "-i", &fresh.0, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "app", "-d", db])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&entry_bytes(&path, entry)).unwrap();
        assert!(child.wait().unwrap().success(), "load {entry}");
    };
    // Roles first (the existing `app` role makes one statement fail there: load the rest by hand).
    let globals = String::from_utf8(entry_bytes(&path, "databases/db/globals.sql")).unwrap();
    assert!(globals.contains("CREATE ROLE reporter"), "the role is in the globals dump");
    psql(&fresh.0, "postgres", "CREATE ROLE reporter LOGIN");
    // (POSTGRES_USER=app made database app already, as the official image does.)
    psql(&fresh.0, "postgres", "CREATE DATABASE analytics");
    load("app", "databases/db/app.sql");
    load("analytics", "databases/db/analytics.sql");
    let db = format!("{}-db-1", stack.project);
    for (database, sql) in [
        ("app", "SELECT md5(string_agg(i::text, ',' ORDER BY id)) FROM items i"),
        ("app", "SELECT md5(string_agg(t::text, ',' ORDER BY item_id)) FROM tags t"),
        ("analytics", "SELECT md5(string_agg(e::text, ',' ORDER BY id)) FROM events e"),
        ("app", "SELECT has_table_privilege('reporter', 'items', 'SELECT')::text"),
    ] {
        assert_eq!(psql(&fresh.0, database, sql), psql(&db, database, sql), "{database}: {sql}");
    }

    // The Redis files, served by a fresh Redis, hold the keys.
    let redis_files = x.0.join("volumes").join(stack.volume("redis-data"));
    let scratch = stack.volume("scratch-redis");
    docker_ok(&["volume", "create", &scratch]);
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/src:ro", redis_files.display()),
        "-v",
        &format!("{scratch}:/data"),
        "xtask-test/busybox:local",
        "cp",
        "-a",
        "/src/.",
        "/data/",
    ]);
    let fresh_redis = Throwaway(format!("{}-fresh-redis", stack.project));
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &fresh_redis.0,
        "--network",
        "none",
        "-v",
        &format!("{scratch}:/data"),
        "xtask-test/redis:local",
        "redis-server",
        "--appendonly",
        "yes",
    ]);
    let mut got = String::new();
    for _ in 0..40 {
        got = String::from_utf8_lossy(&docker(&["exec", &fresh_redis.0, "redis-cli", "GET", "key:49"]).stdout)
            .trim()
            .to_string();
        if got == "value 49" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(got, "value 49");
    drop(fresh_redis);

    // verify passes; damaged copies fail with a clear message and exit 1.
    stack.xtask_ok(&["verify", path.to_str().unwrap()]);
    // --deep loads it all into throwaway PostgreSQL and scratch volumes, and removes them again.
    let (ok, _, err) = stack.xtask(&["verify", "--deep", path.to_str().unwrap()]);
    assert!(ok && err.contains("OK:"), "{err}");
    let bytes = std::fs::read(&path).unwrap();
    let damaged = [
        ("truncated", bytes[..bytes.len() * 2 / 3].to_vec(), "truncated"),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let i = b.len() / 3;
                b[i] ^= 0x01;
                b
            },
            "corrupt",
        ),
    ];
    for (name, data, needle) in damaged {
        let p = out.0.join(format!("{name}.tar.gz"));
        std::fs::write(&p, data).unwrap();
        let (ok, _, err) = stack.xtask(&["verify", p.to_str().unwrap()]);
        assert!(!ok, "{name} passed verify");
        assert!(err.contains(needle) || err.contains("checksum"), "{name}: {err}");
        assert!(err.contains("do not restore from it"), "{err}");
    }
    // A copy without its checksum entry, and one with an entry climbing out with `../`.
    let rewrite = |name: &str, drop_sums: bool, evil: bool| {
        let p = out.0.join(name);
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&p).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut a = tar::Archive::new(archive_tar(&path));
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let n = e.path_bytes().into_owned();
            if drop_sums && n == b"SHA256SUMS" {
                continue;
            }
            if evil && n == b"SHA256SUMS" {
                let mut h = tar::Header::new_old();
                let evil_name = format!("volumes/{}/../../../etc/cron.d/x", stack.volume("backend-media"));
                h.as_old_mut().name[..evil_name.len()].copy_from_slice(evil_name.as_bytes());
                h.set_size(1);
                h.set_mode(0o644);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            }
            let mut h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            b.append_data(&mut h, Path::new(std::ffi::OsStr::new(&*String::from_utf8_lossy(&n))), &data[..]).ok();
        }
        b.into_inner().unwrap().finish().unwrap();
        p
    };
    let p = rewrite("nosums.tar.gz", true, false);
    let (ok, _, err) = stack.xtask(&["verify", p.to_str().unwrap()]);
    assert!(!ok && err.contains("SHA256SUMS is missing"), "{err}");
    let p = rewrite("evil.tar.gz", false, true);
    let (ok, _, err) = stack.xtask(&["verify", p.to_str().unwrap()]);
    assert!(!ok && err.contains("'..'") && err.contains("etc/cron.d"), "{err}");

    // The listing shows it, verified.
    let list = stack.xtask_json(&["backups", "--output-dir", out.0.to_str().unwrap(), "--json"]);
    let listed = list.as_array().unwrap().iter().find(|a| a["file"] == file).expect("listed");
    assert_eq!(listed["checksums"], "ok");
    assert_eq!(listed["kind"], "full");
}

#[test]
fn stopped_stack_is_backed_up_and_left_stopped_and_the_lock_refuses_a_second_run() {
    if !engine() {
        return;
    }
    let stack = TestStack::sample("cold");
    let out = TempDir::new("cold");
    stack.xtask_ok(&["up", "db", "redis"]);
    let db = format!("{}-db-1", stack.project);
    psql(&db, "app", "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3);");
    stack.xtask_ok(&["down"]);
    // Nothing runs: backup-db starts db, dumps, and removes it again.
    let summary =
        stack.xtask_json(&["backup-db", "--output-dir", out.0.to_str().unwrap(), "--tag", "pre-migration", "--json"]);
    let path = summary["path"].as_str().unwrap();
    assert!(path.contains("db_backup_") && path.ends_with("_pre-migration.tar.zst"), "{path}");
    let st = stack.xtask_json(&["status", "--json"]);
    assert!(st["services"].as_array().unwrap().iter().all(|s| s["state"] == "not created"), "{st}");
    let meta: serde_json::Value = serde_json::from_slice(&entry_bytes(Path::new(path), "metadata.json")).unwrap();
    assert_eq!(meta["kind"], "db");
    assert_eq!(meta["tag"], "pre-migration");
    assert!(meta["volumes"].as_array().unwrap().is_empty());
    let app =
        meta["databases"][0]["databases"].as_array().unwrap().iter().find(|d| d["name"] == "app").unwrap().clone();
    assert_eq!(app["tables"]["\"public\".\"t\""], 3);

    // Stopped (not removed) containers stay stopped after a full backup with --stop.
    stack.xtask_ok(&["up"]);
    let mut stop = Command::new("docker");
    stop.args(["compose", "--project-name", &stack.project, "--file"])
        .arg(&stack.files[0])
        .args(["stop", "db", "proxy"]);
    stop.envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert!(stop.output().unwrap().status.success());
    stack.xtask_ok(&["backup", "--output-dir", out.0.to_str().unwrap(), "--stop"]);
    let st = stack.xtask_json(&["status", "--json"]);
    let state =
        |svc: &str| st["services"].as_array().unwrap().iter().find(|s| s["service"] == svc).unwrap()["state"].clone();
    assert_eq!(state("db"), "exited", "db was stopped before and is stopped again");
    assert_eq!(state("proxy"), "exited");
    assert_eq!(state("backend"), "running", "stopped for the copy with --stop and started again");
    assert_eq!(state("redis"), "running");

    // While another process holds the lock, a backup is refused and writes nothing.
    let lock = out.0.join(format!(".xtask-{}.lock", stack.project));
    let mut holder = Command::new("flock").arg("--no-fork").arg(&lock).args(["sleep", "30"]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = std::fs::read_dir(&out.0).unwrap().count();
    let (ok, _, err) = stack.xtask(&["backup", "--output-dir", out.0.to_str().unwrap()]);
    holder.kill().ok();
    holder.wait().ok();
    assert!(!ok && err.contains("another backup or restore"), "{err}");
    assert_eq!(std::fs::read_dir(&out.0).unwrap().count(), before);

    // The project's lock on the machine is found from the user alone: a run with another
    // XDG_RUNTIME_DIR and another backup directory (a cron job beside an SSH session) is refused
    // while it is held. (As root, where that lock lives in /run/xtask/locks.)
    if String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0" {
        let project_lock = Path::new("/run/xtask/locks").join(format!("{}.lock", stack.project));
        let mut holder =
            Command::new("flock").arg("--no-fork").arg(&project_lock).args(["sleep", "30"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let elsewhere = TempDir::new("backup-elsewhere");
        let mut run = Command::new(env!("CARGO_BIN_EXE_xtask"));
        run.args(["--project-name", &stack.project, "--file"]).arg(&stack.files[0]);
        run.args(["backup", "--output-dir"]).arg(elsewhere.0.join("b"));
        run.envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let o = run.env("XDG_RUNTIME_DIR", &elsewhere.0).env("HOME", &elsewhere.0).output().unwrap();
        holder.kill().ok();
        holder.wait().ok();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains("another backup or restore"), "{err}");
    }

    // The pre-migration hook: a snapshot first, then the migration; no migration without a snapshot.
    let xtask =
        format!("{} --project-name {} --file {}", env!("CARGO_BIN_EXE_xtask"), stack.project, stack.files[0].display());
    let hook = workspace().join("scripts/pre-migration.sh");
    let run_hook = |dir: &Path, migration: &[&str]| {
        Command::new("bash")
            .arg(&hook)
            .args(migration)
            .env("XTASK", &xtask)
            .env("XTASK_BACKUP_DIR", dir)
            .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    };
    let marker = out.0.join("migrated");
    let o = run_hook(&out.0, &["touch", marker.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pre-migration snapshot:"));
    assert!(marker.exists(), "the migration ran after the snapshot");
    let unwritable = out.0.join("not-a-dir");
    std::fs::write(&unwritable, b"file").unwrap();
    let marker2 = out.0.join("migrated-2");
    let o = run_hook(&unwritable, &["touch", marker2.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(!marker2.exists(), "no migration without a snapshot");
}

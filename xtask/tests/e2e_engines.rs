//! End to end on the live engine: every database engine of a stack is dumped and restored
//! (tests/fixtures/engines: two PostgreSQL servers, one with its data in a bind mount, MariaDB
//! with its root password a Compose secret, SQLite by the xtask.dump/xtask.load hook, an uploads
//! volume), while writers insert
//! rows; a dump that dies half-way fails the backup for every engine; and an archive of format
//! version 1, made by the release before version 2, restores into today's sample stack.

#![allow(clippy::disallowed_methods)] // tests drive docker and tar directly

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// `mariadb` as root in the maria service (the password read from the secret inside it).
fn maria(stack: &TestStack, sql: &str) -> String {
    let cmd = r#"MYSQL_PWD="$(cat /run/secrets/maria_root)" exec mariadb -uroot --batch --skip-column-names wp"#;
    stack.exec("maria", &["sh", "-c", cmd], sql).trim().to_string()
}

fn pg(stack: &TestStack, service: &str, user: &str, sql: &str) -> String {
    stack
        .exec(service, &["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", user], sql)
        .trim()
        .to_string()
}

fn sqlite(stack: &TestStack, sql: &str) -> String {
    stack.exec("notes", &["sqlite3", "-bail", "/data/notes.db"], sql).trim().to_string()
}

fn seed(stack: &TestStack) {
    pg(
        stack,
        "db",
        "app",
        "CREATE TABLE items(id int PRIMARY KEY, v text); \
         INSERT INTO items SELECT g, md5(g::text) || E'\\t\\\\' FROM generate_series(1, 3000) g; \
         CREATE TABLE live(id serial PRIMARY KEY, at timestamptz DEFAULT now());",
    );
    pg(
        stack,
        "authdb",
        "auth",
        "CREATE ROLE auth_reader LOGIN PASSWORD 'r'; CREATE TABLE accounts(id int PRIMARY KEY, name text); \
         INSERT INTO accounts SELECT g, 'user ' || g FROM generate_series(1, 500) g; \
         GRANT SELECT ON accounts TO auth_reader;",
    );
    maria(
        stack,
        "CREATE TABLE posts(id INT PRIMARY KEY, title TEXT, body TEXT);\n\
         INSERT INTO posts VALUES (1,'it''s','back\\\\slash (x),(y);'),(2,'two',NULL),(3,'three','\\\\! not a command');\n\
         INSERT INTO posts SELECT seq, CONCAT('post ', seq), REPEAT('x', seq % 50) FROM seq_4_to_2000;\n\
         CREATE TABLE live(id INT AUTO_INCREMENT PRIMARY KEY, at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);\n\
         CREATE TRIGGER posts_upper BEFORE INSERT ON posts FOR EACH ROW SET NEW.title = UPPER(NEW.title);\n\
         DELIMITER ;;\nCREATE PROCEDURE count_posts() BEGIN SELECT COUNT(*) FROM posts; END;;\nDELIMITER ;\n\
         CREATE USER 'reader'@'%' IDENTIFIED BY 'reader-pw';\nGRANT SELECT ON wp.* TO 'reader'@'%';\n",
    );
    sqlite(
        stack,
        "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT); \
         INSERT INTO notes(body) VALUES ('a'), ('b''c'), ('line\nbreak');",
    );
    stack.exec("app", &["sh", "-c", "printf 'photo' > /app/uploads/p1.jpg && chmod 640 /app/uploads/p1.jpg"], "");
}

/// Everything the restore must bring back exactly (the writers' tables are compared with the
/// archive's row counts instead).
fn snapshot(stack: &TestStack) -> Vec<String> {
    vec![
        pg(stack, "db", "app", "SELECT count(*) || ' ' || md5(string_agg(id || v, ',' ORDER BY id)) FROM items"),
        pg(
            stack,
            "authdb",
            "auth",
            "SELECT count(*) || ' ' || md5(string_agg(id || name, ',' ORDER BY id)) FROM accounts",
        ),
        pg(stack, "authdb", "auth", "SELECT rolname FROM pg_roles WHERE rolname = 'auth_reader'"),
        pg(stack, "authdb", "auth", "SELECT has_table_privilege('auth_reader', 'accounts', 'SELECT')::text"),
        maria(stack, "CHECKSUM TABLE posts; SELECT COUNT(*) FROM posts;"),
        maria(stack, "SELECT trigger_name FROM information_schema.triggers WHERE trigger_schema = 'wp';"),
        maria(stack, "SELECT routine_name FROM information_schema.routines WHERE routine_schema = 'wp';"),
        maria(stack, "SHOW GRANTS FOR 'reader'@'%';"),
        sqlite(stack, "SELECT group_concat(id || ':' || body, '|') FROM notes;"),
        stack.exec("app", &["sh", "-c", "stat -c '%n %a %s' /app/uploads/* && md5sum /app/uploads/*"], ""),
    ]
}

/// Writers inserting a row at a time into `live` in PostgreSQL and MariaDB until told to stop.
fn start_writers(stack: &TestStack) -> Vec<std::process::Child> {
    let pg_loop = "while [ ! -e /tmp/stop-writer ]; do psql -X -q -U app -d app -c 'INSERT INTO live DEFAULT VALUES' || exit 1; done";
    let my_loop = r#"export MYSQL_PWD="$(cat /run/secrets/maria_root)"; while [ ! -e /tmp/stop-writer ]; do mariadb -uroot wp -e 'INSERT INTO live () VALUES ()' || exit 1; done"#;
    [("db", pg_loop), ("maria", my_loop)]
        .iter()
        .map(|(svc, script)| {
            let mut c = stack.compose_cmd();
            c.args(["exec", "-T", svc, "sh", "-c", script]);
            c.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect()
}

fn live_rows(stack: &TestStack) -> (u64, u64) {
    let p = pg(stack, "db", "app", "SELECT count(*) FROM live").parse().unwrap();
    let m = maria(stack, "SELECT COUNT(*) FROM live;").parse().unwrap();
    (p, m)
}

/// The archive's metadata, read by GNU tar, which tells zstd from gzip by the first bytes.
fn metadata(path: &str) -> serde_json::Value {
    let out = std::process::Command::new("tar").args(["-xOf", path, "metadata.json"]).output().unwrap();
    assert!(out.status.success(), "tar -xOf {path}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn archived_rows(meta: &serde_json::Value, service: &str, db: &str, table: &str) -> u64 {
    let s = meta["databases"].as_array().unwrap().iter().find(|d| d["service"] == service).unwrap();
    let d = s["databases"].as_array().unwrap().iter().find(|d| d["name"] == db).unwrap();
    d["tables"][table].as_u64().unwrap_or_else(|| panic!("{service}/{db} has no table {table}: {d}"))
}

#[test]
fn every_engine_round_trips_through_clean_all_while_written_to() {
    if !engine() {
        return;
    }
    let dir = TempDir::new("engines");
    let stack = TestStack::engines("engines", &dir.0);
    stack.compose(&["up", "--detach", "--wait"]);
    seed(&stack);
    let before = snapshot(&stack);
    let backups = dir.0.join("backups");
    let writers = start_writers(&stack);
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_rows(&stack).0 < 20 || live_rows(&stack).1 < 20 {
        assert!(Instant::now() < deadline, "the writers did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (pg_before, my_before) = live_rows(&stack);
    // -v: the fallback from the helper beside a database to `compose exec` is said only then.
    let (ok, stdout, stderr) = stack.xtask(&["-v", "backup", "--output-dir", backups.to_str().unwrap(), "--json"]);
    assert!(ok, "{stderr}");
    // MariaDB's dump came through the helper beside it (the secret read from its file there).
    assert!(!stderr.contains("direct dump reader failed"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let (pg_after, my_after) = live_rows(&stack);
    for svc in ["db", "maria"] {
        stack.exec(svc, &["touch", "/tmp/stop-writer"], "");
    }
    for mut w in writers {
        w.wait().unwrap();
    }
    assert!(pg_after > pg_before && my_after > my_before, "the writers kept writing during the backup");
    let dumped: Vec<&str> = summary["databases"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    for want in ["authdb/auth", "db/app", "maria/wp", "notes/dump"] {
        assert!(dumped.contains(&want), "{want} not in {dumped:?}");
    }
    assert_eq!(summary["unprotected"], serde_json::json!([]), "{summary}");
    let archive = summary["path"].as_str().unwrap().to_string();
    let meta = metadata(&archive);
    assert_eq!(meta["format_version"], 4);
    let pg_live = archived_rows(&meta, "db", "app", "\"public\".\"live\"");
    let my_live = archived_rows(&meta, "maria", "wp", "`live`");
    assert!((pg_before..=pg_after).contains(&pg_live), "{pg_before} <= {pg_live} <= {pg_after}");
    assert!((my_before..=my_after).contains(&my_live), "{my_before} <= {my_live} <= {my_after}");
    assert_eq!(archived_rows(&meta, "maria", "wp", "`posts`"), 2000);
    // --deep loads every SQL dump into a throwaway server of the service's image.
    let (ok, _, err) = stack.xtask(&["verify", &archive, "--deep", "--output-dir", backups.to_str().unwrap()]);
    assert!(ok && err.contains("throwaway server") && err.contains("hook dump of service notes"), "{err}");

    stack.xtask_ok(&["clean-all", "--confirm", "DELETE EVERYTHING", "--output-dir", backups.to_str().unwrap()]);
    assert!(docker_ok(&["volume", "ls", "-q", "--filter", &format!("name=^{}-", stack.project)]).trim().is_empty());
    // authdb's data is a bind mount, which clean-all never removes: change it, so the restore
    // has something to undo there too.
    stack.compose(&["up", "--detach", "--wait", "authdb"]);
    pg(
        &stack,
        "authdb",
        "auth",
        "DELETE FROM accounts WHERE id > 10; REVOKE ALL ON accounts FROM auth_reader; DROP ROLE auth_reader;",
    );
    stack.xtask_ok(&["restore", "--latest", "--yes", "--output-dir", backups.to_str().unwrap()]);
    stack.compose(&["up", "--detach", "--wait"]);
    assert_eq!(snapshot(&stack), before, "every table, routine, trigger, user, grant and file as archived");
    assert_eq!(live_rows(&stack), (pg_live, my_live), "the written tables hold what the dumps caught");
    let leftovers = maria(&stack, "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'xtask%';");
    assert_eq!(leftovers, "0", "the scratch databases were dropped");
}

/// Starts `backup-db --service SERVICE`, kills the service's container once its dump file has
/// grown past 1 MiB, and checks the backup failed and left nothing behind.
fn kill_mid_dump(stack: &TestStack, backups: &Path, service: &str) {
    std::fs::create_dir_all(backups).unwrap();
    let mut child = stack.spawn(&["-v", "backup-db", "--service", service, "--output-dir", backups.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // The dump goes into a file with no name (only the tool's descriptor holds it).
        let growing = spooled_by(child.id(), backups).iter().any(|&n| n > 1 << 20);
        if growing {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "{service}: the backup ended before its dump could be cut");
        assert!(Instant::now() < deadline, "{service}: the dump never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    stack.compose(&["kill", service]);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{service}: the backup succeeded with a dump cut short:\n{err}");
    assert!(err.contains(service), "{service}: the error names the service:\n{err}");
    assert!(!err.contains("direct dump reader failed"), "{service}: a dump cut short is not retried:\n{err}");
    let left: Vec<String> = std::fs::read_dir(backups)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".xtask-") || !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{service}: no archive and no partial dump may remain: {left:?}");
    stack.compose(&["up", "--detach", "--wait", service]);
}

#[test]
fn a_dump_that_dies_half_way_fails_the_backup_for_every_engine() {
    if !engine() {
        return;
    }
    let dir = TempDir::new("engines-kill");
    let stack = TestStack::engines("enginekill", &dir.0);
    stack.compose(&["up", "--detach", "--wait"]);
    // Enough data that each dump takes a while (about 100 MB of SQL each).
    pg(
        &stack,
        "db",
        "app",
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 6) AS v FROM generate_series(1, 500000) g;",
    );
    maria(&stack, "CREATE TABLE big AS SELECT seq AS id, REPEAT(MD5(seq), 6) AS v FROM seq_1_to_500000;");
    sqlite(
        &stack,
        "CREATE TABLE big(id INTEGER PRIMARY KEY, v TEXT); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c \
         LIMIT 500000) INSERT INTO big SELECT x, hex(randomblob(96)) FROM c;",
    );
    for service in ["db", "maria", "notes"] {
        kill_mid_dump(&stack, &dir.0.join(format!("backups-{service}")), service);
    }
}

#[test]
fn a_version_1_archive_restores_into_todays_sample_stack() {
    if !engine() {
        return;
    }
    let dir = TempDir::new("v1-fixture");
    let stack = TestStack::sample("v1fixture");
    // A copy: verify records its result beside the archive, and the source tree stays as it is.
    let fixture = dir.0.join("full_backup_20261127_125326_v1-fixture.tar.gz");
    std::fs::copy(fixtures().join("v1-archive/full_backup_20261127_125326_v1-fixture.tar.gz"), &fixture).unwrap();
    let fixture = fixture.to_str().unwrap();
    let report = stack.xtask_json(&["verify", fixture, "--json"]);
    assert_eq!(report[0]["problems"], serde_json::json!([]), "{report}");
    stack.xtask_ok(&["restore", fixture, "--force", "--yes", "--output-dir", dir.s()]);
    stack.compose(&["up", "--detach", "--wait", "db"]);
    let db = format!("{}-db-1", stack.project);
    assert_eq!(
        psql(&db, "app", "SELECT count(*) || ' ' || md5(string_agg(id || name || note, ',' ORDER BY id)) FROM items"),
        "500 37fada431479498e359254bffcabf2f2"
    );
    assert_eq!(psql(&db, "app", "SELECT count(*) FROM \"Odd Name\""), "2");
    let media = stack.volume("backend-media");
    let script = "cd /v && stat -c '%n %a' hello.txt && readlink link && cat hello.txt && wc -c < 'sub/with space.bin'";
    let listing = on_volume(&media, Access::ReadOnly, script);
    assert_eq!(listing.split_whitespace().collect::<Vec<_>>(), ["hello.txt", "640", "hello.txt", "hello", "100"]);
}

/// `databases/<service>/<db>.sql` of `archive` with `sql` put before its last line (the dump's
/// completion trailer), SHA256SUMS rewritten to match, written as `name` beside it.
fn forge_dump(archive: &Path, entry: &str, sql: &str, name: &str) -> std::path::PathBuf {
    let mut entries = load(archive);
    let dump = entries.iter_mut().find(|e| e.name == entry.as_bytes()).unwrap_or_else(|| panic!("{entry}"));
    let at = dump.data[..dump.data.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    dump.data.splice(at..at, sql.bytes());
    let out = archive.with_file_name(name);
    save(&out, entries, true);
    out
}

/// A forged MariaDB dump (checksums rewritten) never reaches the live server before the swap:
/// SQL that writes into another database fails the proof in a throwaway server, a statement
/// reaching beyond its database is refused by the grammar, and the live data, every database
/// and the list of databases stay as they were.
#[test]
fn a_forged_mariadb_dump_never_reaches_the_live_server_before_the_swap() {
    if !engine() {
        return;
    }
    let dir = TempDir::new("engines-forged");
    let stack = TestStack::engines("enginesforged", &dir.0);
    stack.compose(&["up", "--detach", "--wait", "maria"]);
    maria(
        &stack,
        "CREATE TABLE posts(id INT PRIMARY KEY); INSERT INTO posts VALUES (1), (2);\n\
         CREATE DATABASE other; CREATE TABLE other.t (id INT); INSERT INTO other.t VALUES (1), (2), (3);\n",
    );
    let backups = dir.0.join("backups");
    let b = backups.to_str().unwrap();
    let out = stack.xtask_json(&["backup-db", "--service", "maria", "--output-dir", b, "--json"]);
    let genuine = Path::new(out["path"].as_str().unwrap()).to_path_buf();
    let state = || {
        (
            maria(&stack, "SELECT COUNT(*) FROM posts; SELECT COUNT(*) FROM other.t;"),
            maria(&stack, "SELECT GROUP_CONCAT(schema_name ORDER BY schema_name) FROM information_schema.schemata"),
        )
    };
    let before = state();
    let cross = forge_dump(
        &genuine,
        "databases/maria/wp.sql",
        "DELETE FROM `other`.`t`;\n",
        "db_backup_20200101_000001.tar.gz",
    );
    stack.xtask_ok(&["verify", cross.to_str().unwrap()]);
    let (ok, _, err) = stack.xtask(&["restore", cross.to_str().unwrap(), "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("throwaway") && err.contains("nothing live was changed"), "{err}");
    assert_eq!(state(), before, "the live server was never touched");
    let drop = "/*!40000 DROP DATABASE IF EXISTS `other`*/;\n";
    let beyond = forge_dump(&genuine, "databases/maria/wp.sql", drop, "db_backup_20200101_000002.tar.gz");
    let (ok, _, err) = stack.xtask(&["verify", beyond.to_str().unwrap()]);
    assert!(!ok && err.contains("reaches beyond the database"), "{err}");
    let (ok, _, err) = stack.xtask(&["restore", beyond.to_str().unwrap(), "--yes", "--output-dir", b]);
    assert!(!ok && err.contains("reaches beyond the database"), "{err}");
    assert_eq!(state(), before, "the live server was never touched");
    stack.xtask_ok(&["restore", genuine.to_str().unwrap(), "--yes", "--output-dir", b]);
    assert_eq!(state(), before, "the genuine archive restores");
}

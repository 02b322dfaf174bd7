//! The restore drill end to end on the live engine, on a small stack of the test's own:
//! PostgreSQL with a named volume, a published port and a fixed container name, and an app
//! with a named volume, a bind holding uploads, a bind outside the project directory and a
//! read-only configuration file. A backup,
//! then `drill --latest`: exit 0, JSON with the time to recover, the drill's check (rows
//! counted in the restored copy) and the app's health check (the restored uploads and the
//! copied configuration) passed; the live stack's containers, volumes, binds and rows exactly as
//! before; nothing of the drill's project left. Then a drill of a damaged archive: exit 1, the
//! failure recorded beside the earlier success, again nothing left and nothing live changed.
//! The drill tells the notifiers (a webhook on 127.0.0.1): success with its outcome, failure.
//! And a drill of an archive that lacks the uploads (a database-only backup): the app does not
//! come up in the copy; exit 1 naming it, its logs kept, nothing left, nothing live changed;
//! and the same drill interrupted (SIGINT) while it waits for the copy's health: exit 1, the
//! interruption recorded, nothing left, nothing live changed.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const COMPOSE: &str = r#"services:
  db:
    image: ${POSTGRES_IMAGE:-postgres:16}
    container_name: ${DRILL_PREFIX}-pg
    environment: {POSTGRES_USER: app, POSTGRES_PASSWORD: "pw$$x", POSTGRES_DB: app}
    ports: ["127.0.0.1::5432"]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U app -d app"], interval: 1s, retries: 120}
    volumes:
      - pg:/var/lib/postgresql/data
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    healthcheck:
      test: ["CMD-SHELL", "grep -q photo /uploads/photo.txt && grep -q picture /app/media/pic.txt && grep -q setting /etc/app.conf"]
      interval: 1s
      retries: ${APP_RETRIES:-60}
    volumes:
      - files:/data
      - ./uploads:/uploads
      - ${DRILL_OUTSIDE}:/app/media
      - ./app.conf:/etc/app.conf:ro
volumes:
  pg:
    name: ${DRILL_PREFIX}-pg
  files:
    name: ${DRILL_PREFIX}-files
    labels: {xtask.role: data, xtask.priority: critical}
x-xtask:
  binds: {./uploads: {role: uploads, priority: critical}}
  drill: {service: db, check: [psql, -X, -U, app, -d, app, -v, ON_ERROR_STOP=1, -c, "SELECT 1 / (count(*) / 500) FROM items"]}
NOTIFY
"#;

/// What must not change on the live stack: its containers (id, name, state, start time), its
/// volumes and their files, its bind's files, its rows.
fn live_state(stack: &TestStack, dir: &Path, outside: &Path) -> String {
    let label = format!("label=com.docker.compose.project={}", stack.project);
    let ids = docker_ok(&["ps", "-aq", "--filter", &label]);
    let mut ids: Vec<&str> = ids.split_whitespace().collect();
    ids.sort();
    let mut args =
        vec!["inspect", "--format", "{{.Id}} {{.Name}} {{.State.Status}} {{.State.StartedAt}} {{.RestartCount}}"];
    args.extend(ids);
    let containers = docker_ok(&args);
    let volumes = docker_ok(&["volume", "ls", "--quiet", "--filter", &format!("name=^{}-", stack.project)]);
    let files =
        on_volume(&stack.volume("files"), Access::ReadOnly, "cd /v && find . -type f -exec sha256sum {} + | sort");
    let mut binds = format!(
        "{:?} {:?}\n",
        std::fs::read(outside.join("pic.txt")).unwrap(),
        std::fs::metadata(outside.join("pic.txt")).unwrap().modified().unwrap()
    );
    for name in ["uploads/photo.txt", "app.conf"] {
        let meta = std::fs::metadata(dir.join(name)).unwrap();
        binds += &format!("{name} {:?} {:?}\n", std::fs::read(dir.join(name)).unwrap(), meta.modified().unwrap());
    }
    let listing: Vec<String> =
        std::fs::read_dir(dir.join("uploads")).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    let rows = psql(
        &format!("{}-pg", stack.project),
        "app",
        "SELECT md5(string_agg(id::text || name, ',' ORDER BY id)) FROM items",
    );
    format!("{containers}\n{volumes}\n{files}\n{binds}{listing:?}\n{rows}")
}

/// Containers, volumes and networks of any drill of this stack's project.
fn drill_leftovers(stack: &TestStack) -> String {
    let prefix = format!("{}-drill-", stack.project);
    let containers = docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Label \"com.docker.compose.project\"}}"]);
    let volumes = docker_ok(&["volume", "ls", "--format", "{{.Name}}"]);
    let networks = docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    let scratch: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("xtask-drill-{}-", stack.project)))
        .collect();
    [containers, volumes, networks]
        .iter()
        .flat_map(|t| t.lines().filter(|l| l.contains(&prefix)).map(str::to_string))
        .chain(scratch)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tiny HTTP server on 127.0.0.1 answering 200 and keeping each request's JSON body.
fn webhook_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = bodies.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            record.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
        }
    });
    (port, bodies)
}

/// The webhook bodies of the drill task received so far (taken).
fn drill_bodies(bodies: &std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> Vec<Value> {
    let taken = std::mem::take(&mut *bodies.lock().unwrap());
    taken.iter().map(|b| serde_json::from_str::<Value>(b).unwrap()).filter(|v| v["task"] == "drill").collect()
}

fn record(backups: &TempDir, project: &str) -> Value {
    let text = std::fs::read(backups.0.join(format!(".xtask-deep-verify-{project}.json"))).expect("the drill's record");
    serde_json::from_slice(&text).unwrap()
}

/// The test's stack, up, seeded: its project directory, the stack, the backup directory.
fn seeded(name: &str, extra_env: &[(&str, &str)], notify: &str) -> (TempDir, TestStack, TempDir, TempDir) {
    let backups = TempDir::new(&format!("{name}-backups"));
    let (project, mut stack) = stack_from(name, &COMPOSE.replace("NOTIFY", notify), "DRILL_PREFIX");
    stack.env.push(("XTASK_BACKUP_DIR".into(), backups.s().to_string()));
    stack.env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    // A bind outside the project directory.
    let outside = TempDir::new(&format!("{name}-outside"));
    std::fs::write(outside.0.join("pic.txt"), "a picture\n").unwrap();
    stack.env.push(("DRILL_OUTSIDE".into(), outside.s().to_string()));
    std::fs::create_dir(project.0.join("uploads")).unwrap();
    std::fs::write(project.0.join("uploads/photo.txt"), "a photo\n").unwrap();
    std::fs::write(project.0.join("app.conf"), "setting = 1\n").unwrap();
    stack.compose(&["up", "-d", "--wait"]);
    let pg = format!("{}-pg", stack.project);
    psql(&pg, "app", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 500) g");
    stack.exec("app", &["sh", "-c", "echo blob > /data/f.txt"], "");
    (project, stack, backups, outside)
}

#[test]
fn drill_of_an_archive_without_the_uploads_fails_naming_the_service_and_keeps_its_logs() {
    if !engine() {
        return;
    }
    let (project, stack, backups, outside) = seeded("drill-lacks", &[("APP_RETRIES", "3")], "");
    stack.xtask_ok(&["backup-db"]);
    let before = live_state(&stack, &project.0, &outside.0);
    let (code, out, err) = stack.xtask_code(&["drill", "--latest", "--json"]);
    assert_eq!(code, 1, "the app cannot come up without its uploads:\n{out}\n{err}");
    let failed: Value = serde_json::from_str(&out).expect("JSON on stdout also on failure");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("-app-1 is unhealthy"), "names the service: {failed}");
    let logs = failed["logs"].as_str().expect("the logs are kept");
    assert_eq!(Path::new(logs), backups.0.join(format!(".xtask-drill-{}.log", stack.project)));
    let text = std::fs::read_to_string(logs).unwrap();
    assert!(text.lines().any(|l| l.starts_with("db-1") || l.contains("db-1 ")), "the services' logs: {text}");
    assert_eq!(record(&backups, &stack.project)["drill"]["ok"], false);
    assert_eq!(live_state(&stack, &project.0, &outside.0), before, "nothing of the live stack changed");
    assert_eq!(drill_leftovers(&stack), "", "nothing of the failed drill is left");
}

#[test]
fn drill_restores_into_a_throwaway_copy_and_leaves_the_live_stack_and_nothing_else() {
    if !engine() {
        return;
    }
    let (port, bodies) = webhook_server();
    let notify = format!("  notify: [{{url: 'http://127.0.0.1:{port}/hook', kind: webhook}}]");
    let (project, stack, backups, outside) = seeded("drill", &[], &notify);
    stack.xtask_ok(&["backup"]);

    let before = live_state(&stack, &project.0, &outside.0);
    let (code, out, err) = stack.xtask_code(&["drill", "--latest", "--json"]);
    assert_eq!(code, 0, "the drill succeeds:\n{out}\n{err}");
    let outcome: Value = serde_json::from_str(&out).expect("JSON on stdout");
    let seconds = outcome["seconds"].as_f64().expect("the time to recover");
    assert!(
        outcome["ok"] == true && seconds > 0.0 && seconds >= outcome["restore_seconds"].as_f64().unwrap(),
        "{outcome}"
    );
    assert!(err.contains("run the drill's check in service db"), "the check ran:\n{err}");
    assert_eq!(live_state(&stack, &project.0, &outside.0), before, "nothing of the live stack changed");
    assert_eq!(drill_leftovers(&stack), "", "nothing of the drill is left");
    let r = record(&backups, &stack.project);
    assert_eq!((r["drill"]["ok"].as_bool(), r["drill"]["seconds"].as_f64()), (Some(true), Some(seconds)), "{r}");
    assert_eq!(r["at"], r["drill"]["at"], "the newest success is the drill: {r}");
    let told = drill_bodies(&bodies);
    assert_eq!(told.len(), 1, "one webhook call for the drill: {told:?}");
    assert_eq!((told[0]["event"].as_str(), told[0]["details"]["seconds"].as_f64()), (Some("success"), Some(seconds)));

    // A damaged archive: one byte flipped in the middle of the gzip stream.
    let latest = outcome["archive"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(&latest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    let damaged = backups.0.join("damaged.tar.gz");
    std::fs::write(&damaged, bytes).unwrap();
    let (code, out, err) = stack.xtask_code(&["drill", damaged.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1, "a damaged archive fails the drill:\n{out}\n{err}");
    let failed: Value = serde_json::from_str(&out).expect("JSON on stdout also on failure");
    assert_eq!((failed["ok"].as_bool(), failed["seconds"].as_f64()), (Some(false), None), "{failed}");
    assert!(err.contains("the restore drill of") && failed["reason"].as_str().is_some_and(|r| !r.is_empty()), "{err}");
    let r2 = record(&backups, &stack.project);
    assert_eq!(r2["drill"]["ok"], false, "the failure is recorded: {r2}");
    assert_eq!(r2["drill"]["reason"], failed["reason"]);
    assert_eq!(r2["at"], r["at"], "the newest success stays what check reads: {r2}");
    let told = drill_bodies(&bodies);
    assert_eq!(told.len(), 1, "one webhook call for the failed drill: {told:?}");
    assert_eq!(told[0]["event"], "failure");
    assert!(told[0]["message"].as_str().unwrap().contains("drill failed"), "{}", told[0]);
    assert_eq!(live_state(&stack, &project.0, &outside.0), before, "nothing of the live stack changed");
    assert_eq!(drill_leftovers(&stack), "", "nothing of the failed drill is left");
}

#[test]
fn ctrl_c_while_the_copy_starts_removes_it_and_fails_the_drill() {
    if !engine() {
        return;
    }
    use std::io::BufRead;
    // Without its uploads the app never becomes healthy: the drill waits until interrupted.
    let (project, stack, backups, outside) = seeded("drill-int", &[("APP_RETRIES", "100000")], "");
    stack.xtask_ok(&["backup-db"]);
    let before = live_state(&stack, &project.0, &outside.0);
    let mut child = stack.spawn(&["drill", "--latest"]);
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut seen, mut started) = (String::new(), false);
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the drill ended before its wait:\n{seen}");
        seen += &line;
        started |= line.contains("start every service of the throwaway stack");
        if started && line.contains("wait until") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "an interrupted drill fails:\n{seen}{rest}");
    assert!(rest.contains("interrupted by SIGINT or SIGTERM"), "{rest}");
    let r = record(&backups, &stack.project);
    assert!(r["drill"]["ok"] == false && r["drill"]["reason"].as_str().unwrap().contains("interrupted"), "{r}");
    assert_eq!(live_state(&stack, &project.0, &outside.0), before, "nothing of the live stack changed");
    assert_eq!(drill_leftovers(&stack), "", "nothing of the interrupted drill is left");
}

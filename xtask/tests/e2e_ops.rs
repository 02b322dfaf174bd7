//! Operations end to end on the live engine, on a small stack of the test's own (one service,
//! one critical named volume): `check` before any backup is critical (exit 2), after a backup
//! and a deep verify it is ok (exit 0), and with a disk threshold set low in `x-xtask.alerts` it
//! warns (exit 1); its JSON says why and its Prometheus textfile parses line by line.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// The stack, with `ALERTS` replaced by the test's `x-xtask` block.
const COMPOSE: &str = r#"services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    volumes:
      - data:/data
volumes:
  data:
    name: ${OPS_PREFIX}-data
    labels: {xtask.role: data, xtask.priority: critical}
x-xtask:
ALERTS
"#;

fn compose_with(block: &str) -> String {
    COMPOSE.replace("ALERTS", block)
}

/// A strict reading of the Prometheus text format: every line a `# HELP`/`# TYPE` comment or
/// `name{labels} value`, with an `xtask_` name, quoted label values and a number.
fn prometheus_samples(text: &str) -> usize {
    let mut samples = 0;
    for line in text.lines() {
        if line.starts_with("# HELP xtask_") || line.starts_with("# TYPE xtask_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "not a number: {line:?}");
        let (name, labels) = series.split_once('{').unwrap_or_else(|| panic!("no labels: {line:?}"));
        assert!(name.starts_with("xtask_") && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{line:?}");
        let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{line:?}");
            assert!(!value.trim_end_matches('"').contains('\n'), "{line:?}");
        }
        samples += 1;
    }
    samples
}

fn level_of<'a>(report: &'a Value, check: &str) -> Vec<&'a str> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| f["level"].as_str().unwrap())
        .collect()
}

#[test]
fn check_is_critical_without_a_backup_ok_after_one_and_warns_past_a_low_threshold() {
    if !engine() {
        return;
    }
    let backups = TempDir::new("ops-check-backups");
    let quiet = "  alerts: {disk_percent: 99, disk_critical_percent: 100}";
    let (project, mut stack) = stack_from("ops-check", &compose_with(quiet), "OPS_PREFIX");
    stack.env.push(("XTASK_BACKUP_DIR".into(), backups.s().to_string()));
    stack.compose(&["up", "-d", "--wait"]);
    stack.exec("app", &["sh", "-c", "head -c 100000 /dev/urandom > /data/blob"], "");

    let (code, out, err) = stack.xtask_code(&["check", "--json"]);
    assert_eq!(code, 2, "no backup yet is critical:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["level"].as_str(), report["exit_code"].as_u64()), (Some("critical"), Some(2)));
    assert_eq!(level_of(&report, "backup_age"), ["critical"]);

    stack.xtask_ok(&["backup"]);
    stack.xtask_ok(&["verify", "--latest", "--deep"]);
    let prom = project.0.join("metrics/xtask.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let (code, out, err) = stack.xtask_code(&["check", "--json", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(code, 0, "after a backup and a deep verify:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["level"], "ok");
    for check in ["disk", "backup_age", "deep_verify_age", "protection"] {
        assert!(level_of(&report, check).iter().all(|l| *l == "ok"), "{check}: {report:#}");
    }
    let disks: Vec<&str> = report["disks"].as_array().unwrap().iter().map(|d| d["what"].as_str().unwrap()).collect();
    assert_eq!(disks, ["backup_dir", "volumes"], "{report:#}");
    let volume = &report["volumes"][0];
    assert_eq!(volume["name"].as_str(), Some(stack.volume("data").as_str()));
    assert!(volume["size_bytes"].as_u64().unwrap() >= 100_000, "{volume}");
    assert!(volume["size_at_backup_bytes"].as_u64().unwrap() >= 100_000, "from the archive's metadata: {volume}");
    assert!(volume["growth_bytes_per_day"].is_null(), "no rate from a backup made seconds ago: {volume}");
    assert!(report["backup"]["age_seconds"].as_i64().unwrap() < 600, "{report:#}");
    assert!(report["deep_verify"]["age_seconds"].as_i64().unwrap() < 600, "{report:#}");
    assert_eq!(report["unprotected"], serde_json::json!([]));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(prometheus_samples(&text) >= 10, "{text}");
    assert!(text.contains(&format!("xtask_check_status{{project=\"{}\"}} 0\n", stack.project)), "{text}");
    assert!(text.contains("xtask_filesystem_used_ratio{"), "{text}");
    let names: Vec<String> = std::fs::read_dir(prom.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["xtask.prom"], "the textfile is renamed into place, no temporary left");

    std::fs::write(&stack.files[0], compose_with("  alerts: {disk_percent: 1, disk_critical_percent: 100}")).unwrap();
    let (code, out, err) = stack.xtask_code(&["check", "--json", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(code, 1, "a filesystem above 1% warns:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((report["level"].as_str(), report["exit_code"].as_u64()), (Some("warning"), Some(1)));
    assert!(level_of(&report, "disk").iter().all(|l| *l == "warning"), "{report:#}");
    let warned = report["findings"].as_array().unwrap().iter().find(|f| f["check"] == "disk").unwrap();
    assert!(warned["message"].as_str().unwrap().contains("warning at 1%"), "{warned}");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(&format!("xtask_check_status{{project=\"{}\"}} 1\n", stack.project)), "{text}");
    prometheus_samples(&text);

    std::fs::write(&stack.files[0], compose_with("  alerts: {disk_precent: 1}")).unwrap();
    let (code, _, err) = stack.xtask_code(&["check", "--prometheus", prom.to_str().unwrap()]);
    assert_eq!(code, 2, "a check that cannot read its settings is critical: {err}");
    assert!(err.contains("x-xtask.alerts") && err.contains("disk_precent"), "{err}");
    let text = std::fs::read_to_string(Path::new(&prom)).unwrap();
    assert_eq!(prometheus_samples(&text), 1, "{text}");
    assert!(
        text.contains(&format!("xtask_check_status{{project=\"{}\"}} 2\n", stack.project)),
        "not a stale ok: {text}"
    );

    // The engine unreachable: critical too, never a warning.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["--project-name", &stack.project, "--file", stack.files[0].to_str().unwrap(), "check"])
        .envs(stack.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// One request as the local HTTP server saw it.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    body: String,
}

/// A tiny HTTP server on 127.0.0.1 that records every request: `/broken…` answers 500, `/hang…`
/// never answers, anything else 200. Returns its port and the record.
fn http_server() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Request>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
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
                let body = String::from_utf8_lossy(&body).into_owned();
                record.lock().unwrap().push(Request { path: path.clone(), body });
                if path.starts_with("/hang") {
                    std::thread::sleep(std::time::Duration::from_secs(60));
                }
                let status = if path.starts_with("/broken") { "500 Internal Server Error" } else { "200 OK" };
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK");
            });
        }
    });
    (port, seen)
}

/// Takes what the server recorded so far.
fn drain(seen: &std::sync::Arc<std::sync::Mutex<Vec<Request>>>) -> Vec<Request> {
    std::mem::take(&mut *seen.lock().unwrap())
}

fn webhook(requests: &[Request]) -> Value {
    let hook = requests.iter().find(|r| r.path.starts_with("/hook")).expect("the webhook was called");
    serde_json::from_str(&hook.body).expect("the webhook body is JSON")
}

#[test]
fn notifiers_hear_start_success_and_failure_and_a_broken_or_hanging_one_never_fails_the_task() {
    if !engine() {
        return;
    }
    let (port, seen) = http_server();
    let ping = "/ping/5bd1e0c6-3f7a-4d2e-9a41-0c8e7d1f2b3a";
    let block = format!(
        "  alerts: {{disk_percent: 99, disk_critical_percent: 100}}\n  notify:\n    \
         - http://127.0.0.1:{port}{ping}\n    \
         - {{url: 'http://127.0.0.1:{port}/hook?token=HOOKSECRET42', kind: webhook}}\n    \
         - {{url: 'http://127.0.0.1:{port}/broken?token=BROKENSECRET7', kind: webhook}}\n    \
         - {{url: 'http://127.0.0.1:{port}/hang/0a1b2c3d4e5f6a7b8c9d', kind: ping}}"
    );
    let secrets = ["HOOKSECRET42", "BROKENSECRET7", "5bd1e0c6-3f7a-4d2e-9a41-0c8e7d1f2b3a", "0a1b2c3d4e5f6a7b8c9d"];
    let backups = TempDir::new("ops-notify-backups");
    let (_project, mut stack) = stack_from("ops-notify", &compose_with(&block), "OPS_PREFIX");
    stack.env.push(("XTASK_BACKUP_DIR".into(), backups.s().to_string()));
    stack.env.push(("XTASK_NOTIFY_TIMEOUT".into(), "2".into()));
    stack.compose(&["up", "-d", "--wait"]);

    // A backup: watched while it runs, curl never carries a URL on its command line.
    let child = stack.spawn(&["backup"]);
    let mut curls = 0;
    let mut leaked = Vec::new();
    let started = std::time::Instant::now();
    let mut child = child;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("curl") && cmdline.contains("--config") {
                curls += 1;
            }
            if cmdline.contains(&format!("127.0.0.1:{port}")) {
                leaked.push(cmdline);
            }
        }
        assert!(started.elapsed().as_secs() < 300, "the backup did not end");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "a failing and a hanging notifier never fail the backup:\n{err}");
    assert!(curls > 0, "curl was seen running (the hanging notifier holds it for 2 s)");
    assert!(leaked.is_empty(), "a notify URL on a command line: {leaked:?}");
    assert!(err.contains(&format!("warning: notify http://127.0.0.1:{port}/broken?token=***")), "{err}");
    assert!(err.contains(&format!("warning: notify http://127.0.0.1:{port}/hang/***/start")), "{err}");
    for s in secrets {
        assert!(!err.contains(s), "{s} printed:\n{err}");
    }
    let requests = drain(&seen);
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).filter(|p| p.starts_with("/ping")).collect();
    assert_eq!(paths, [format!("{ping}/start"), ping.to_string()], "{requests:?}");
    let success = requests.iter().find(|r| r.path == ping).unwrap();
    assert!(success.body.starts_with("backup success on "), "{success:?}");
    let body = webhook(&requests);
    assert_eq!((body["project"].as_str(), body["task"].as_str()), (Some(stack.project.as_str()), Some("backup")));
    assert_eq!(body["event"], "success");
    assert_eq!(body["details"]["kind"], "full");
    assert!(body["details"]["path"].as_str().unwrap().ends_with(".tar.zst"), "{body}");
    assert!(body["at"].as_str().unwrap().ends_with('Z') && body["message"].as_str().unwrap().contains(".tar.zst"));
    assert!(
        requests.iter().any(|r| r.path.starts_with("/broken")) && requests.iter().any(|r| r.path.starts_with("/hang"))
    );

    // A backup that fails: /fail with the error, the webhook hears failure.
    let (code, _, err) = stack.xtask_code(&["backup", "--volume", "no-such-volume"]);
    assert_eq!(code, 1, "{err}");
    let requests = drain(&seen);
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).filter(|p| p.starts_with("/ping")).collect();
    assert_eq!(paths, [format!("{ping}/start"), format!("{ping}/fail")], "{requests:?}");
    let fail = requests.iter().find(|r| r.path.ends_with("/fail") && r.path.starts_with("/ping")).unwrap();
    assert!(fail.body.contains("no-such-volume"), "the failure says why: {fail:?}");
    assert_eq!(webhook(&requests)["event"], "failure");

    // check: no deep verify yet, a warning: /fail, the report in the webhook's details.
    let (code, _, err) = stack.xtask_code(&["check"]);
    assert_eq!(code, 1, "{err}");
    let requests = drain(&seen);
    assert!(requests.iter().any(|r| r.path == format!("{ping}/fail")), "{requests:?}");
    let body = webhook(&requests);
    assert_eq!((body["task"].as_str(), body["event"].as_str()), (Some("check"), Some("failure")));
    assert_eq!(body["details"]["exit_code"], 1);
    assert!(body["message"].as_str().unwrap().contains("deep verify"), "{body}");

    // prune: success.
    stack.xtask_ok(&["prune"]);
    let requests = drain(&seen);
    assert!(requests.iter().any(|r| r.path == ping), "{requests:?}");
    assert_eq!(
        (webhook(&requests)["task"].as_str(), webhook(&requests)["event"].as_str()),
        (Some("prune"), Some("success"))
    );

    // --dry-run tells nobody.
    stack.xtask_ok(&["--dry-run", "backup"]);
    assert!(drain(&seen).is_empty(), "a dry run notifies no one");
}

/// The stack for `schedule`: in a directory whose name holds a space, `%`, `$`, quotes; a remote.
fn schedule_stack(base: &TempDir) -> TestStack {
    let dir = base.0.join("my stack %n $HOME \"q\" 'x'");
    std::fs::create_dir_all(&dir).unwrap();
    let block = "  remotes: {offsite: {url: 'rclone:nas:backups'}}\n  retention: {keep_daily: 14}";
    std::fs::write(dir.join("compose.yaml"), compose_with(block)).unwrap();
    let mut stack = TestStack::sample("ops-sched");
    stack.files = vec![dir.join("compose.yaml")];
    stack.env.push(("OPS_PREFIX".into(), stack.project.clone()));
    stack
}

fn which(tool: &str) -> bool {
    std::process::Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success())
}

#[test]
fn schedule_writes_verified_units_removes_only_its_own_and_falls_back_to_cron() {
    let base = TempDir::new("ops-sched");
    let stack = schedule_stack(&base);
    let units = base.0.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let p = stack.project.clone();
    let names: Vec<String> = ["backup.service", "backup.timer", "drill.service", "drill.timer"]
        .iter()
        .map(|n| format!("xtask-{p}-{n}"))
        .collect();

    // A file of the same name it did not write is never overwritten.
    std::fs::write(units.join(&names[3]), "[Timer]\nOnCalendar=daily\n").unwrap();
    let into = units.to_str().unwrap();
    let install = ["schedule", "install", "--into", into, "--at", "02:30", "--push", "offsite", "--drill", "weekly"];
    let (ok, _, err) = stack.xtask(&install);
    assert!(!ok && err.contains("not written by `schedule install`"), "{err}");
    assert_eq!(std::fs::read_to_string(units.join(&names[3])).unwrap(), "[Timer]\nOnCalendar=daily\n");
    std::fs::remove_file(units.join(&names[3])).unwrap();
    std::fs::write(units.join("notes.txt"), "mine").unwrap();

    let out = stack.xtask_ok(&install);
    assert_eq!(out.matches("wrote ").count(), 4, "{out}");
    let service = std::fs::read_to_string(units.join(&names[0])).unwrap();
    assert!(service.starts_with(&format!("# xtask-schedule: project={p} ")), "{service}");
    let exec: Vec<&str> = service.lines().filter(|l| l.starts_with("ExecStart=")).collect();
    assert_eq!(exec.len(), 3, "backup, prune, prune --remote: {service}");
    assert!(
        exec[0].contains("\"-f\" \"") && exec[0].contains("/my stack %%n $$HOME \\\"q\\\" 'x'/compose.yaml\""),
        "{}",
        exec[0]
    );
    assert!(exec[0].contains(&format!("\"-p\" \"{p}\"")) && exec[0].ends_with("\"--push\" \"offsite\""), "{}", exec[0]);
    assert!(exec[2].contains("\"--remote\" \"offsite\" \"--keep-last\" \"3\" \"--keep-daily\" \"14\""), "{}", exec[2]);
    let timer = std::fs::read_to_string(units.join(&names[1])).unwrap();
    assert!(timer.contains("OnCalendar=*-*-* 02:30:00\n"), "{timer}");
    let drill = std::fs::read_to_string(units.join(&names[3])).unwrap();
    assert!(drill.contains("OnCalendar=Sun *-*-* 03:30:00\n"), "{drill}");
    assert_eq!(stack.xtask_ok(&install), out, "installing again rewrites the same units");

    if which("systemd-analyze") {
        let paths: Vec<std::path::PathBuf> = names.iter().map(|n| units.join(n)).collect();
        let verify =
            std::process::Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&paths).output().unwrap();
        let said = String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    } else if std::env::var("CI").as_deref() == Ok("true") {
        panic!("systemd-analyze is not installed (Debian: systemd) and CI=true: the units are not verified");
    } else {
        eprintln!("SKIPPED: systemd-analyze verify (not installed)");
    }

    let shown = stack.xtask_ok(&["schedule", "show", "--into", into]);
    assert_eq!(shown.matches("== ").count(), 4, "{shown}");
    let removed = stack.xtask_ok(&["schedule", "remove", "--into", into]);
    assert_eq!(removed.matches("removed ").count(), 4, "{removed}");
    let mut left: Vec<String> =
        std::fs::read_dir(&units).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["notes.txt"], "only what it wrote is removed");
}

#[test]
fn cron_lines_pass_every_argument_intact_through_cron_and_the_shell() {
    let base = TempDir::new("ops-cron");
    let stack = schedule_stack(&base);
    // A stand-in for the binary that records its arguments, one per line.
    let record = base.0.join("args.txt");
    let program = base.0.join("record-args");
    std::fs::write(
        &program,
        format!("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> '{}'\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cron_dir = base.0.join("cron.d");
    std::fs::create_dir_all(&cron_dir).unwrap();
    let program_arg = program.to_str().unwrap();
    stack.xtask_ok(&["schedule", "install", "--cron", "--into", cron_dir.to_str().unwrap(), "--binary", program_arg]);
    let table = std::fs::read_to_string(cron_dir.join(format!("xtask-{}", stack.project))).unwrap();
    let lines: Vec<&str> = table.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 2, "{table}");
    // What cron hands to /bin/sh: after the five time fields and the user, `\%` made `%`.
    let command = lines[0].splitn(7, ' ').nth(6).unwrap().replace("\\%", "%");
    let run = std::process::Command::new("/bin/sh").args(["-c", &command]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let args = std::fs::read_to_string(&record).unwrap();
    let file = stack.files[0].to_str().unwrap();
    assert!(args.lines().any(|a| a == file), "the compose file's path arrives as one intact argument:\n{args}");
    assert_eq!(args.lines().filter(|a| *a == "backup" || *a == "prune").count(), 2, "backup && prune ran:\n{args}");

    // Without systemd and without --cron: the lines are printed, nothing installed.
    if !std::path::Path::new("/run/systemd/system").exists() {
        let out = stack.xtask_ok(&["schedule", "install", "--binary", program_arg]);
        assert!(out.contains("systemd is not running here") && out.contains("# xtask-schedule: project="), "{out}");
        assert!(out.contains("\n15 03 * * * if [ -r "), "the default time, no user field in a crontab: {out}");
    }
}

#[test]
fn check_levels_follow_a_filled_tmpfs_bind_and_a_backup_aged_by_a_fixed_clock() {
    if !engine() {
        return;
    }
    let compose = r#"services:
  app:
    image: ${APP_IMAGE:-busybox}
    command: ["sleep", "1000000"]
    volumes:
      - ${OPS_BIND}:/srv/data
x-xtask:
  binds: {"${OPS_BIND}": {role: data, priority: critical}}
"#;
    let backups = TempDir::new("ops-levels-backups");
    let bind = TempDir::new("ops-levels-bind");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", bind.s()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !mounted {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "mount a tmpfs (root) under CI=true");
        eprintln!("SKIPPED: cannot mount a tmpfs (not root)");
        return;
    }
    let (_project, mut stack) = stack_from("ops-levels", compose, "OPS_PREFIX");
    stack.env.push(("XTASK_BACKUP_DIR".into(), backups.s().to_string()));
    stack.env.push(("OPS_BIND".into(), bind.s().to_string()));
    std::fs::write(bind.0.join("small"), vec![7u8; 100_000]).unwrap();
    stack.compose(&["up", "-d", "--wait"]);
    stack.xtask_ok(&["backup"]);
    stack.xtask_ok(&["verify", "--latest", "--deep"]);
    let check = |extra: &[(&str, String)]| {
        let mut s = stack.env.clone();
        s.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["--project-name", &stack.project, "--file", stack.files[0].to_str().unwrap(), "check", "--json"])
            .envs(s.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
        (out.status.code().unwrap(), report)
    };
    let (code, report) = check(&[]);
    assert_eq!(code, 0, "{report:#}");
    let binds: Vec<&Value> = report["disks"].as_array().unwrap().iter().filter(|d| d["what"] == "bind").collect();
    assert_eq!(binds.len(), 1, "{report:#}");
    assert_eq!(binds[0]["path"].as_str(), Some(bind.s()));
    assert_eq!(binds[0]["size_bytes"].as_u64(), Some(1 << 20));

    // The tmpfs filled past 95%: critical, naming the bind.
    std::fs::write(bind.0.join("big"), vec![7u8; 900_000]).unwrap();
    let (code, report) = check(&[]);
    assert_eq!(code, 2, "{report:#}");
    let disk = report["findings"].as_array().unwrap().iter().find(|f| f["subject"] == bind.s()).unwrap();
    assert_eq!(disk["level"], "critical", "{disk}");
    let grown = report["volumes"].as_array().unwrap().iter().find(|v| v["name"] == bind.s()).unwrap();
    assert!(
        grown["size_bytes"].as_u64().unwrap() > grown["size_at_backup_bytes"].as_u64().unwrap() + 800_000,
        "{grown}"
    );
    std::fs::remove_file(bind.0.join("big")).unwrap();

    // The same backup seen 30 hours later: a warning; 60 hours later: critical; the growth since
    // is a rate per day now that more than an hour passed.
    let at = |hours: i64| {
        let t = time::OffsetDateTime::now_utc() + time::Duration::hours(hours);
        ("XTASK_CHECK_NOW", t.format(&time::format_description::well_known::Rfc3339).unwrap())
    };
    let (code, report) = check(&[at(30)]);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(level_of(&report, "backup_age"), ["warning"]);
    assert!(report["backup"]["age_seconds"].as_i64().unwrap() >= 30 * 3600);
    let grown = report["volumes"].as_array().unwrap().iter().find(|v| v["name"] == bind.s()).unwrap();
    assert!(grown["growth_bytes_per_day"].is_number(), "{grown}");
    let (code, report) = check(&[at(60)]);
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(level_of(&report, "backup_age"), ["critical"]);
}

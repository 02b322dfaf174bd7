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
    let (code, _, err) = stack.xtask_code(&["check"]);
    assert_eq!(code, 2, "a check that cannot read its settings is critical: {err}");
    assert!(err.contains("x-xtask.alerts") && err.contains("disk_precent"), "{err}");
    assert!(Path::new(&prom).exists());
}

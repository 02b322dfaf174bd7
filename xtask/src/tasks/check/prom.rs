//! `check --prometheus FILE`: the report as a node_exporter textfile (the Prometheus text
//! format 0.0.4: `# HELP`, `# TYPE`, then `name{labels} value` lines), built by a pure function
//! and written atomically so the collector never reads half a file. Names carry their unit and
//! the `xtask_` prefix; every series has the `project` label.

use std::fmt::Write as _;

use super::assess::{Level, Report};

/// A label value escaped as the text format wants: `\`, `"` and newlines.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// One metric family: its help, type and samples (extra labels, value).
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

fn families(r: &Report) -> Vec<Family> {
    let mut out = vec![Family {
        name: "xtask_check_status",
        help: "Worst finding of the last check: 0 ok, 1 warning, 2 critical.",
        samples: vec![(vec![], r.level as u8 as f64)],
    }];
    let findings = [Level::Ok, Level::Warning, Level::Critical]
        .map(|l| (vec![("level", l.as_str().to_string())], r.findings.iter().filter(|f| f.level == l).count() as f64));
    out.push(Family {
        name: "xtask_check_findings",
        help: "Findings of the last check by level.",
        samples: findings.into(),
    });
    let disk = |f: &dyn Fn(&super::assess::DiskReport) -> f64| {
        r.disks.iter().map(|d| (vec![("what", d.what.to_string()), ("path", d.path.clone())], f(d))).collect()
    };
    out.push(Family {
        name: "xtask_filesystem_size_bytes",
        help: "Size of a filesystem holding the stack's data or archives.",
        samples: disk(&|d| d.size_bytes as f64),
    });
    out.push(Family {
        name: "xtask_filesystem_avail_bytes",
        help: "Bytes an unprivileged writer can still use on the filesystem.",
        samples: disk(&|d| d.available_bytes as f64),
    });
    out.push(Family {
        name: "xtask_filesystem_used_ratio",
        help: "Share of the filesystem in use, 0 to 1, as df computes it.",
        samples: disk(&|d| d.used_percent as f64 / 100.0),
    });
    let volume = |f: &dyn Fn(&super::assess::VolumeReport) -> Option<f64>| {
        r.volumes.iter().filter_map(|v| f(v).map(|x| (vec![("volume", v.name.clone())], x))).collect()
    };
    out.push(Family {
        name: "xtask_volume_size_bytes",
        help: "Size on disk of a volume or bind of the stack.",
        samples: volume(&|v| v.size_bytes.map(|s| s as f64)),
    });
    out.push(Family {
        name: "xtask_volume_growth_bytes_per_day",
        help: "Growth of a volume since the newest backup, per day.",
        samples: volume(&|v| v.growth_bytes_per_day),
    });
    out.push(Family {
        name: "xtask_volume_days_until_full",
        help: "Days until the volume's filesystem is full at its growth since the newest backup.",
        samples: volume(&|v| v.days_until_full),
    });
    out.extend(ages(r));
    out.push(Family {
        name: "xtask_unprotected_items",
        help: "Volumes and binds holding data that no copy protects (NOT PROTECTED).",
        samples: vec![(vec![], r.unprotected.len() as f64)],
    });
    out
}

fn ages(r: &Report) -> Vec<Family> {
    let stamp = |a: &super::assess::AgeReport| {
        a.at.as_deref()
            .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| t.unix_timestamp() as f64)
    };
    vec![
        Family {
            name: "xtask_backup_last_success_timestamp_seconds",
            help: "When the newest complete backup was made (Unix time).",
            samples: stamp(&r.backup).map(|t| (vec![], t)).into_iter().collect(),
        },
        Family {
            name: "xtask_deep_verify_last_success_timestamp_seconds",
            help: "When the newest successful deep verify (restore drill) ran (Unix time).",
            samples: stamp(&r.deep_verify).map(|t| (vec![], t)).into_iter().collect(),
        },
        Family {
            name: "xtask_remote_last_complete_timestamp_seconds",
            help: "When a remote's newest complete archive was made (Unix time).",
            samples: r
                .remotes
                .iter()
                .filter_map(|a| stamp(a).map(|t| (vec![("remote", a.subject.clone())], t)))
                .collect(),
        },
    ]
}

/// The textfile: every family with its HELP and TYPE (gauges), samples labelled with the project.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for f in families(r) {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} gauge", f.name);
        for (labels, value) in f.samples {
            let labels: Vec<String> = std::iter::once(("project", r.project.clone()))
                .chain(labels)
                .map(|(k, v)| format!("{k}=\"{}\"", escape(&v)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {}", f.name, labels.join(","), number(value));
        }
    }
    out
}

/// The textfile of a check that could not run: its status critical, nothing else claimed.
pub fn render_failed(project: &str) -> String {
    format!(
        "# HELP xtask_check_status Worst finding of the last check: 0 ok, 1 warning, 2 critical.\n\
         # TYPE xtask_check_status gauge\nxtask_check_status{{project=\"{}\"}} 2\n",
        escape(project)
    )
}

/// A sample value: integers without a fraction, others as Rust prints them; non-finite as the
/// format spells them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::files::Usage;
    use crate::model::alerts::{Alerts, Cadence};
    use crate::tasks::check::assess::{assess, Disk, Facts, RemoteFact, VolumeFact};

    /// Every line is a comment (`# HELP name …`, `# TYPE name gauge`) or `name{labels} value`
    /// with a valid name, quoted escaped label values and a number: a strict reading of the text
    /// format, as the e2e test applies it too.
    pub fn parses(text: &str) -> Result<usize, String> {
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
                let name = rest.split(' ').next().unwrap_or_default();
                if !valid_name(name) {
                    return Err(format!("bad name in {line:?}"));
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or(format!("no value in {line:?}"))?;
            if value.parse::<f64>().is_err() && !["NaN", "+Inf", "-Inf"].contains(&value) {
                return Err(format!("bad value in {line:?}"));
            }
            let (name, labels) = series.split_once('{').ok_or(format!("no labels in {line:?}"))?;
            let labels = labels.strip_suffix('}').ok_or(format!("unclosed labels in {line:?}"))?;
            if !valid_name(name) || !valid_labels(labels) {
                return Err(format!("bad series in {line:?}"));
            }
            samples += 1;
        }
        Ok(samples)
    }

    fn valid_name(n: &str) -> bool {
        n.starts_with("xtask_") && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }

    fn valid_labels(mut s: &str) -> bool {
        while !s.is_empty() {
            let Some((key, rest)) = s.split_once("=\"") else { return false };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return false;
            }
            let mut end = None;
            let mut escaped = false;
            for (i, c) in rest.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, '\n') => return false,
                    _ => {}
                }
            }
            let Some(end) = end else { return false };
            s = &rest[end + 1..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
        true
    }

    #[test]
    fn the_textfile_parses_with_units_in_the_names_and_escaped_labels() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let facts = Facts {
            project: "app".into(),
            now,
            disks: vec![Disk {
                what: "bind",
                path: "/srv/a \"b\"\\c\nd".into(),
                usage: Usage { size: 1000, used: 810, available: 190 },
            }],
            volumes: vec![VolumeFact {
                name: "app-db".into(),
                size_now: Some(10),
                size_at_backup: None,
                available: None,
            }],
            newest_backup: Some((now - time::Duration::hours(2), "b".into())),
            newest_deep_verify: None,
            failed_drill: None,
            remotes: vec![RemoteFact { name: "offsite".into(), newest: Ok(Some(now)) }],
            unprotected: Vec::new(),
            not_in_newest: Vec::new(),
            problems: Vec::new(),
        };
        let text = render(&assess(&facts, &Alerts::defaults(Cadence::Monthly)));
        assert_eq!(parses(&text), Ok(11), "{text}");
        assert!(text.contains("xtask_check_status{project=\"app\"} 1\n"), "{text}");
        assert!(text.contains("path=\"/srv/a \\\"b\\\"\\\\c\\nd\"} 0.81\n"), "{text}");
        assert!(text.contains("xtask_backup_last_success_timestamp_seconds{project=\"app\"} 1799992800\n"));
        assert!(text
            .contains("xtask_remote_last_complete_timestamp_seconds{project=\"app\",remote=\"offsite\"} 1800000000"));
        assert!(!text.contains("xtask_deep_verify_last_success_timestamp_seconds{"), "no sample without a verify");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap();
            let unit = ["_bytes", "_ratio", "_seconds", "_per_day", "_full", "_status", "_findings", "_items"];
            assert!(unit.iter().any(|u| name.ends_with(u)), "{name} says its unit");
        }
        assert_eq!(parses(&render_failed("app")), Ok(1));
        assert!(render_failed("app").ends_with("xtask_check_status{project=\"app\"} 2\n"));
        assert!(parses("xtask_a{x=\"1} 2").is_err() && parses("xtask_a{} x").is_err() && parses("node_a{} 1").is_err());
    }
}

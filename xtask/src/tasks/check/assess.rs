//! What `check` concludes, decided from plain facts by pure functions (no engine, no clock of
//! its own: `now` is a fact): each filesystem's use against the thresholds, each volume's
//! growth since the last backup and the days until its filesystem is full at that rate, the age
//! of the newest backup, deep verify and remote archive, and data nothing protects.

use serde::Serialize;
use time::OffsetDateTime;

use crate::files::Usage;
use crate::model::alerts::Alerts;

/// How bad a finding is; the exit code of `check` is the worst one's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }
}

/// A filesystem the stack's data or archives live on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// `volumes` (the engine's volumes), `backup_dir` or `bind`.
    pub what: &'static str,
    /// A path on it (the backup directory, the bind's host path), or the volumes on it.
    pub path: String,
    pub usage: Usage,
}

/// One volume or bind: its size now, its size in the newest backup, the room left where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFact {
    pub name: String,
    pub size_now: Option<u64>,
    pub size_at_backup: Option<u64>,
    pub available: Option<u64>,
}

/// A remote's newest complete archive, or why it could not be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFact {
    pub name: String,
    pub newest: Result<Option<OffsetDateTime>, String>,
}

/// Everything gathered, as data.
#[derive(Debug, Clone)]
pub struct Facts {
    pub project: String,
    pub now: OffsetDateTime,
    pub disks: Vec<Disk>,
    pub volumes: Vec<VolumeFact>,
    /// The newest complete backup: when, and its file.
    pub newest_backup: Option<(OffsetDateTime, String)>,
    pub newest_deep_verify: Option<(OffsetDateTime, String)>,
    /// The last drill when it failed after the newest success: (archive, why).
    pub failed_drill: Option<(String, String)>,
    pub remotes: Vec<RemoteFact>,
    /// (name, why) of data no copy protects.
    pub unprotected: Vec<(String, String)>,
    /// Data a backup copies that the newest backup does not hold (added since).
    pub not_in_newest: Vec<String>,
    /// What could not be gathered (each a warning).
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `disk`, `growth`, `backup_age`, `deep_verify_age`, `drill`, `remote_age`, `protection` or `gather`.
    pub check: &'static str,
    pub subject: String,
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskReport {
    pub what: &'static str,
    pub path: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub used_percent: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeReport {
    pub name: String,
    pub size_bytes: Option<u64>,
    pub size_at_backup_bytes: Option<u64>,
    /// Since the newest backup; null when the backup is younger than an hour or a size is unknown.
    pub growth_bytes_per_day: Option<f64>,
    /// At that rate, until its filesystem is full; null when it does not grow.
    pub days_until_full: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgeReport {
    pub subject: String,
    /// UTC, RFC 3339; null: none.
    pub at: Option<String>,
    pub age_seconds: Option<i64>,
    pub max_age_seconds: u64,
}

/// What `check --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub project: String,
    pub level: Level,
    pub exit_code: u8,
    pub checked_at: String,
    pub findings: Vec<Finding>,
    pub disks: Vec<DiskReport>,
    pub volumes: Vec<VolumeReport>,
    pub backup: AgeReport,
    pub deep_verify: AgeReport,
    pub remotes: Vec<AgeReport>,
    pub unprotected: Vec<String>,
}

/// The percentage of a filesystem in use as `df` shows it: used over what users can have,
/// rounded up.
pub fn used_percent(u: &Usage) -> u8 {
    let total = u.used + u.available;
    if total == 0 {
        return 0;
    }
    (u.used.saturating_mul(100).div_ceil(total)).min(100) as u8
}

pub fn disk_level(percent: u8, a: &Alerts) -> Level {
    if percent >= a.disk_critical_percent {
        Level::Critical
    } else if percent >= a.disk_percent {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// Bytes per day since the backup; None when less than an hour passed (too short to say).
pub fn growth_per_day(now: u64, then: u64, elapsed_seconds: i64) -> Option<f64> {
    if elapsed_seconds < 3600 {
        return None;
    }
    Some((now as f64 - then as f64) * 86_400.0 / elapsed_seconds as f64)
}

/// Days until `available` bytes are gone at `rate` bytes a day; None when it does not grow.
pub fn days_until_full(available: u64, rate: f64) -> Option<f64> {
    (rate > 0.0).then(|| available as f64 / rate)
}

/// Warning past the allowed age, critical past twice that; none at all is critical.
pub fn age_level(age_seconds: Option<i64>, max: u64) -> Level {
    match age_seconds {
        None => Level::Critical,
        Some(a) if a > 2 * max as i64 => Level::Critical,
        Some(a) if a > max as i64 => Level::Warning,
        Some(_) => Level::Ok,
    }
}

/// How soon a filesystem fills: warning within `days` days, critical within a fifth of that.
pub fn full_level(days_left: Option<f64>, days: u64) -> Level {
    match days_left {
        Some(d) if d < days as f64 / 5.0 => Level::Critical,
        Some(d) if d < days as f64 => Level::Warning,
        _ => Level::Ok,
    }
}

/// `3d 4h`, `5h 12m`, `40s`: an age for people.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The whole decision.
pub fn assess(f: &Facts, a: &Alerts) -> Report {
    let mut findings = Vec::new();
    let disks = disks(f, a, &mut findings);
    let volumes = volumes(f, a, &mut findings);
    let age = |what: &str, at: Option<OffsetDateTime>, max: u64| AgeReport {
        subject: what.to_string(),
        at: at.map(rfc3339),
        age_seconds: at.map(|t| (f.now - t).whole_seconds()),
        max_age_seconds: max,
    };
    let backup = age("backup", f.newest_backup.as_ref().map(|b| b.0), a.backup_max_age_seconds);
    let which = f.newest_backup.as_ref().map(|b| b.1.as_str()).unwrap_or("none");
    findings.push(age_finding("backup_age", "newest complete backup", &backup, which, "cargo xtask backup"));
    let deep = age("deep_verify", f.newest_deep_verify.as_ref().map(|b| b.0), a.verify_max_age_seconds);
    let which = f.newest_deep_verify.as_ref().map(|b| b.1.as_str()).unwrap_or("none");
    let mut deep_finding = age_finding(
        "deep_verify_age",
        "newest successful drill or deep verify",
        &deep,
        which,
        "cargo xtask drill --latest",
    );
    // A drill overdue is a warning: the archives may still be good.
    deep_finding.level = deep_finding.level.min(Level::Warning);
    findings.push(deep_finding);
    if let Some((archive, why)) = &f.failed_drill {
        let why = why.lines().next().unwrap_or_default();
        let message = format!(
            "the last restore drill ({archive}) failed: {why}; see its logs, then `cargo xtask drill --latest`"
        );
        findings.push(Finding { check: "drill", subject: archive.clone(), level: Level::Warning, message });
    }
    let mut remotes = Vec::new();
    for r in &f.remotes {
        remotes.push(remote(r, f.now, a, &mut findings));
    }
    protection(f, &mut findings);
    for p in &f.problems {
        findings.push(Finding { check: "gather", subject: "check".into(), level: Level::Warning, message: p.clone() });
    }
    let level = findings.iter().map(|x| x.level).max().unwrap_or(Level::Ok);
    Report {
        project: f.project.clone(),
        level,
        exit_code: level as u8,
        checked_at: rfc3339(f.now),
        findings,
        disks,
        volumes,
        backup,
        deep_verify: deep,
        remotes,
        unprotected: f.unprotected.iter().map(|(n, _)| n.clone()).collect(),
    }
}

fn age_finding(check: &'static str, what: &str, r: &AgeReport, which: &str, fix: &str) -> Finding {
    let level = age_level(r.age_seconds, r.max_age_seconds);
    let allowed = human_age(r.max_age_seconds as i64);
    let message = match r.age_seconds {
        None => format!("no {}: run `{fix}`", what.trim_start_matches("newest ")),
        Some(s) if level == Level::Ok => format!("{what} {} old ({which}; allowed {allowed})", human_age(s)),
        Some(s) => format!("{what} is {} old, more than the {allowed} allowed ({which}): run `{fix}`", human_age(s)),
    };
    Finding { check, subject: r.subject.clone(), level, message }
}

fn disks(f: &Facts, a: &Alerts, findings: &mut Vec<Finding>) -> Vec<DiskReport> {
    let mut out = Vec::new();
    for d in &f.disks {
        let percent = used_percent(&d.usage);
        let level = disk_level(percent, a);
        let message = format!(
            "{} {}: {percent}% used ({} free); warning at {}%, critical at {}%",
            d.what.replace('_', " "),
            d.path,
            crate::ui::human_bytes(d.usage.available),
            a.disk_percent,
            a.disk_critical_percent
        );
        findings.push(Finding { check: "disk", subject: d.path.clone(), level, message });
        out.push(DiskReport {
            what: d.what,
            path: d.path.clone(),
            size_bytes: d.usage.size,
            used_bytes: d.usage.used,
            available_bytes: d.usage.available,
            used_percent: percent,
        });
    }
    out
}

fn volumes(f: &Facts, a: &Alerts, findings: &mut Vec<Finding>) -> Vec<VolumeReport> {
    let elapsed = f.newest_backup.as_ref().map(|b| (f.now - b.0).whole_seconds()).unwrap_or(0);
    let mut out = Vec::new();
    for v in &f.volumes {
        let rate = match (v.size_now, v.size_at_backup) {
            (Some(now), Some(then)) => growth_per_day(now, then, elapsed),
            _ => None,
        };
        let days = rate.and_then(|r| v.available.and_then(|avail| days_until_full(avail, r)));
        let level = full_level(days, a.days_until_full);
        if level != Level::Ok {
            let message = format!(
                "{} grows {}/day since the newest backup: its filesystem is full in {:.1} days",
                v.name,
                crate::ui::human_bytes(rate.unwrap_or_default() as u64),
                days.unwrap_or_default()
            );
            findings.push(Finding { check: "growth", subject: v.name.clone(), level, message });
        }
        out.push(VolumeReport {
            name: v.name.clone(),
            size_bytes: v.size_now,
            size_at_backup_bytes: v.size_at_backup,
            growth_bytes_per_day: rate,
            days_until_full: days,
        });
    }
    out
}

fn remote(r: &RemoteFact, now: OffsetDateTime, a: &Alerts, findings: &mut Vec<Finding>) -> AgeReport {
    let subject = format!("remote {}", r.name);
    let newest = r.newest.as_ref().ok().copied().flatten();
    let report = AgeReport {
        subject: r.name.clone(),
        at: newest.map(rfc3339),
        age_seconds: newest.map(|t| (now - t).whole_seconds()),
        max_age_seconds: a.remote_max_age_seconds,
    };
    let finding = match &r.newest {
        Err(why) => Finding {
            check: "remote_age",
            subject,
            level: Level::Warning,
            message: format!("remote {}: its archives could not be listed: {why}", r.name),
        },
        Ok(_) => {
            let fix = format!("cargo xtask push --latest --to {}", r.name);
            let mut f = age_finding("remote_age", &format!("complete archive in remote {}", r.name), &report, "", &fix);
            f.message = f.message.replace(" ()", "").replace("(; ", "(");
            f.subject = subject;
            f
        }
    };
    findings.push(finding);
    report
}

fn protection(f: &Facts, findings: &mut Vec<Finding>) {
    for (name, why) in &f.unprotected {
        findings.push(Finding {
            check: "protection",
            subject: name.clone(),
            level: Level::Critical,
            message: why.clone(),
        });
    }
    for name in &f.not_in_newest {
        findings.push(Finding {
            check: "protection",
            subject: name.clone(),
            level: Level::Warning,
            message: format!("{name} is not in the newest backup (added since?): run `cargo xtask backup`"),
        });
    }
    if f.unprotected.is_empty() && f.not_in_newest.is_empty() {
        let message = match f.newest_backup {
            Some(_) => "nothing NOT PROTECTED; the newest backup holds every volume, bind and database a backup copies",
            None => "nothing NOT PROTECTED",
        }
        .to_string();
        findings.push(Finding { check: "protection", subject: "data".into(), level: Level::Ok, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::alerts::Cadence;

    const GIB: u64 = 1 << 30;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn facts() -> Facts {
        Facts {
            project: "app".into(),
            now: now(),
            disks: vec![Disk {
                what: "backup_dir",
                path: "/b".into(),
                usage: Usage { size: 100 * GIB, used: 50 * GIB, available: 50 * GIB },
            }],
            volumes: Vec::new(),
            newest_backup: Some((now() - time::Duration::hours(3), "full_backup_x.tar.gz".into())),
            newest_deep_verify: Some((now() - time::Duration::days(2), "full_backup_x.tar.gz".into())),
            failed_drill: None,
            remotes: Vec::new(),
            unprotected: Vec::new(),
            not_in_newest: Vec::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_stack_is_ok_with_every_check_named() {
        let r = assess(&facts(), &Alerts::defaults(Cadence::Monthly));
        assert_eq!((r.level, r.exit_code), (Level::Ok, 0));
        let checks: Vec<&str> = r.findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["disk", "backup_age", "deep_verify_age", "protection"]);
        assert_eq!(r.disks[0].used_percent, 50);
        assert_eq!(r.backup.age_seconds, Some(3 * 3600));
    }

    #[test]
    fn thresholds_decide_the_disk_level_as_df_rounds() {
        let a = Alerts::defaults(Cadence::Monthly);
        let u = |used, available| Usage { size: used + available + 5, used, available };
        assert_eq!(used_percent(&u(799, 201)), 80, "79.9% is shown as 80%, as df does");
        assert_eq!(disk_level(used_percent(&u(799, 201)), &a), Level::Warning);
        assert_eq!(disk_level(used_percent(&u(790, 210)), &a), Level::Ok);
        assert_eq!(disk_level(used_percent(&u(950, 50)), &a), Level::Critical);
        assert_eq!(used_percent(&u(0, 0)), 0);
        let mut f = facts();
        f.disks[0].usage = u(81, 19);
        let r = assess(&f, &a);
        assert_eq!((r.level, r.exit_code), (Level::Warning, 1));
        assert!(r.findings[0].message.contains("81% used"), "{:?}", r.findings[0]);
    }

    #[test]
    fn growth_and_days_until_full() {
        assert_eq!(growth_per_day(3 * GIB, GIB, 86_400 * 2), Some(GIB as f64));
        assert_eq!(growth_per_day(GIB, GIB, 1800), None, "under an hour: no rate");
        assert_eq!(growth_per_day(GIB, 2 * GIB, 86_400), Some(-(GIB as f64)));
        assert_eq!(days_until_full(10 * GIB, GIB as f64), Some(10.0));
        assert_eq!(days_until_full(10 * GIB, 0.0), None);
        assert_eq!(days_until_full(10 * GIB, -1.0), None);
        assert_eq!(full_level(Some(10.0), 14), Level::Warning);
        assert_eq!(full_level(Some(2.0), 14), Level::Critical);
        assert_eq!(full_level(Some(20.0), 14), Level::Ok);
        let mut f = facts();
        f.newest_backup = Some((now() - time::Duration::days(1), "b".into()));
        f.volumes = vec![VolumeFact {
            name: "app-media".into(),
            size_now: Some(5 * GIB),
            size_at_backup: Some(4 * GIB),
            available: Some(2 * GIB),
        }];
        let r = assess(&f, &Alerts::defaults(Cadence::Monthly));
        assert_eq!(r.volumes[0].growth_bytes_per_day, Some(GIB as f64));
        assert_eq!(r.volumes[0].days_until_full, Some(2.0));
        let growth = r.findings.iter().find(|x| x.check == "growth").unwrap();
        assert_eq!(growth.level, Level::Critical);
        assert!(growth.message.contains("full in 2.0 days"), "{}", growth.message);
    }

    #[test]
    fn ages_warn_past_the_allowed_and_are_critical_at_twice_or_when_missing() {
        assert_eq!(age_level(Some(26 * 3600), 26 * 3600), Level::Ok);
        assert_eq!(age_level(Some(26 * 3600 + 1), 26 * 3600), Level::Warning);
        assert_eq!(age_level(Some(52 * 3600 + 1), 26 * 3600), Level::Critical);
        assert_eq!(age_level(None, 26 * 3600), Level::Critical);
        let mut f = facts();
        f.newest_backup = Some((now() - time::Duration::hours(30), "b".into()));
        f.newest_deep_verify = None;
        f.failed_drill = Some(("full_backup_y.tar.gz".into(), "db did not become healthy\nmore".into()));
        let r = assess(&f, &Alerts::defaults(Cadence::Monthly));
        let level = |c: &str| r.findings.iter().find(|x| x.check == c).unwrap().level;
        assert_eq!(level("backup_age"), Level::Warning);
        assert_eq!(level("deep_verify_age"), Level::Warning, "an overdue drill is never critical");
        let drill = r.findings.iter().find(|x| x.check == "drill").expect("a failed drill is a finding");
        assert_eq!(drill.level, Level::Warning);
        assert!(
            drill.message.contains("full_backup_y.tar.gz")
                && drill.message.ends_with("healthy; see its logs, then `cargo xtask drill --latest`"),
            "{}",
            drill.message
        );
        assert!(r.findings[1].message.contains("30h 0m old"), "{}", r.findings[1].message);
        f.newest_backup = None;
        assert_eq!(assess(&f, &Alerts::defaults(Cadence::Monthly)).exit_code, 2);
    }

    #[test]
    fn remotes_unprotected_data_and_gathering_problems() {
        let mut f = facts();
        f.remotes = vec![
            RemoteFact { name: "offsite".into(), newest: Ok(Some(now() - time::Duration::hours(1))) },
            RemoteFact { name: "nas".into(), newest: Ok(None) },
            RemoteFact { name: "b2".into(), newest: Err("rclone failed".into()) },
        ];
        let r = assess(&f, &Alerts::defaults(Cadence::Monthly));
        let remote: Vec<(String, Level)> =
            r.findings.iter().filter(|x| x.check == "remote_age").map(|x| (x.subject.clone(), x.level)).collect();
        assert_eq!(
            remote,
            [
                ("remote offsite".to_string(), Level::Ok),
                ("remote nas".to_string(), Level::Critical),
                ("remote b2".to_string(), Level::Warning)
            ]
        );
        assert_eq!(r.remotes[0].age_seconds, Some(3600));
        let mut f = facts();
        f.unprotected = vec![("app-mongo".into(), "NOT PROTECTED: …".into())];
        f.not_in_newest = vec!["app-new".into()];
        f.problems = vec!["df failed".into()];
        let r = assess(&f, &Alerts::defaults(Cadence::Monthly));
        assert_eq!((r.level, r.unprotected.clone()), (Level::Critical, vec!["app-mongo".to_string()]));
        assert!(r.findings.iter().any(|x| x.check == "gather" && x.level == Level::Warning));
        assert!(r.findings.iter().any(|x| x.subject == "app-new" && x.level == Level::Warning));
    }

    #[test]
    fn ages_for_people() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(3 * 3600 + 120), "3h 2m");
        assert_eq!(human_age(3 * 86_400 + 7200), "3d 2h");
    }
}

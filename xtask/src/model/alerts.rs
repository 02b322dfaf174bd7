//! The operations settings of the compose file's `x-xtask:` block: when `check` warns
//! (`alerts`), whom it tells (`notify`, each item read by `model::notify`), and what `schedule install` writes (`schedule`,
//! `retention`). Pure parsing, each key checked against a strict shape: an unknown key is an
//! error (a typo must not silently leave an alert at its default).
//!
//! ```yaml
//! x-xtask:
//!   alerts:
//!     disk_percent: 80          # a filesystem at or above this: warning (default 80)
//!     disk_critical_percent: 95 # critical (default 95)
//!     days_until_full: 14       # growth that fills a filesystem sooner: warning (critical at a fifth)
//!     backup_max_age: 26h       # newest complete backup older: warning, twice as old: critical
//!     verify_max_age: 32d       # newest successful deep verify older: warning
//!     remote_max_age: 26h       # a remote's newest complete archive older: warning
//!   notify: ["https://hc-ping.com/UUID", "https://chat.example.com/hooks/TOKEN"]
//!   schedule: {at: "03:15", drill: monthly}
//!   retention: {keep_last: 3, keep_daily: 7, keep_weekly: 4, keep_monthly: 6}
//!   drill: {service: db, check: [psql, -U, app, -c, "SELECT 1"]}  # run in the drill's copy
//! ```

use anyhow::{bail, Context, Result};
use serde_yaml::Value;

/// How often the scheduled deep verify (the restore drill) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    Weekly,
    Monthly,
}

impl Cadence {
    pub fn as_str(self) -> &'static str {
        match self {
            Cadence::Weekly => "weekly",
            Cadence::Monthly => "monthly",
        }
    }

    /// How old the newest deep verify may be under this cadence: its period and a day of slack.
    pub fn allowed_seconds(self) -> u64 {
        match self {
            Cadence::Weekly => 8 * DAY,
            Cadence::Monthly => 32 * DAY,
        }
    }

    pub fn parse(s: &str) -> Result<Cadence> {
        match s {
            "weekly" => Ok(Cadence::Weekly),
            "monthly" => Ok(Cadence::Monthly),
            _ => bail!("{s:?}: write weekly or monthly"),
        }
    }
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// The thresholds of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    pub disk_percent: u8,
    pub disk_critical_percent: u8,
    pub days_until_full: u64,
    pub backup_max_age_seconds: u64,
    pub verify_max_age_seconds: u64,
    pub remote_max_age_seconds: u64,
}

impl Alerts {
    /// The defaults for a schedule: a daily backup (26 h: a day and two hours of slack), the
    /// drill's cadence for the deep verify.
    pub fn defaults(drill: Cadence) -> Alerts {
        Alerts {
            disk_percent: 80,
            disk_critical_percent: 95,
            days_until_full: 14,
            backup_max_age_seconds: 26 * HOUR,
            verify_max_age_seconds: drill.allowed_seconds(),
            remote_max_age_seconds: 26 * HOUR,
        }
    }
}

/// When `schedule install` runs the nightly backup and how often the drill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// `HH:MM`, local time of the host.
    pub at: String,
    pub drill: Cadence,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule { at: "03:15".into(), drill: Cadence::Monthly }
    }
}

/// The grandfather-father-son retention the scheduled prune applies (as `prune --keep-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Default for Keep {
    fn default() -> Keep {
        Keep { last: 3, daily: 7, weekly: 4, monthly: 6 }
    }
}

/// Everything this module reads from the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operations {
    pub alerts: Alerts,
    pub notify: Vec<super::notify::Target>,
    pub schedule: Schedule,
    pub retention: Keep,
    /// The command `drill` runs in the throwaway stack once every service is healthy.
    pub drill: Option<DrillCheck>,
}

/// `x-xtask.drill`: a command (a list of words, never a shell string) `drill` runs with
/// `docker compose exec` in `service` of the throwaway stack; a non-zero exit fails the drill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillCheck {
    pub service: String,
    pub check: Vec<String>,
}

impl Default for Operations {
    fn default() -> Operations {
        Operations {
            alerts: Alerts::defaults(Cadence::Monthly),
            notify: Vec::new(),
            schedule: Schedule::default(),
            retention: Keep::default(),
            drill: None,
        }
    }
}

/// Reads `alerts`, `notify`, `schedule` and `retention` from the `x-xtask` block.
pub fn parse(block: Option<&Value>) -> Result<Operations> {
    let mut out = Operations::default();
    let Some(block) = block else { return Ok(out) };
    if let Some(v) = block.get("schedule") {
        out.schedule = schedule(v).context("x-xtask.schedule")?;
    }
    out.alerts = Alerts::defaults(out.schedule.drill);
    if let Some(v) = block.get("alerts") {
        alerts(v, &mut out.alerts).context("x-xtask.alerts")?;
    }
    if let Some(v) = block.get("notify") {
        out.notify = notify(v).context("x-xtask.notify")?;
    }
    if let Some(v) = block.get("retention") {
        out.retention = retention(v).context("x-xtask.retention")?;
    }
    if let Some(v) = block.get("drill") {
        out.drill = Some(drill(v).context("x-xtask.drill")?);
    }
    Ok(out)
}

/// The keys of a mapping, each checked against `known`.
fn entries<'a>(v: &'a Value, known: &[&str]) -> Result<Vec<(&'a str, &'a Value)>> {
    let map = v.as_mapping().with_context(|| format!("must be a mapping of {}", known.join(", ")))?;
    let mut out = Vec::new();
    for (k, v) in map {
        let key = k.as_str().context("every key must be a string")?;
        if !known.contains(&key) {
            bail!("unknown key {key:?}; known: {}", known.join(", "));
        }
        out.push((key, v));
    }
    Ok(out)
}

fn number(v: &Value, key: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64> {
    let n = v.as_u64().with_context(|| format!("{key} must be a whole number"))?;
    if !range.contains(&n) {
        bail!("{key} is {n}; use {} to {}", range.start(), range.end());
    }
    Ok(n)
}

fn alerts(v: &Value, a: &mut Alerts) -> Result<()> {
    const KNOWN: [&str; 6] = [
        "disk_percent",
        "disk_critical_percent",
        "days_until_full",
        "backup_max_age",
        "verify_max_age",
        "remote_max_age",
    ];
    for (key, v) in entries(v, &KNOWN)? {
        match key {
            "disk_percent" => a.disk_percent = number(v, key, 1..=100)? as u8,
            "disk_critical_percent" => a.disk_critical_percent = number(v, key, 1..=100)? as u8,
            "days_until_full" => a.days_until_full = number(v, key, 1..=3650)?,
            _ => {
                let text = v.as_str().with_context(|| format!("{key} must be a duration such as 26h or 8d"))?;
                let secs = duration(text).with_context(|| key.to_string())?;
                match key {
                    "backup_max_age" => a.backup_max_age_seconds = secs,
                    "verify_max_age" => a.verify_max_age_seconds = secs,
                    _ => a.remote_max_age_seconds = secs,
                }
            }
        }
    }
    if a.disk_critical_percent < a.disk_percent {
        bail!("disk_critical_percent ({}) is below disk_percent ({})", a.disk_critical_percent, a.disk_percent);
    }
    Ok(())
}

/// `90m`, `26h`, `8d`, `2w`: a whole number and one unit, at least a minute.
pub fn duration(text: &str) -> Result<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let scale = match unit {
        "m" => 60,
        "h" => HOUR,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => bail!("{text:?} is not a duration: write a number and m, h, d or w (26h, 8d)"),
    };
    let n: u64 =
        digits.parse().ok().filter(|n| *n > 0).with_context(|| format!("{text:?}: the number must be 1 or more"))?;
    n.checked_mul(scale).filter(|s| *s <= 3650 * DAY).with_context(|| format!("{text:?} is longer than ten years"))
}

fn notify(v: &Value) -> Result<Vec<super::notify::Target>> {
    let items: Vec<&Value> = match v {
        Value::String(_) | Value::Mapping(_) => vec![v],
        Value::Sequence(s) => s.iter().collect(),
        _ => bail!("must be a URL, {{url, kind}} or a list of them"),
    };
    items.into_iter().map(super::notify::target).collect()
}

fn schedule(v: &Value) -> Result<Schedule> {
    let mut s = Schedule::default();
    for (key, v) in entries(v, &["at", "drill"])? {
        let text = v.as_str().with_context(|| format!("{key} must be a string"))?;
        match key {
            "at" => s.at = check_time(text)?,
            _ => s.drill = Cadence::parse(text).context("drill")?,
        }
    }
    Ok(s)
}

fn drill(v: &Value) -> Result<DrillCheck> {
    let (mut service, mut check) = (None, None);
    for (key, v) in entries(v, &["service", "check"])? {
        match key {
            "service" => {
                let name = v.as_str().context("service must be a string: the service to run the check in")?;
                let ok = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && !name.starts_with(['-', '.']);
                if !ok {
                    bail!("service {name:?} is not a service name");
                }
                service = Some(name.to_string());
            }
            _ => {
                let words =
                    v.as_sequence().context("check must be a list of words (no shell string): [psql, -c, …]")?;
                let words: Vec<String> = words
                    .iter()
                    .map(|w| w.as_str().map(str::to_string).context("every word of check must be a string"))
                    .collect::<Result<_>>()?;
                if words.is_empty() || words[0].is_empty() {
                    bail!("check must name a command");
                }
                check = Some(words);
            }
        }
    }
    let service = service.context("names no service: write {service: NAME, check: [WORD, …]}")?;
    let check = check.context("names no check command: write {service: NAME, check: [WORD, …]}")?;
    Ok(DrillCheck { service, check })
}

/// `HH:MM` on a 24-hour clock.
pub fn check_time(text: &str) -> Result<String> {
    let ok = text.len() == 5
        && text.as_bytes()[2] == b':'
        && text[..2].parse::<u8>().is_ok_and(|h| h < 24)
        && text[3..].parse::<u8>().is_ok_and(|m| m < 60)
        && text.bytes().enumerate().all(|(i, b)| i == 2 || b.is_ascii_digit());
    if !ok {
        bail!("at {text:?}: write HH:MM on a 24-hour clock (03:15)");
    }
    Ok(text.to_string())
}

fn retention(v: &Value) -> Result<Keep> {
    let mut k = Keep::default();
    for (key, v) in entries(v, &["keep_last", "keep_daily", "keep_weekly", "keep_monthly"])? {
        let n = number(v, key, 0..=10_000)? as usize;
        match key {
            "keep_last" => k.last = n,
            "keep_daily" => k.daily = n,
            "keep_weekly" => k.weekly = n,
            _ => k.monthly = n,
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(text: &str) -> Result<Operations> {
        parse(Some(&serde_yaml::from_str(text).unwrap()))
    }

    #[test]
    fn defaults_follow_a_daily_schedule_and_the_drills_cadence() {
        let o = ops("remotes: {}").unwrap();
        assert_eq!((o.alerts.disk_percent, o.alerts.backup_max_age_seconds), (80, 26 * 3600));
        assert_eq!(o.alerts.verify_max_age_seconds, 32 * DAY);
        let weekly = ops("schedule: {drill: weekly, at: '02:05'}").unwrap();
        assert_eq!((weekly.alerts.verify_max_age_seconds, weekly.schedule.at.as_str()), (8 * DAY, "02:05"));
        assert_eq!(parse(None).unwrap(), Operations::default());
    }

    #[test]
    fn alerts_are_read_strictly() {
        let o = ops("alerts: {disk_percent: 1, backup_max_age: 90m, verify_max_age: 2w, remote_max_age: 3d}").unwrap();
        assert_eq!(o.alerts.disk_percent, 1);
        assert_eq!(
            (o.alerts.backup_max_age_seconds, o.alerts.verify_max_age_seconds, o.alerts.remote_max_age_seconds),
            (5400, 14 * DAY, 3 * DAY)
        );
        for bad in [
            "alerts: {disk_precent: 70}",
            "alerts: {disk_percent: 0}",
            "alerts: {disk_percent: 101}",
            "alerts: {disk_percent: '80'}",
            "alerts: {disk_percent: 90, disk_critical_percent: 85}",
            "alerts: {backup_max_age: 26}",
            "alerts: {backup_max_age: 26x}",
            "alerts: {backup_max_age: 0h}",
            "alerts: [80]",
            "schedule: {at: '3:15'}",
            "schedule: {at: '24:00'}",
            "schedule: {drill: daily}",
            "retention: {keep_yearly: 1}",
        ] {
            let e = ops(bad).map(drop).unwrap_err();
            let text = format!("{e:#}");
            assert!(text.starts_with("x-xtask."), "{bad}: {text}");
        }
        let e = format!("{:#}", ops("alerts: {disk_precent: 70}").unwrap_err());
        assert!(e.contains("disk_precent") && e.contains("disk_percent"), "names the typo and the known keys: {e}");
    }

    #[test]
    fn notify_urls_are_http_and_one_safe_line() {
        let o = ops("notify: https://hc-ping.com/abc").unwrap();
        assert_eq!(o.notify[0].url, "https://hc-ping.com/abc");
        let o = ops("notify: ['http://127.0.0.1:9/x?token=1', 'https://u:p@h/w']").unwrap();
        assert_eq!(o.notify.len(), 2);
        for bad in [
            "notify: ftp://h/x",
            "notify: 'https://h/x\"\\nurl = \"file:///etc/passwd'",
            "notify: 'https://h/a b'",
            "notify: 'https:///x'",
            "notify: 'file:///etc/passwd'",
            "notify: [1]",
            "notify: {url: x}",
            "notify: 7",
        ] {
            assert!(ops(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_drill_check_is_a_list_of_words_in_a_named_service() {
        let o = ops("drill: {service: db, check: [psql, -U, app, -c, 'SELECT 1']}").unwrap();
        let want = DrillCheck {
            service: "db".into(),
            check: ["psql", "-U", "app", "-c", "SELECT 1"].map(String::from).to_vec(),
        };
        assert_eq!(o.drill, Some(want));
        assert_eq!(ops("remotes: {}").unwrap().drill, None);
        for bad in [
            "drill: {service: db, check: 'psql -c 1'}",
            "drill: {service: db, check: []}",
            "drill: {service: db, check: [psql, 1]}",
            "drill: {service: db}",
            "drill: {check: [true]}",
            "drill: {service: '-x', check: [true]}",
            "drill: {service: db, check: [true], shell: yes}",
            "drill: [db]",
        ] {
            let e = format!("{:#}", ops(bad).map(drop).unwrap_err());
            assert!(e.starts_with("x-xtask.drill"), "{bad}: {e}");
        }
    }

    #[test]
    fn retention_overrides_each_count() {
        let o = ops("retention: {keep_daily: 14, keep_monthly: 12}").unwrap();
        assert_eq!(o.retention, Keep { last: 3, daily: 14, weekly: 4, monthly: 12 });
    }
}

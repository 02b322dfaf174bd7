//! What retention keeps, in the manner of restic's `forget --keep-*`: the last N archives, one
//! per day, ISO week and month for the newest N of each, and always the newest verified one.
//! Pure: the local and the remote prune both apply it to the archives they could authenticate.

use std::collections::BTreeSet;

use time::OffsetDateTime;

/// How many archives to keep, like restic's `forget --keep-*`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

/// For each archive (newest first, one kind): keep it, and why.
pub fn decide(archives: &[(OffsetDateTime, bool)], r: &Retention) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); archives.len()];
    for (i, why) in reasons.iter_mut().enumerate().take(r.last) {
        why.push(format!("last {}", i + 1));
    }
    let mut bucket = |count: usize, label: &str, key: &dyn Fn(OffsetDateTime) -> String| {
        let mut seen = BTreeSet::new();
        for (i, (t, _)) in archives.iter().enumerate() {
            if seen.len() >= count {
                break;
            }
            let k = key(*t);
            if seen.insert(k.clone()) {
                reasons[i].push(format!("{label} {k}"));
            }
        }
    };
    bucket(r.daily, "daily", &|t| t.date().to_string());
    bucket(r.weekly, "weekly", &|t| {
        let (y, w, _) = t.date().to_iso_week_date();
        format!("{y}-W{w:02}")
    });
    bucket(r.monthly, "monthly", &|t| format!("{}-{:02}", t.year(), t.month() as u8));
    if let Some(i) = archives.iter().position(|(_, verified)| *verified) {
        reasons[i].push("newest verified archive".into());
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u8, month: u8, hour: u8) -> OffsetDateTime {
        let date = time::Date::from_calendar_date(2026, time::Month::try_from(month).unwrap(), day).unwrap();
        date.with_hms(hour, 0, 0).unwrap().assume_utc()
    }

    #[test]
    fn retention_keeps_last_daily_weekly_monthly_and_newest_verified() {
        // Newest first: two on Wed Nov 25, one each on Tue Nov 24 (same ISO week), Nov 10, Oct 5.
        let archives = [
            (at(25, 11, 12), false),
            (at(25, 11, 8), true),
            (at(24, 11, 8), false),
            (at(10, 11, 8), false),
            (at(5, 10, 8), false),
        ];
        let keep = |r: Retention| decide(&archives, &r).iter().map(|w| !w.is_empty()).collect::<Vec<_>>();
        let none = Retention { last: 0, daily: 0, weekly: 0, monthly: 0 };
        assert_eq!(keep(none), [false, true, false, false, false], "the newest verified one always stays");
        assert_eq!(keep(Retention { last: 2, ..none }), [true, true, false, false, false]);
        assert_eq!(keep(Retention { daily: 2, ..none }), [true, true, true, false, false]);
        assert_eq!(keep(Retention { weekly: 2, ..none }), [true, true, false, true, false]);
        assert_eq!(keep(Retention { monthly: 2, ..none }), [true, true, false, false, true]);
        let why = decide(&archives, &Retention { last: 1, daily: 1, weekly: 0, monthly: 0 });
        assert_eq!(why[0], ["last 1", "daily 2026-11-25"]);
        assert_eq!(why[1], ["newest verified archive"]);
    }
}

//! Cron evaluation in a job's time zone (saffron, standard 5-field syntax) — no I/O.
//!
//! A job is due at a UTC minute when that minute is the first firing time after the minute
//! before it. Local times are mapped to UTC like this: a local time that occurs twice (clocks go
//! back) fires once, at its first occurrence; a local time that does not exist (clocks go forward)
//! fires at the first minute after the gap, so a daily job is never lost to a DST change.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("cron expression {0:?} never fires")]
    Never(String),
    #[error("unknown time zone {0:?} (use an IANA name such as UTC or Europe/Berlin)")]
    TimeZone(String),
}

/// A parsed schedule; cheap to evaluate.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: saffron::Cron,
    tz: Tz,
}

/// Upper bound on firings skipped over while mapping local times back to UTC.
const SEARCH_LIMIT: usize = 1000;

/// The start of the minute that contains `t`.
pub fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

impl Schedule {
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Cron {
                expr: expr.to_owned(),
                reason: format!("expected 5 fields (minute hour day month weekday), found {fields}"),
            });
        }
        let cron = saffron::Cron::from_str(expr).map_err(|e| ScheduleError::Cron {
            expr: expr.to_owned(),
            reason: e.to_string(),
        })?;
        if !cron.any() {
            return Err(ScheduleError::Never(expr.to_owned()));
        }
        let tz = Tz::from_str(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
        Ok(Self { cron, tz })
    }

    /// A local wall-clock time, as saffron (which knows only UTC) sees it.
    fn local(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        Utc.from_utc_datetime(&t.with_timezone(&self.tz).naive_local())
    }

    /// The UTC instant of a local wall-clock time per the module's DST rules.
    fn to_utc(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let mut probe = local;
        for _ in 0..=24 * 60 {
            match self.tz.from_local_datetime(&probe) {
                LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
                LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
                LocalResult::None => probe += Duration::minutes(1),
            }
        }
        None
    }

    /// The first firing minute strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = minute_of(after);
        let mut cursor = self.local(after);
        for _ in 0..SEARCH_LIMIT {
            let candidate = self.cron.next_after(cursor)?;
            let utc = self.to_utc(candidate.naive_utc())?;
            if utc > after {
                return Some(utc);
            }
            cursor = candidate;
        }
        None
    }

    /// Whether the job fires at the UTC minute that contains `minute`.
    pub fn is_due(&self, minute: DateTime<Utc>) -> bool {
        let minute = minute_of(minute);
        self.next_after(minute - Duration::minutes(1)) == Some(minute)
    }

    /// The latest firing minute in `(from, to]`, if any.
    pub fn latest_due_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut latest = None;
        let mut cursor = from;
        while let Some(next) = self.next_after(cursor) {
            if next > to {
                break;
            }
            latest = Some(next);
            cursor = next;
        }
        latest
    }

    /// The gap between the next two firings after `now`: the job's interval, for overdue checks.
    pub fn interval_after(&self, now: DateTime<Utc>) -> Option<Duration> {
        let first = self.next_after(now)?;
        Some(self.next_after(first)? - first)
    }
}

/// Checks a schedule and a time zone as a job is written.
pub fn validate(expr: &str, timezone: &str) -> Result<(), ScheduleError> {
    Schedule::parse(expr, timezone).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("rfc3339").with_timezone(&Utc)
    }

    #[test]
    fn daily_at_two_utc() {
        let s = Schedule::parse("0 2 * * *", "UTC").expect("valid");
        assert!(s.is_due(at("2024-01-15T02:00:00Z")));
        assert!(s.is_due(at("2024-01-15T02:00:59Z")), "any instant inside the minute");
        assert!(!s.is_due(at("2024-01-15T02:01:00Z")));
        assert!(!s.is_due(at("2024-01-15T01:59:00Z")));
        assert_eq!(s.next_after(at("2024-01-15T02:00:00Z")), Some(at("2024-01-16T02:00:00Z")));
        assert_eq!(s.interval_after(at("2024-01-15T00:00:00Z")), Some(Duration::days(1)));
    }

    #[test]
    fn every_minute_is_due_every_minute() {
        let s = Schedule::parse("* * * * *", "UTC").expect("valid");
        let start = at("2024-03-01T00:00:00Z");
        assert!((0..180).all(|m| s.is_due(start + Duration::minutes(m))));
    }

    #[test]
    fn time_zones_shift_the_firing() {
        let s = Schedule::parse("0 2 * * *", "Europe/Berlin").expect("valid");
        assert!(s.is_due(at("2024-01-15T01:00:00Z")), "02:00 CET = 01:00 UTC");
        assert!(s.is_due(at("2024-07-15T00:00:00Z")), "02:00 CEST = 00:00 UTC");
        assert!(!s.is_due(at("2024-01-15T02:00:00Z")));
    }

    #[test]
    fn a_time_skipped_by_dst_fires_after_the_gap() {
        // 2024-03-31: Berlin jumps from 02:00 to 03:00 (01:00 UTC).
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        assert_eq!(s.next_after(at("2024-03-30T12:00:00Z")), Some(at("2024-03-31T01:00:00Z")));
        assert!(s.is_due(at("2024-03-31T01:00:00Z")));
        assert_eq!(
            s.latest_due_between(at("2024-03-30T12:00:00Z"), at("2024-03-31T12:00:00Z")),
            Some(at("2024-03-31T01:00:00Z"))
        );
    }

    #[test]
    fn a_time_repeated_by_dst_fires_once() {
        // 2024-10-27: Berlin goes back from 03:00 to 02:00; 02:30 local happens twice.
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        let day = at("2024-10-27T00:00:00Z");
        let firings: Vec<_> = (0..24 * 60)
            .map(|m| day + Duration::minutes(m))
            .filter(|m| s.is_due(*m))
            .collect();
        assert_eq!(firings, vec![at("2024-10-27T00:30:00Z")]);
    }

    #[test]
    fn catch_up_after_a_gap_finds_the_latest_due_minute_once() {
        let s = Schedule::parse("*/5 * * * *", "UTC").expect("valid");
        let last = at("2024-05-01T10:00:00Z");
        let now = at("2024-05-01T10:10:00Z");
        assert_eq!(s.latest_due_between(last, now), Some(at("2024-05-01T10:10:00Z")));
        assert_eq!(s.latest_due_between(now, now), None, "a late tick in the same minute");
        let hourly = Schedule::parse("0 * * * *", "UTC").expect("valid");
        assert_eq!(hourly.latest_due_between(last, now), None);
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(Schedule::parse("0 2 * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::parse("61 2 * * *", "UTC"), Err(ScheduleError::Cron { .. })));
        assert!(matches!(Schedule::parse("0 2 * * *", "Mars/Olympus"), Err(ScheduleError::TimeZone(_))));
        assert!(matches!(Schedule::parse("0 0 30 2 *", "UTC"), Err(ScheduleError::Never(_))));
    }
}

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
                reason: format!(
                    "expected 5 fields (minute hour day month weekday), found {fields}"
                ),
            });
        }
        let bad = |reason: String| ScheduleError::Cron {
            expr: expr.to_owned(),
            reason,
        };
        let mut parts: Vec<String> = expr.split_whitespace().map(str::to_owned).collect();
        parts[4] = weekdays_for_saffron(&parts[4]).map_err(bad)?;
        let cron = saffron::Cron::from_str(&parts.join(" ")).map_err(|e| bad(e.to_string()))?;
        if !cron.any() {
            return Err(ScheduleError::Never(expr.to_owned()));
        }
        let tz =
            Tz::from_str(timezone).map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
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
    pub fn latest_due_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
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

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A day-of-week value in standard cron numbering (0–7, 0 and 7 = Sunday) or a name; 0–6.
fn weekday_number(token: &str) -> Result<usize, String> {
    if let Some(i) = DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(token)) {
        return Ok(i);
    }
    match token.parse::<usize>() {
        Ok(n @ 0..=7) => Ok(n % 7),
        _ => Err(format!("day of week {token:?} is not 0-7 or SUN-SAT")),
    }
}

/// Rewrites the day-of-week field from standard cron numbering (0 or 7 = Sunday, 1 = Monday, as
/// in crontab(5)) into saffron's (1 = Sunday … 7 = Saturday), so that `1-5` means Monday to
/// Friday as users expect.
fn weekdays_for_saffron(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_owned());
    }
    // saffron's own extensions on one day: `5L` (last Friday), `1#2` (second Monday).
    if let Some(day) = field.strip_suffix(['L', 'l']) {
        return Ok(format!("{}L", weekday_number(day)? + 1));
    }
    if let Some((day, nth)) = field.split_once('#') {
        return Ok(format!("{}#{nth}", weekday_number(day)? + 1));
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step 0 in {part:?}"));
        }
        let (first, last) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => {
                    // 7 as an upper bound is Sunday at the end of the week.
                    let b = if b == "7" { 7 } else { weekday_number(b)? };
                    (weekday_number(a)?, b)
                }
                None if part.contains('/') => (weekday_number(range)?, 6),
                None => {
                    let d = weekday_number(range)?;
                    (d, d)
                }
            },
        };
        if first > last {
            return Err(format!("range {range:?} runs backwards"));
        }
        for d in (first..=last).step_by(step) {
            days[d % 7] = true;
        }
    }
    Ok(DAY_NAMES
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

/// Checks a schedule and a time zone as a job is written.
pub fn validate(expr: &str, timezone: &str) -> Result<(), ScheduleError> {
    Schedule::parse(expr, timezone).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn daily_at_two_utc() {
        let s = Schedule::parse("0 2 * * *", "UTC").expect("valid");
        assert!(s.is_due(at("2024-01-15T02:00:00Z")));
        assert!(
            s.is_due(at("2024-01-15T02:00:59Z")),
            "any instant inside the minute"
        );
        assert!(!s.is_due(at("2024-01-15T02:01:00Z")));
        assert!(!s.is_due(at("2024-01-15T01:59:00Z")));
        assert_eq!(
            s.next_after(at("2024-01-15T02:00:00Z")),
            Some(at("2024-01-16T02:00:00Z"))
        );
        assert_eq!(
            s.interval_after(at("2024-01-15T00:00:00Z")),
            Some(Duration::days(1))
        );
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
        assert!(
            s.is_due(at("2024-01-15T01:00:00Z")),
            "02:00 CET = 01:00 UTC"
        );
        assert!(
            s.is_due(at("2024-07-15T00:00:00Z")),
            "02:00 CEST = 00:00 UTC"
        );
        assert!(!s.is_due(at("2024-01-15T02:00:00Z")));
    }

    #[test]
    fn a_time_skipped_by_dst_fires_after_the_gap() {
        // 2024-03-31: Berlin jumps from 02:00 to 03:00 (01:00 UTC).
        let s = Schedule::parse("30 2 * * *", "Europe/Berlin").expect("valid");
        assert_eq!(
            s.next_after(at("2024-03-30T12:00:00Z")),
            Some(at("2024-03-31T01:00:00Z"))
        );
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
        assert_eq!(
            s.latest_due_between(last, now),
            Some(at("2024-05-01T10:10:00Z"))
        );
        assert_eq!(
            s.latest_due_between(now, now),
            None,
            "a late tick in the same minute"
        );
        let hourly = Schedule::parse("0 * * * *", "UTC").expect("valid");
        assert_eq!(hourly.latest_due_between(last, now), None);
    }

    #[test]
    fn days_of_week_use_standard_cron_numbering() {
        // 2024-01-15 is a Monday.
        let weekdays = Schedule::parse("0 2 * * 1-5", "UTC").expect("valid");
        let days: Vec<bool> = (0..7)
            .map(|d| weekdays.is_due(at("2024-01-15T02:00:00Z") + Duration::days(d)))
            .collect();
        assert_eq!(
            days,
            [true, true, true, true, true, false, false],
            "Monday to Friday"
        );
        for sunday in ["0", "7", "SUN", "sun", "6-7"] {
            let s = Schedule::parse(&format!("0 2 * * {sunday}"), "UTC").expect("valid");
            assert!(
                s.is_due(at("2024-01-21T02:00:00Z")),
                "{sunday} includes Sunday"
            );
        }
        let alternate = Schedule::parse("0 2 * * 1-5/2", "UTC").expect("valid");
        assert!(alternate.is_due(at("2024-01-17T02:00:00Z")), "Wednesday");
        assert!(!alternate.is_due(at("2024-01-16T02:00:00Z")), "not Tuesday");
        assert_eq!(weekdays_for_saffron("5L"), Ok("6L".to_owned()));
        assert!(Schedule::parse("0 2 * * 8", "UTC").is_err());
        assert!(Schedule::parse("0 2 * * 5-1", "UTC").is_err());
    }

    #[test]
    fn bad_input_is_named() {
        assert!(matches!(
            Schedule::parse("0 2 * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("61 2 * * *", "UTC"),
            Err(ScheduleError::Cron { .. })
        ));
        assert!(matches!(
            Schedule::parse("0 2 * * *", "Mars/Olympus"),
            Err(ScheduleError::TimeZone(_))
        ));
        assert!(matches!(
            Schedule::parse("0 0 30 2 *", "UTC"),
            Err(ScheduleError::Never(_))
        ));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const ZONES: [&str; 5] = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Sydney",
            "Asia/Kolkata",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// next_after is strictly later, due, and nothing in between is due.
            #[test]
            fn next_after_is_the_first_due_minute(
                minute in 0u32..60, step in 1u32..30, hour in 0u32..24,
                zone in 0usize..5, start in 1_700_000_000i64..1_800_000_000,
            ) {
                let exprs = [format!("{minute} * * * *"), format!("*/{step} * * * *"), format!("{minute} {hour} * * *")];
                let t = DateTime::from_timestamp(start, 0).expect("valid");
                for expr in &exprs {
                    let s = Schedule::parse(expr, ZONES[zone]).expect("valid");
                    let next = s.next_after(t).expect("fires");
                    prop_assert!(next > t);
                    prop_assert!(s.is_due(next), "{} not due at {}", expr, next);
                    if next - t <= Duration::hours(3) {
                        let mut m = minute_of(t) + Duration::minutes(1);
                        while m < next {
                            prop_assert!(!s.is_due(m), "{} due at {} before {}", expr, m, next);
                            m += Duration::minutes(1);
                        }
                    }
                }
            }

            /// Catch-up over a span fires at most once, at the span's latest due minute.
            #[test]
            fn catch_up_picks_the_latest_due_minute(
                step in 1u32..20, gap in 0i64..120, zone in 0usize..5, start in 1_700_000_000i64..1_800_000_000,
            ) {
                let s = Schedule::parse(&format!("*/{step} * * * *"), ZONES[zone]).expect("valid");
                let from = minute_of(DateTime::from_timestamp(start, 0).expect("valid"));
                let to = from + Duration::minutes(gap);
                let latest = s.latest_due_between(from, to);
                let due: Vec<_> = (1..=gap).map(|m| from + Duration::minutes(m)).filter(|m| s.is_due(*m)).collect();
                prop_assert_eq!(latest, due.last().copied());
            }
        }
    }
}

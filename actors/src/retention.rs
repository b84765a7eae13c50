//! Retention: which backups of one series a policy keeps, and why. The meaning is exactly that of
//! `restic forget` (restic 0.17 and later), with periods computed in the job's time zone. Pure: no
//! I/O and no clock, so a dry run and a real prune share every decision.
//!
//! The walk, as restic does it: sort newest first; for each backup, each rule with slots left keeps
//! it when its period differs from the last period that rule kept (`keepLast`'s period is the
//! position, so it always differs), or when it is the oldest backup of the series. A kept backup
//! uses one slot of every rule that kept it. Rules are unioned. Periods with no backups cost
//! nothing. Hours, days, months and years are the local wall clock's (a repeated hour at the end
//! of summer time is one hour, as in restic); weeks are ISO weeks with the ISO year.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::model::RetentionPolicy;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionError {
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin)")]
    UnknownTimeZone(String),
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
pub fn parse_time_zone(name: &str) -> Result<Tz, RetentionError> {
    Tz::from_str(name.trim()).map_err(|_| RetentionError::UnknownTimeZone(name.to_owned()))
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    /// `keepAll`.
    All,
    /// No rule keeps a count above 0, so nothing is pruned (restic's "policy is empty").
    NoPolicy,
    /// A kept incremental backup needs it: it is an earlier backup of the same chain.
    Ancestor,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Last => "last",
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
            Self::All => "all",
            Self::NoPolicy => "no-policy",
            Self::Ancestor => "ancestor",
        }
    }
}

/// One backup of a series: whatever identifies it to the caller, and when it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<K> {
    pub id: K,
    pub time: DateTime<Utc>,
}

/// A kept backup and every rule that keeps it (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept<K> {
    pub id: K,
    pub time: DateTime<Utc>,
    pub reasons: Vec<Reason>,
}

/// The decision for a whole series; both lists newest first, together holding every candidate once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<K> {
    pub keep: Vec<Kept<K>>,
    pub prune: Vec<Candidate<K>>,
}

impl RetentionPolicy {
    /// The counted rules in restic's order, each with its count (unset is 0).
    pub fn rules(&self) -> [(Reason, u32); 6] {
        [
            (Reason::Last, self.keep_last.unwrap_or(0)),
            (Reason::Hourly, self.keep_hourly.unwrap_or(0)),
            (Reason::Daily, self.keep_daily.unwrap_or(0)),
            (Reason::Weekly, self.keep_weekly.unwrap_or(0)),
            (Reason::Monthly, self.keep_monthly.unwrap_or(0)),
            (Reason::Yearly, self.keep_yearly.unwrap_or(0)),
        ]
    }

    /// True when the policy can prune anything: not `keepAll`, and some rule counts above 0.
    pub fn prunes(&self) -> bool {
        !self.keep_all && self.rules().iter().any(|(_, n)| *n > 0)
    }

    /// The check a job write makes. All rules unset is valid (every backup is kept); rules that are
    /// set but all 0 are refused, as they read as "keep nothing" while restic would keep everything.
    pub fn validate(&self) -> Result<(), String> {
        let named = [
            ("keepLast", self.keep_last),
            ("keepHourly", self.keep_hourly),
            ("keepDaily", self.keep_daily),
            ("keepWeekly", self.keep_weekly),
            ("keepMonthly", self.keep_monthly),
            ("keepYearly", self.keep_yearly),
        ];
        if let Some((name, n)) = named
            .iter()
            .find(|(_, n)| n.is_some_and(|n| i32::try_from(n).is_err()))
        {
            return Err(format!(
                "{name} is {}, above the largest allowed value {}",
                n.unwrap_or_default(),
                i32::MAX
            ));
        }
        let set: Vec<u32> = named.iter().filter_map(|(_, n)| *n).collect();
        if !self.keep_all && !set.is_empty() && set.iter().all(|n| *n == 0) {
            return Err(
                "every keep value is 0, which would keep no backup: set at least one \
                        above 0, set keepAll, or leave them all unset to keep every backup"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// The period a rule buckets a backup into, as a number that differs between periods (restic's
/// encoding: YYYYMMDDHH, YYYYMMDD, YYYYWW, YYYYMM, YYYY; the position for `keepLast`).
fn period(rule: Reason, local: &DateTime<Tz>, position: usize) -> i64 {
    let (y, m, d, h) = (
        i64::from(local.year()),
        i64::from(local.month()),
        i64::from(local.day()),
        i64::from(local.hour()),
    );
    match rule {
        Reason::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
        Reason::Daily => (y * 100 + m) * 100 + d,
        Reason::Weekly => {
            let week = local.iso_week();
            i64::from(week.year()) * 100 + i64::from(week.week())
        }
        Reason::Monthly => y * 100 + m,
        Reason::Yearly => y,
        Reason::Last | Reason::All | Reason::NoPolicy | Reason::Ancestor => {
            i64::try_from(position).unwrap_or(i64::MAX)
        }
    }
}

/// Plans one series. The candidates may come in any order: they are sorted newest first, equal
/// times by id, so the same set always gives the same plan.
pub fn plan<K: Ord>(
    mut candidates: Vec<Candidate<K>>,
    policy: &RetentionPolicy,
    tz: Tz,
) -> Plan<K> {
    candidates.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
    if !policy.prunes() {
        let reason = if policy.keep_all {
            Reason::All
        } else {
            Reason::NoPolicy
        };
        let keep = candidates
            .into_iter()
            .map(|c| Kept {
                id: c.id,
                time: c.time,
                reasons: vec![reason],
            })
            .collect();
        return Plan {
            keep,
            prune: Vec::new(),
        };
    }
    let mut rules = policy
        .rules()
        .map(|(reason, left)| (reason, left, None::<i64>));
    let oldest = candidates.len().saturating_sub(1);
    let mut plan = Plan {
        keep: Vec::new(),
        prune: Vec::new(),
    };
    for (position, candidate) in candidates.into_iter().enumerate() {
        let local = candidate.time.with_timezone(&tz);
        let mut reasons = Vec::new();
        for (reason, left, last) in rules.iter_mut() {
            if *left == 0 {
                continue;
            }
            let value = period(*reason, &local, position);
            if *last != Some(value) || position == oldest {
                *last = Some(value);
                *left -= 1;
                reasons.push(*reason);
            }
        }
        if reasons.is_empty() {
            plan.prune.push(candidate);
        } else {
            plan.keep.push(Kept {
                id: candidate.id,
                time: candidate.time,
                reasons,
            });
        }
    }
    plan
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;

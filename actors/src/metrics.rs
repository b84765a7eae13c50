//! In-process metrics that no database row holds: the scheduler's tick duration, lock contention
//! and notification deliveries by outcome. Actors record through `engine.metrics()`; `GET /metrics`
//! renders them in the Prometheus text format next to the figures it reads from the database.
//!
//! Names (all prefixed `vardo_`):
//! - `scheduler_tick_duration_seconds` (histogram) — [`Metrics::record_tick`]
//! - `lock_attempts_total{lock, outcome="acquired|contended|error"}` — [`Metrics::record_lock`]
//! - `notification_deliveries_total{kind, outcome="delivered|retry|failed"}` —
//!   [`Metrics::record_delivery`]
//! - `scheduled_runs_skipped_total{reason="busy"}` — a due job not started because its previous
//!   run was still going — [`Metrics::record_skipped_run`]
//!
//! Counts are per process (they restart at zero), as Prometheus counters expect.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the tick histogram's buckets.
const TICK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The outcome of one attempt to take a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    Acquired,
    /// Someone else held it.
    Contended,
    Error,
}

impl LockOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acquired => "acquired",
            Self::Contended => "contended",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Default)]
struct TickHistogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

/// The registry; one per engine, shared by every actor.
#[derive(Debug, Default)]
pub struct Metrics {
    ticks: Mutex<TickHistogram>,
    locks: Mutex<BTreeMap<(String, &'static str), u64>>,
    deliveries: Mutex<BTreeMap<(String, String), u64>>,
    skipped_runs: Mutex<BTreeMap<&'static str, u64>>,
}

/// A poisoned lock only means another thread panicked while counting; the counts stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// One scheduler tick took `took`.
    pub fn record_tick(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut h = lock(&self.ticks);
        if h.buckets.is_empty() {
            h.buckets = vec![0; TICK_BUCKETS.len()];
        }
        for (i, bound) in TICK_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// One attempt to take a lock of the family `lock` (e.g. `backup`, `volume`).
    pub fn record_lock(&self, lock_name: &str, outcome: LockOutcome) {
        *lock(&self.locks)
            .entry((lock_name.to_owned(), outcome.as_str()))
            .or_default() += 1;
    }

    /// One delivery attempt of a notification on a channel of `kind` (email, webhook, slack),
    /// with `outcome` `delivered`, `retry` or `failed`.
    pub fn record_delivery(&self, kind: &str, outcome: &str) {
        *lock(&self.deliveries)
            .entry((kind.to_owned(), outcome.to_owned()))
            .or_default() += 1;
    }

    /// A due job's scheduled run was not started, for `reason` (`busy`: its previous run was
    /// still going).
    pub fn record_skipped_run(&self, reason: &'static str) {
        *lock(&self.skipped_runs).entry(reason).or_default() += 1;
    }

    /// Appends the registry in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        {
            let h = lock(&self.ticks);
            let name = "vardo_scheduler_tick_duration_seconds";
            let _ = writeln!(out, "# HELP {name} Time one scheduler tick took.");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (i, bound) in TICK_BUCKETS.iter().enumerate() {
                let n = h.buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum {}", h.sum);
            let _ = writeln!(out, "{name}_count {}", h.count);
        }
        let name = "vardo_lock_attempts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Attempts to take a distributed lock, by outcome (contended = held elsewhere)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((l, outcome), n) in lock(&self.locks).iter() {
            let _ = writeln!(
                out,
                "{name}{{lock=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(l)
            );
        }
        let name = "vardo_notification_deliveries_total";
        let _ = writeln!(
            out,
            "# HELP {name} Notification delivery attempts, by outcome."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((kind, outcome), n) in lock(&self.deliveries).iter() {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\",outcome=\"{}\"}} {n}",
                escape(kind),
                escape(outcome)
            );
        }
        let name = "vardo_scheduled_runs_skipped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Due scheduled runs not started, by reason (busy = the job's previous run was still going)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (reason, n) in lock(&self.skipped_runs).iter() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {n}");
        }
    }
}

/// A label value as the text format wants it.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::default();
        m.record_tick(Duration::from_millis(30));
        m.record_lock("backup", LockOutcome::Contended);
        m.record_lock("backup", LockOutcome::Contended);
        m.record_delivery("webhook", "delivered");
        m.record_skipped_run("busy");
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("vardo_scheduler_tick_duration_seconds_bucket{le=\"0.025\"} 0"));
        assert!(out.contains("vardo_scheduler_tick_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(out.contains("vardo_scheduler_tick_duration_seconds_count 1"));
        assert!(out.contains("vardo_lock_attempts_total{lock=\"backup\",outcome=\"contended\"} 2"));
        assert!(out.contains(
            "vardo_notification_deliveries_total{kind=\"webhook\",outcome=\"delivered\"} 1"
        ));
        assert!(out.contains("vardo_scheduled_runs_skipped_total{reason=\"busy\"} 1"));
    }
}

//! In-process metrics that no database row holds: the scheduler's tick duration, lock contention
//! and notification deliveries by outcome. Actors record through `engine.metrics()`; `GET /metrics`
//! renders them in the Prometheus text format (0.0.4) next to the figures it reads from the
//! database.
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
//!
//! The metrics are `prometheus-client` ones, registered once in the engine's [`Registry`]. Counters
//! are registered without their `_total` suffix and help texts without their final full stop: the
//! crate adds both when it encodes. The labelled families are wrapped in [`Described`], so their
//! `# HELP` and `# TYPE` lines are written before their first sample too, as they always were
//! (the crate leaves an empty family out).

use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
    MetricEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the tick histogram's buckets.
const TICK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The outcome of one attempt to take a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

impl EncodeLabelValue for LockOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LockLabels {
    lock: String,
    outcome: LockOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DeliveryLabels {
    kind: String,
    outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SkipLabels {
    reason: &'static str,
}

/// A metric that is encoded, `# HELP` and `# TYPE` lines included, even while it has no sample.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> std::fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// The engine's metrics; one per engine, shared by every actor. The handles below share their
/// values with the copies registered in `registry`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ticks: Histogram,
    locks: Family<LockLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    skipped_runs: Family<SkipLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let ticks = Histogram::new(TICK_BUCKETS.iter().copied());
        let locks = Family::<LockLabels, Counter>::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let skipped_runs = Family::<SkipLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "vardo_scheduler_tick_duration_seconds",
            "Time one scheduler tick took",
            ticks.clone(),
        );
        registry.register(
            "vardo_lock_attempts",
            "Attempts to take a distributed lock, by outcome (contended = held elsewhere)",
            Described(locks.clone()),
        );
        registry.register(
            "vardo_notification_deliveries",
            "Notification delivery attempts, by outcome",
            Described(deliveries.clone()),
        );
        registry.register(
            "vardo_scheduled_runs_skipped",
            "Due scheduled runs not started, by reason (busy = the job's previous run was still going)",
            Described(skipped_runs.clone()),
        );
        Self {
            registry,
            ticks,
            locks,
            deliveries,
            skipped_runs,
        }
    }
}

impl Metrics {
    /// One scheduler tick took `took`.
    pub fn record_tick(&self, took: Duration) {
        self.ticks.observe(took.as_secs_f64());
    }

    /// One attempt to take a lock of the family `lock` (e.g. `backup`, `volume`).
    pub fn record_lock(&self, lock_name: &str, outcome: LockOutcome) {
        self.locks
            .get_or_create(&LockLabels {
                lock: lock_name.to_owned(),
                outcome,
            })
            .inc();
    }

    /// One delivery attempt of a notification on a channel of `kind` (email, webhook, slack),
    /// with `outcome` `delivered`, `retry` or `failed`.
    pub fn record_delivery(&self, kind: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A due job's scheduled run was not started, for `reason` (`busy`: its previous run was
    /// still going).
    pub fn record_skipped_run(&self, reason: &'static str) {
        self.skipped_runs
            .get_or_create(&SkipLabels { reason })
            .inc();
    }

    /// Appends the metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_text::encode(out, &self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(m: &Metrics) -> String {
        let mut out = String::new();
        m.encode(&mut out).expect("encodes");
        out
    }

    #[test]
    fn renders_what_was_recorded() {
        let m = Metrics::default();
        m.record_tick(Duration::from_millis(30));
        m.record_lock("backup", LockOutcome::Contended);
        m.record_lock("backup", LockOutcome::Contended);
        m.record_lock("we\"ird\\", LockOutcome::Error);
        m.record_delivery("webhook", "delivered");
        m.record_skipped_run("busy");
        let out = encoded(&m);
        for line in [
            "vardo_scheduler_tick_duration_seconds_bucket{le=\"0.025\"} 0",
            "vardo_scheduler_tick_duration_seconds_bucket{le=\"0.05\"} 1",
            "vardo_scheduler_tick_duration_seconds_bucket{le=\"+Inf\"} 1",
            "vardo_scheduler_tick_duration_seconds_count 1",
            "vardo_lock_attempts_total{lock=\"backup\",outcome=\"contended\"} 2",
            "vardo_lock_attempts_total{lock=\"we\\\"ird\\\\\",outcome=\"error\"} 1",
            "vardo_notification_deliveries_total{kind=\"webhook\",outcome=\"delivered\"} 1",
            "vardo_scheduled_runs_skipped_total{reason=\"busy\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("# EOF"), "{out}");
    }

    #[test]
    fn every_metric_is_described_before_its_first_sample() {
        let out = encoded(&Metrics::default());
        for (name, kind, help) in [
            (
                "vardo_scheduler_tick_duration_seconds",
                "histogram",
                "Time one scheduler tick took.",
            ),
            (
                "vardo_lock_attempts_total",
                "counter",
                "Attempts to take a distributed lock, by outcome (contended = held elsewhere).",
            ),
            (
                "vardo_notification_deliveries_total",
                "counter",
                "Notification delivery attempts, by outcome.",
            ),
            (
                "vardo_scheduled_runs_skipped_total",
                "counter",
                "Due scheduled runs not started, by reason (busy = the job's previous run was still going).",
            ),
        ] {
            let described = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            assert!(out.contains(&described), "missing {described:?} in\n{out}");
        }
        assert!(out.contains("vardo_scheduler_tick_duration_seconds_count 0"));
    }
}

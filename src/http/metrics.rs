//! `GET /metrics`: Prometheus text (version 0.0.4). Figures that live in the database are read at
//! scrape time (so they are right whichever instance did the work); in-process counters come from
//! `engine.metrics()` (see `vardo_actors::metrics`). Needs the admin token when one is configured,
//! since the labels name every organization's jobs.
//!
//! From the database:
//! - `vardo_job_last_success_timestamp_seconds{job_id,organization_id}` (gauge)
//! - `vardo_backup_last_verified_timestamp_seconds{job_id,organization_id}` (gauge: a backup of
//!   the job last verified intact)
//! - `vardo_backup_drill_failures_total{job_id,organization_id}` (counter: failed drills of each
//!   job that was drilled)
//! - `vardo_backup_runs{status="running|success|failed"}` (gauge: runs by outcome)
//! - `vardo_backup_volumes{status}` (gauge: backup rows by status)
//! - `vardo_backup_uploaded_bytes_total` (counter: bytes of successful archives)
//! - `vardo_backup_volume_duration_seconds`, `vardo_backup_run_duration_seconds` (histograms)
//! - `vardo_restores{status}`, `vardo_notification_outbox{status}` (gauges)
//!
//! Both halves are encoded by `prometheus-client`. The database figures are a [`Collector`]
//! ([`DbFigures`]) over the [`Stats`] read for this scrape, registered in a fresh [`Registry`]
//! that lives as long as the scrape: the figures are a snapshot of rows, not values this process
//! accumulates, so nothing of them is kept between scrapes. A collector writes its own `# HELP`
//! and `# TYPE` lines, so every family is described even when it has no row, and its samples keep
//! the database's order. The engine's long-lived registry is encoded after it into the same body;
//! the 0.0.4 text format has no end marker, so the two concatenate into one valid exposition.

use actix_web::{get, web, HttpRequest, HttpResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use vardo_actors::store::{Histogram, Stats, DURATION_BUCKETS};

use super::auth;
use super::error::ApiError;
use super::State;

/// The figures `/metrics` reads from the database, as one scrape's collector.
#[derive(Debug)]
pub struct DbFigures(pub Stats);

fn gauge_by_status(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(String, i64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (status, n) in rows {
        ConstGauge::new(*n).encode(family.encode_family(&[("status", status.as_str())])?)?;
    }
    Ok(())
}

/// `h` counts cumulatively, as the database query does; the encoder wants each bucket's own count.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram,
) -> std::fmt::Result {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
        .iter()
        .zip(&h.buckets)
        .map(|(bound, &cumulative)| {
            let own = count(cumulative).saturating_sub(below);
            below = below.max(count(cumulative));
            (*bound, own)
        })
        .collect();
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum, count(h.count), &buckets, None)
}

/// One gauge sample per job: `(job, organization, time)` as Unix seconds.
fn job_times(
    family: &mut prometheus_client::encoding::MetricEncoder,
    rows: &[(uuid::Uuid, uuid::Uuid, chrono::DateTime<chrono::Utc>)],
) -> std::fmt::Result {
    for (job, org, at) in rows {
        let labels = [
            ("job_id", job.to_string()),
            ("organization_id", org.to_string()),
        ];
        let secs = at.timestamp_millis() as f64 / 1000.0;
        ConstGauge::new(secs).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for DbFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.0;
        let mut family = encoder.encode_descriptor(
            "vardo_job_last_success_timestamp_seconds",
            "When the job's latest successful backup finished (Unix time).",
            None,
            MetricType::Gauge,
        )?;
        job_times(&mut family, &stats.last_success)?;
        let mut family = encoder.encode_descriptor(
            "vardo_backup_last_verified_timestamp_seconds",
            "When a backup of the job was last verified intact (Unix time).",
            None,
            MetricType::Gauge,
        )?;
        job_times(&mut family, &stats.last_verified)?;
        let mut family = encoder.encode_descriptor(
            "vardo_backup_drill_failures",
            "Drills of the job that failed.",
            None,
            MetricType::Counter,
        )?;
        for (job, org, failed) in &stats.drill_failures {
            let labels = [
                ("job_id", job.to_string()),
                ("organization_id", org.to_string()),
            ];
            ConstCounter::new(u64::try_from(*failed).unwrap_or_default())
                .encode(family.encode_family(&labels)?)?;
        }
        gauge_by_status(
            &mut encoder,
            "vardo_backup_runs",
            "Backup runs by outcome.",
            &stats.runs_by_status,
        )?;
        gauge_by_status(
            &mut encoder,
            "vardo_backup_volumes",
            "Backup rows (one per volume and run) by status.",
            &stats.volumes_by_status,
        )?;
        // A counter's name is given without `_total`: the encoder appends it.
        ConstCounter::new(u64::try_from(stats.uploaded_bytes).unwrap_or(0)).encode(
            encoder.encode_descriptor(
                "vardo_backup_uploaded_bytes",
                "Bytes of archives uploaded by successful backups.",
                None,
                MetricType::Counter,
            )?,
        )?;
        histogram(
            &mut encoder,
            "vardo_backup_volume_duration_seconds",
            "Time to back up one volume (finished rows).",
            &stats.volume_durations,
        )?;
        histogram(
            &mut encoder,
            "vardo_backup_run_duration_seconds",
            "Time from a run's first start to its last finish (finished runs).",
            &stats.run_durations,
        )?;
        gauge_by_status(
            &mut encoder,
            "vardo_restores",
            "Restores by status.",
            &stats.restores_by_status,
        )?;
        gauge_by_status(
            &mut encoder,
            "vardo_notification_outbox",
            "Notification notices by delivery status.",
            &stats.notifications_by_status,
        )
    }
}

/// Appends the database figures of `stats` in the Prometheus text format (version 0.0.4).
pub fn encode(stats: Stats, out: &mut String) -> std::fmt::Result {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DbFigures(stats)));
    prometheus_text::encode(out, &registry)
}

#[get("/metrics")]
pub async fn metrics(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if let Some(admin) = &state.admin_token_hash {
        let token = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !token.is_some_and(|t| auth::same_secret(t, admin)) {
            return Err(ApiError::Unauthorized);
        }
    }
    let stats = state.engine.store().stats().await?;
    let mut out = String::new();
    encode(stats, &mut out)
        .and_then(|()| state.engine.metrics().encode(&mut out))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("encoding /metrics: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type(prometheus_text::CONTENT_TYPE)
        .body(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use uuid::Uuid;

    fn encoded(stats: Stats) -> String {
        let mut out = String::new();
        encode(stats, &mut out).expect("encodes");
        out
    }

    #[test]
    fn every_family_is_described_even_without_rows() {
        let out = encoded(Stats::default());
        for (name, kind, help) in [
            (
                "vardo_job_last_success_timestamp_seconds",
                "gauge",
                "When the job's latest successful backup finished (Unix time).",
            ),
            (
                "vardo_backup_last_verified_timestamp_seconds",
                "gauge",
                "When a backup of the job was last verified intact (Unix time).",
            ),
            (
                "vardo_backup_drill_failures_total",
                "counter",
                "Drills of the job that failed.",
            ),
            ("vardo_backup_runs", "gauge", "Backup runs by outcome."),
            (
                "vardo_backup_volumes",
                "gauge",
                "Backup rows (one per volume and run) by status.",
            ),
            (
                "vardo_backup_uploaded_bytes_total",
                "counter",
                "Bytes of archives uploaded by successful backups.",
            ),
            (
                "vardo_backup_volume_duration_seconds",
                "histogram",
                "Time to back up one volume (finished rows).",
            ),
            (
                "vardo_backup_run_duration_seconds",
                "histogram",
                "Time from a run's first start to its last finish (finished runs).",
            ),
            ("vardo_restores", "gauge", "Restores by status."),
            (
                "vardo_notification_outbox",
                "gauge",
                "Notification notices by delivery status.",
            ),
        ] {
            let described = format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
            assert!(out.contains(&described), "missing {described:?} in\n{out}");
        }
        assert!(!out.contains("# EOF"), "{out}");
    }

    #[test]
    fn renders_the_rows_read_from_the_database() {
        let (job, org) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let at = DateTime::from_timestamp_millis(1_767_000_000_123).expect("a time");
        let out = encoded(Stats {
            last_success: vec![(job, org, at)],
            last_verified: vec![(job, org, at)],
            runs_by_status: vec![("failed".into(), 1), ("success".into(), 3)],
            uploaded_bytes: 123_456_789,
            volume_durations: Histogram {
                buckets: vec![1, 3, 4, 5, 6, 6, 6, 6, 6, 6],
                count: 7,
                sum: 12345.5,
            },
            ..Stats::default()
        });
        let lines: Vec<&str> = out.lines().collect();
        for line in [
            format!(
                "vardo_job_last_success_timestamp_seconds{{job_id=\"{job}\",organization_id=\"{org}\"}} 1767000000.123"
            ),
            format!(
                "vardo_backup_last_verified_timestamp_seconds{{job_id=\"{job}\",organization_id=\"{org}\"}} 1767000000.123"
            ),
            "vardo_backup_runs{status=\"failed\"} 1".to_owned(),
            "vardo_backup_runs{status=\"success\"} 3".to_owned(),
            "vardo_backup_uploaded_bytes_total 123456789".to_owned(),
            // Cumulative, as read from the database.
            "vardo_backup_volume_duration_seconds_bucket{le=\"1\"} 1".to_owned(),
            "vardo_backup_volume_duration_seconds_bucket{le=\"5\"} 3".to_owned(),
            "vardo_backup_volume_duration_seconds_bucket{le=\"60\"} 6".to_owned(),
            "vardo_backup_volume_duration_seconds_bucket{le=\"10800\"} 6".to_owned(),
            "vardo_backup_volume_duration_seconds_bucket{le=\"+Inf\"} 7".to_owned(),
            "vardo_backup_volume_duration_seconds_sum 12345.5".to_owned(),
            "vardo_backup_volume_duration_seconds_count 7".to_owned(),
            "vardo_backup_run_duration_seconds_bucket{le=\"+Inf\"} 0".to_owned(),
        ] {
            assert!(lines.contains(&line.as_str()), "missing {line:?} in\n{out}");
        }
    }
}

//! `GET /metrics`: Prometheus text. Figures that live in the database are read at scrape time
//! (so they are right whichever instance did the work); in-process counters come from
//! `engine.metrics()` (see `vardo_actors::metrics`). Needs the admin token when one is configured,
//! since the labels name every organization's jobs.
//!
//! From the database:
//! - `vardo_job_last_success_timestamp_seconds{job_id,organization_id}` (gauge)
//! - `vardo_backup_runs{status="running|success|failed"}` (gauge: runs by outcome)
//! - `vardo_backup_volumes{status}` (gauge: backup rows by status)
//! - `vardo_backup_uploaded_bytes_total` (counter: bytes of successful archives)
//! - `vardo_backup_volume_duration_seconds`, `vardo_backup_run_duration_seconds` (histograms)
//! - `vardo_restores{status}`, `vardo_notification_outbox{status}` (gauges)

use std::fmt::Write as _;

use actix_web::{get, web, HttpRequest, HttpResponse};
use vardo_actors::metrics::escape;
use vardo_actors::store::{Histogram, Stats, DURATION_BUCKETS};

use super::auth;
use super::error::ApiError;
use super::State;

fn gauge_by_status(out: &mut String, name: &str, help: &str, rows: &[(String, i64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (status, n) in rows {
        let _ = writeln!(out, "{name}{{status=\"{}\"}} {n}", escape(status));
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, n) in DURATION_BUCKETS.iter().zip(&h.buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

pub fn render(stats: &Stats, out: &mut String) {
    let name = "vardo_job_last_success_timestamp_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} When the job's latest successful backup finished (Unix time)."
    );
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (job, org, at) in &stats.last_success {
        let secs = at.timestamp_millis() as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{name}{{job_id=\"{job}\",organization_id=\"{org}\"}} {secs}"
        );
    }
    gauge_by_status(
        out,
        "vardo_backup_runs",
        "Backup runs by outcome.",
        &stats.runs_by_status,
    );
    gauge_by_status(
        out,
        "vardo_backup_volumes",
        "Backup rows (one per volume and run) by status.",
        &stats.volumes_by_status,
    );
    let name = "vardo_backup_uploaded_bytes_total";
    let _ = writeln!(
        out,
        "# HELP {name} Bytes of archives uploaded by successful backups."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", stats.uploaded_bytes);
    histogram(
        out,
        "vardo_backup_volume_duration_seconds",
        "Time to back up one volume (finished rows).",
        &stats.volume_durations,
    );
    histogram(
        out,
        "vardo_backup_run_duration_seconds",
        "Time from a run's first start to its last finish (finished runs).",
        &stats.run_durations,
    );
    gauge_by_status(
        out,
        "vardo_restores",
        "Restores by status.",
        &stats.restores_by_status,
    );
    gauge_by_status(
        out,
        "vardo_notification_outbox",
        "Notification notices by delivery status.",
        &stats.notifications_by_status,
    );
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
    render(&stats, &mut out);
    state.engine.metrics().render(&mut out);
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out))
}

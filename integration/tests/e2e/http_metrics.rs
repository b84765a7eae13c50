//! `GET /metrics`: Prometheus text with the figures read from the database at scrape time (last
//! success per job, runs and volumes by status, bytes uploaded, duration histograms) and the
//! in-process counters; the admin token is required.

use vardo_integration::http::{Api, ApiBed};

#[tokio::test]
async fn metrics_show_the_runs_in_the_database() {
    let t = ApiBed::start("web").await;
    let org = t.org("met").await;
    let done = t.backed_up(&org, "met", "s3").await;
    let r = t.admin.get("/metrics").await.expect(200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.headers
    );
    let text = r.text;
    let size = done.rows[0].size_bytes.expect("size");
    for line in [
        format!("vardo_backup_uploaded_bytes_total {size}"),
        "vardo_backup_runs{status=\"success\"} 1".to_owned(),
        "vardo_backup_volumes{status=\"success\"} 1".to_owned(),
        "vardo_backup_volume_duration_seconds_count 1".to_owned(),
        "vardo_backup_run_duration_seconds_count 1".to_owned(),
        "vardo_backup_volume_duration_seconds_bucket{le=\"+Inf\"} 1".to_owned(),
        "# TYPE vardo_scheduler_tick_duration_seconds histogram".to_owned(),
        "# TYPE vardo_lock_attempts_total counter".to_owned(),
        "# TYPE vardo_notification_deliveries_total counter".to_owned(),
        "# TYPE vardo_scheduled_runs_skipped_total counter".to_owned(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    let last = text
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "vardo_job_last_success_timestamp_seconds{{job_id=\"{}\"",
                done.job
            ))
        })
        .unwrap_or_else(|| panic!("no last-success line in\n{text}"));
    let ts: f64 = last
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    let finished = done.rows[0]
        .finished_at
        .expect("finished")
        .timestamp_millis() as f64
        / 1000.0;
    assert!((ts - finished).abs() < 0.01, "{ts} vs {finished}");

    // Prometheus text 0.0.4 (not OpenMetrics): no end marker. Every sample line parses as
    // `name{labels} value`.
    assert!(!text.contains("# EOF"), "{text}");
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = l.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
    // Organization tokens and anonymous callers are refused.
    org.api.get("/metrics").await.expect(401);
    Api::new(&t.server.base_url, None)
        .get("/metrics")
        .await
        .expect(401);
    t.cleanup().await;
}

//! What `/metrics` reads from the database at scrape time: figures that live in rows (last success
//! per job, runs and volumes by status, bytes uploaded, durations), so they are right whichever
//! instance did the work.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// Upper bounds (seconds) of the duration histograms' buckets.
pub const DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0,
];

/// A cumulative histogram: `buckets[i]` counts the observations `<= DURATION_BUCKETS[i]`.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    pub buckets: Vec<i64>,
    pub count: i64,
    pub sum: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// (job id, organization id, finished_at of the job's latest successful volume).
    pub last_success: Vec<(Uuid, Uuid, DateTime<Utc>)>,
    /// (job id, organization id, when a backup of the job last verified `ok`).
    pub last_verified: Vec<(Uuid, Uuid, DateTime<Utc>)>,
    /// (job id, organization id, failed drills) for every job that was drilled.
    pub drill_failures: Vec<(Uuid, Uuid, i64)>,
    /// Backup rows (one per volume and run) by status.
    pub volumes_by_status: Vec<(String, i64)>,
    /// Runs by outcome: `running` while a row is unfinished, else `failed` if any row failed,
    /// else `success`.
    pub runs_by_status: Vec<(String, i64)>,
    pub uploaded_bytes: i64,
    pub volume_durations: Histogram,
    pub run_durations: Histogram,
    pub restores_by_status: Vec<(String, i64)>,
    pub notifications_by_status: Vec<(String, i64)>,
}

/// `SELECT count(*) FILTER (WHERE d <= b1), …, count(*), sum(d) FROM (<durations>) x`.
fn histogram_sql(durations: &str) -> String {
    let filters: Vec<String> = DURATION_BUCKETS
        .iter()
        .map(|b| format!("count(*) FILTER (WHERE d <= {b:?})"))
        .collect();
    format!(
        "SELECT {}, count(*), COALESCE(sum(d), 0)::float8 FROM ({durations}) x",
        filters.join(", ")
    )
}

async fn histogram(
    client: &deadpool_postgres::Client,
    durations: &str,
) -> Result<Histogram, StoreError> {
    let row = client.query_one(&histogram_sql(durations), &[]).await?;
    let n = DURATION_BUCKETS.len();
    Ok(Histogram {
        buckets: (0..n).map(|i| row.get::<_, i64>(i)).collect(),
        count: row.get(n),
        sum: row.get(n + 1),
    })
}

async fn by_status(
    client: &deadpool_postgres::Client,
    sql: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

impl Store {
    #[tracing::instrument(skip(self))]
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let client = self.pool().get().await?;
        let last_success = client
            .query(
                "SELECT j.id, j.organization_id, max(b.finished_at)
                 FROM backup_job j JOIN backup b ON b.job_id = j.id
                 WHERE b.status IN ('success', 'pruned') AND b.finished_at IS NOT NULL
                   AND b.reason <> 'pre-restore'
                 GROUP BY j.id, j.organization_id ORDER BY j.id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let last_verified = client
            .query(
                "SELECT j.id, j.organization_id, max(b.verified_at)
                 FROM backup_job j JOIN backup b ON b.job_id = j.id
                 WHERE b.verify_outcome = 'ok' AND b.verified_at IS NOT NULL
                   AND b.reason <> 'pre-restore'
                 GROUP BY j.id, j.organization_id ORDER BY j.id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let drill_failures = client
            .query(
                "SELECT j.id, j.organization_id, count(*) FILTER (WHERE d.status = 'failed')
                 FROM backup_job j JOIN drill d ON d.job_id = j.id
                 GROUP BY j.id, j.organization_id ORDER BY j.id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let volumes_by_status = by_status(
            &client,
            "SELECT status, count(*) FROM backup GROUP BY status ORDER BY status",
        )
        .await?;
        let runs_by_status = by_status(
            &client,
            "SELECT outcome, count(*) FROM (
                SELECT CASE WHEN bool_or(status IN ('pending', 'running')) THEN 'running'
                            WHEN bool_or(status = 'failed') THEN 'failed'
                            ELSE 'success' END AS outcome
                FROM backup GROUP BY run_id) r
             GROUP BY outcome ORDER BY outcome",
        )
        .await?;
        let uploaded_bytes: i64 = client
            .query_one(
                "SELECT COALESCE(sum(size_bytes), 0)::bigint FROM backup
                 WHERE status IN ('success', 'pruned')",
                &[],
            )
            .await?
            .get(0);
        let volume_durations = histogram(
            &client,
            "SELECT extract(epoch FROM finished_at - started_at)::float8 AS d FROM backup
             WHERE started_at IS NOT NULL AND finished_at IS NOT NULL
               AND status IN ('success', 'failed', 'pruned')",
        )
        .await?;
        let run_durations = histogram(
            &client,
            "SELECT extract(epoch FROM max(finished_at) - min(COALESCE(started_at, created_at)))::float8 AS d
             FROM backup GROUP BY run_id
             HAVING NOT bool_or(status IN ('pending', 'running')) AND max(finished_at) IS NOT NULL",
        )
        .await?;
        let restores_by_status = by_status(
            &client,
            "SELECT status, count(*) FROM restore GROUP BY status ORDER BY status",
        )
        .await?;
        let notifications_by_status = by_status(
            &client,
            "SELECT status, count(*) FROM notification_outbox GROUP BY status ORDER BY status",
        )
        .await?;
        Ok(Stats {
            last_success,
            last_verified,
            drill_failures,
            volumes_by_status,
            runs_by_status,
            uploaded_bytes,
            volume_durations,
            run_durations,
            restores_by_status,
            notifications_by_status,
        })
    }
}

//! What the Backups page's overview shows about each job: its newest run and how it went, its
//! newest success (and that run's size), its outcome per day, and the volumes no enabled job
//! backs up. Safety backups taken before restores (`pre-restore`) are not a job's runs.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Store, StoreError};

/// The newest run of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    pub run_id: Uuid,
    /// `running` (a row is pending or running), `failed` (a row failed) or `success`.
    pub outcome: &'static str,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job's newest successful backup: when it finished and the size of that run's archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSuccess {
    pub finished_at: DateTime<Utc>,
    pub size_bytes: i64,
}

/// How a job's runs went on one day (in the job's time zone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOutcome {
    pub job_id: Uuid,
    pub day: NaiveDate,
    pub failed: bool,
    pub succeeded: bool,
}

/// A volume of an app that no enabled job backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprotected {
    pub app_id: String,
    pub app_name: String,
    pub volume_name: String,
}

impl Store {
    /// The newest run of each of the organization's jobs that ran.
    #[tracing::instrument(skip(self))]
    pub async fn last_runs(
        &self,
        organization_id: Uuid,
    ) -> Result<Vec<(Uuid, LastRun)>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "WITH last AS (
                    SELECT DISTINCT ON (job_id) job_id, run_id FROM backup
                    WHERE organization_id = $1 AND job_id IS NOT NULL AND reason <> 'pre-restore'
                    ORDER BY job_id, created_at DESC, id DESC)
                 SELECT l.job_id, l.run_id,
                        bool_or(b.status IN ('pending', 'running')),
                        bool_or(b.status = 'failed'),
                        min(coalesce(b.started_at, b.created_at)),
                        max(b.finished_at)
                 FROM last l JOIN backup b ON b.run_id = l.run_id
                 GROUP BY l.job_id, l.run_id",
                &[&organization_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let outcome = if r.get::<_, bool>(2) {
                    "running"
                } else if r.get::<_, bool>(3) {
                    "failed"
                } else {
                    "success"
                };
                (
                    r.get(0),
                    LastRun {
                        run_id: r.get(1),
                        outcome,
                        started_at: r.get(4),
                        finished_at: r.get(5),
                    },
                )
            })
            .collect())
    }

    /// The newest successful backup of each of the organization's jobs.
    #[tracing::instrument(skip(self))]
    pub async fn last_successes(
        &self,
        organization_id: Uuid,
    ) -> Result<Vec<(Uuid, LastSuccess)>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "WITH s AS (
                    SELECT DISTINCT ON (job_id) job_id, run_id, finished_at FROM backup
                    WHERE organization_id = $1 AND job_id IS NOT NULL AND status = 'success'
                      AND reason <> 'pre-restore' AND finished_at IS NOT NULL
                    ORDER BY job_id, finished_at DESC)
                 SELECT s.job_id, s.finished_at,
                        (SELECT coalesce(sum(size_bytes), 0)::bigint FROM backup b
                         WHERE b.run_id = s.run_id AND b.status = 'success')
                 FROM s",
                &[&organization_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    LastSuccess {
                        finished_at: r.get(1),
                        size_bytes: r.get(2),
                    },
                )
            })
            .collect())
    }

    /// Per job and day (in the job's time zone) since `since`: whether a backup failed and
    /// whether one succeeded (pruned ones had).
    #[tracing::instrument(skip(self))]
    pub async fn daily_outcomes(
        &self,
        organization_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<Vec<DayOutcome>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT b.job_id, (b.created_at AT TIME ZONE j.timezone)::date AS day,
                        bool_or(b.status = 'failed'), bool_or(b.status IN ('success', 'pruned'))
                 FROM backup b JOIN backup_job j ON j.id = b.job_id
                 WHERE b.organization_id = $1 AND b.created_at >= $2 AND b.reason <> 'pre-restore'
                 GROUP BY 1, 2",
                &[&organization_id, &since],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| DayOutcome {
                job_id: r.get(0),
                day: r.get(1),
                failed: r.get(2),
                succeeded: r.get(3),
            })
            .collect())
    }

    /// The persistent volumes of the organization's apps that no enabled job covers.
    #[tracing::instrument(skip(self))]
    pub async fn unprotected_volumes(
        &self,
        organization_id: Uuid,
    ) -> Result<Vec<Unprotected>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT a.id, a.name, v.name FROM app a JOIN volume v ON v.app_id = a.id
                 WHERE a.organization_id = $1 AND v.persistent
                   AND NOT EXISTS (SELECT 1 FROM backup_job_app ja
                                   JOIN backup_job j ON j.id = ja.job_id
                                   WHERE ja.app_id = a.id AND j.enabled)
                 ORDER BY a.name, v.name",
                &[&organization_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Unprotected {
                app_id: r.get(0),
                app_name: r.get(1),
                volume_name: r.get(2),
            })
            .collect())
    }

    /// The names of the organization's apps, by id.
    #[tracing::instrument(skip(self))]
    pub async fn app_names(
        &self,
        organization_id: Uuid,
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, name FROM app WHERE organization_id = $1",
                &[&organization_id],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

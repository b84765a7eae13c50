//! Table `run`: the record of a run that ended without any backup row, with its reason, so that
//! the history shows it; read by the control plane and by the notifier's sweep.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{RunFailure, RunFailureReason, RunRecord};

const COLUMNS: &str = "id, job_id, organization_id, reason, message, started_at, finished_at";

fn run_row(row: &Row) -> Result<RunRecord, StoreError> {
    let reason: String = row.get("reason");
    Ok(RunRecord {
        id: row.get("id"),
        job_id: row.get("job_id"),
        organization_id: row.get("organization_id"),
        reason: RunFailureReason::parse(&reason)
            .ok_or_else(|| StoreError::Corrupt(format!("run reason {reason}")))?,
        message: row.get("message"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    })
}

impl Store {
    /// Records that run `run_id` of `job_id` backed up nothing, and why; in the job's
    /// organization. False when the job does not exist (there is no organization to show it to)
    /// or the run is recorded already.
    #[tracing::instrument(skip(self, failure), fields(reason = failure.reason.as_str()))]
    pub async fn record_run_failure(
        &self,
        run_id: Uuid,
        job_id: Uuid,
        failure: &RunFailure,
        started_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let inserted = client
            .execute(
                "INSERT INTO run (id, job_id, organization_id, reason, message, started_at)
                 SELECT $1, j.id, j.organization_id, $3, $4, $5 FROM backup_job j WHERE j.id = $2
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &run_id,
                    &job_id,
                    &failure.reason.as_str(),
                    &failure.message,
                    &started_at,
                ],
            )
            .await?;
        Ok(inserted > 0)
    }

    /// The record of a run that backed up nothing; None for any other run.
    pub async fn run_record(&self, run_id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let client = self.pool().get().await?;
        client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM run WHERE id = $1"),
                &[&run_id],
            )
            .await?
            .as_ref()
            .map(run_row)
            .transpose()
    }

    /// An organization's runs that backed up nothing, newest first; `before` is the
    /// (finished_at, id) of the last record of the previous page.
    #[tracing::instrument(skip(self))]
    pub async fn list_runs(
        &self,
        organization_id: Uuid,
        job_id: Option<Uuid>,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let client = self.pool().get().await?;
        let (t, id) = before.unzip();
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM run
                     WHERE organization_id = $1
                       AND ($2::uuid IS NULL OR job_id = $2)
                       AND ($3::timestamptz IS NULL OR (finished_at, id) < ($3, $4))
                     ORDER BY finished_at DESC, id DESC LIMIT $5"
                ),
                &[&organization_id, &job_id, &t, &id, &limit],
            )
            .await?
            .iter()
            .map(run_row)
            .collect()
    }
}

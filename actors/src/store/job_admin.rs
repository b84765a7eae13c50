//! backup_job as the control plane administers it: list with the computed columns (apps, overdue,
//! timestamps), replace, delete (optionally with the history rows, whose archives the caller
//! deletes first), and the ownership checks that writes need.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::admin::PageAfter;
use super::jobs::as_i32;
use super::{NewJob, Store, StoreError};
use crate::model::Job;

/// A job with what the API shows besides the job itself.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub job: Job,
    pub app_ids: Vec<String>,
    pub overdue: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An archive a job's history points at.
#[derive(Debug, Clone)]
pub struct ArchiveRef {
    pub backup_id: Uuid,
    pub target_id: Option<Uuid>,
    pub storage_path: String,
}

const SELECT: &str = "SELECT j.id, j.organization_id, j.name, j.schedule, j.timezone, j.enabled,
        j.target_id, j.keep_all, j.keep_last, j.keep_hourly, j.keep_daily, j.keep_weekly,
        j.keep_monthly, j.keep_yearly, j.notify_on_success, j.notify_on_failure, j.compression,
        j.compression_level, j.last_run_at, j.drill_schedule, j.last_drill_at,
        j.last_drill_outcome, j.incremental_full_every, j.overdue_since IS NOT NULL AS overdue, j.created_at,
        j.updated_at,
        ARRAY(SELECT ja.app_id FROM backup_job_app ja WHERE ja.job_id = j.id ORDER BY ja.app_id)
            AS app_ids
    FROM backup_job j";

fn record(row: &Row) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        job: super::jobs::job_row(row)?,
        app_ids: row.get("app_ids"),
        overdue: row.get("overdue"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

impl Store {
    #[tracing::instrument(skip(self))]
    pub async fn job_record(&self, id: Uuid) -> Result<JobRecord, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(&format!("{SELECT} WHERE j.id = $1"), &[&id])
            .await?
            .ok_or(StoreError::NotFound {
                what: "job",
                id: id.to_string(),
            })?;
        record(&row)
    }

    /// An organization's jobs, oldest first, a page at a time.
    #[tracing::instrument(skip(self))]
    pub async fn list_job_records(
        &self,
        organization_id: Uuid,
        after: PageAfter,
        limit: i64,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let client = self.pool().get().await?;
        let (t, id) = after.unzip();
        let rows = client
            .query(
                &format!(
                    "{SELECT} WHERE j.organization_id = $1
                       AND ($2::timestamptz IS NULL OR (j.created_at, j.id) > ($2, $3))
                     ORDER BY j.created_at, j.id LIMIT $4"
                ),
                &[&organization_id, &t, &id, &limit],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// Replaces every field of a job and its app list, in one transaction.
    #[tracing::instrument(skip(self, job), fields(name = %job.name))]
    pub async fn update_job(&self, id: Uuid, job: &NewJob) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let r = &job.retention;
        let n = tx
            .execute(
                "UPDATE backup_job SET name = $3, schedule = $4, timezone = $5, enabled = $6,
                    target_id = $7, keep_all = $8, keep_last = $9, keep_hourly = $10,
                    keep_daily = $11, keep_weekly = $12, keep_monthly = $13, keep_yearly = $14,
                    notify_on_success = $15, notify_on_failure = $16, compression = $17,
                    compression_level = $18, drill_schedule = $19, incremental_full_every = $20,
                    updated_at = now()
                 WHERE id = $1 AND organization_id = $2",
                &[
                    &id,
                    &job.organization_id,
                    &job.name,
                    &job.schedule,
                    &job.timezone,
                    &job.enabled,
                    &job.target_id,
                    &r.keep_all,
                    &as_i32(r.keep_last),
                    &as_i32(r.keep_hourly),
                    &as_i32(r.keep_daily),
                    &as_i32(r.keep_weekly),
                    &as_i32(r.keep_monthly),
                    &as_i32(r.keep_yearly),
                    &job.notify_on_success,
                    &job.notify_on_failure,
                    &job.compression.as_str(),
                    &job.compression_level,
                    &job.drill_schedule,
                    &super::jobs::as_i32(job.incremental_full_every),
                ],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound {
                what: "job",
                id: id.to_string(),
            });
        }
        tx.execute("DELETE FROM backup_job_app WHERE job_id = $1", &[&id])
            .await?;
        for app_id in &job.app_ids {
            tx.execute(
                "INSERT INTO backup_job_app (job_id, app_id) VALUES ($1, $2)",
                &[&id, app_id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Enables or disables the organization's job; false when it has no such job.
    #[tracing::instrument(skip(self))]
    pub async fn set_job_enabled(
        &self,
        organization_id: Uuid,
        id: Uuid,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE backup_job SET enabled = $3, updated_at = now()
                 WHERE id = $1 AND organization_id = $2",
                &[&id, &organization_id, &enabled],
            )
            .await?;
        Ok(n == 1)
    }

    /// The archives (and the manifests of chains) a job's history rows point at (what `purge`
    /// deletes).
    #[tracing::instrument(skip(self))]
    pub async fn job_archives(&self, job_id: Uuid) -> Result<Vec<ArchiveRef>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, target_id, path FROM (
                   SELECT id, target_id, storage_path AS path, created_at FROM backup
                   WHERE job_id = $1 AND storage_path IS NOT NULL AND status <> 'pruned'
                   UNION ALL
                   SELECT id, target_id, manifest_path, created_at FROM backup
                   WHERE job_id = $1 AND manifest_path IS NOT NULL AND status <> 'pruned') objects
                 ORDER BY created_at, id, path",
                &[&job_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ArchiveRef {
                backup_id: r.get(0),
                target_id: r.get(1),
                storage_path: r.get(2),
            })
            .collect())
    }

    /// Deletes a job; with `purge` also its history rows (their restores go with them). Without
    /// it the rows stay, their `job_id` set to NULL, listable and restorable. Returns false when
    /// the organization has no such job.
    #[tracing::instrument(skip(self))]
    pub async fn delete_job(
        &self,
        organization_id: Uuid,
        id: Uuid,
        purge: bool,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        if purge {
            tx.execute(
                "DELETE FROM backup WHERE job_id = $1 AND organization_id = $2",
                &[&id, &organization_id],
            )
            .await?;
        }
        let n = tx
            .execute(
                "DELETE FROM backup_job WHERE id = $1 AND organization_id = $2",
                &[&id, &organization_id],
            )
            .await?;
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Which of `app_ids` are not apps of `organization_id`.
    #[tracing::instrument(skip(self))]
    pub async fn foreign_app_ids(
        &self,
        organization_id: Uuid,
        app_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool().get().await?;
        let known: Vec<String> = client
            .query(
                "SELECT id FROM app WHERE organization_id = $1 AND id = ANY($2)",
                &[&organization_id, &app_ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(app_ids
            .iter()
            .filter(|a| !known.contains(a))
            .cloned()
            .collect())
    }
}

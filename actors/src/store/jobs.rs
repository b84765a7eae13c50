//! backup_job and backup_job_app.

use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{App, Compression, Job, RetentionPolicy};

const COLUMNS: &str =
    "id, organization_id, name, schedule, timezone, enabled, target_id, keep_all, \
    keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, notify_on_success, \
    notify_on_failure, compression, compression_level, last_run_at, drill_schedule, last_drill_at, \
    last_drill_outcome, incremental_full_every";

fn keep(row: &Row, col: &str) -> Option<u32> {
    row.get::<_, Option<i32>>(col)
        .and_then(|v| u32::try_from(v).ok())
}

pub(super) fn job_row(row: &Row) -> Result<Job, StoreError> {
    let compression: String = row.get("compression");
    Ok(Job {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        name: row.get("name"),
        schedule: row.get("schedule"),
        timezone: row.get("timezone"),
        enabled: row.get("enabled"),
        target_id: row.get("target_id"),
        retention: RetentionPolicy {
            keep_all: row.get("keep_all"),
            keep_last: keep(row, "keep_last"),
            keep_hourly: keep(row, "keep_hourly"),
            keep_daily: keep(row, "keep_daily"),
            keep_weekly: keep(row, "keep_weekly"),
            keep_monthly: keep(row, "keep_monthly"),
            keep_yearly: keep(row, "keep_yearly"),
        },
        notify_on_success: row.get("notify_on_success"),
        notify_on_failure: row.get("notify_on_failure"),
        compression: Compression::parse(&compression)
            .ok_or_else(|| StoreError::Corrupt(format!("compression {compression}")))?,
        compression_level: row.get("compression_level"),
        last_run_at: row.get("last_run_at"),
        drill_schedule: row.get("drill_schedule"),
        last_drill_at: row.get("last_drill_at"),
        last_drill_outcome: row.get("last_drill_outcome"),
        incremental_full_every: keep(row, "incremental_full_every"),
    })
}

/// What a new job needs; the rest takes the schema's defaults.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub organization_id: Uuid,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub enabled: bool,
    pub target_id: Option<Uuid>,
    pub retention: RetentionPolicy,
    pub notify_on_success: bool,
    pub notify_on_failure: bool,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    /// When drills run; None: never.
    pub drill_schedule: Option<String>,
    /// See [`Job::incremental_full_every`].
    pub incremental_full_every: Option<u32>,
    pub app_ids: Vec<String>,
}

pub(super) fn as_i32(v: Option<u32>) -> Option<i32> {
    v.map(|n| i32::try_from(n).unwrap_or(i32::MAX))
}

impl Store {
    pub async fn insert_job(&self, job: &NewJob) -> Result<Uuid, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let r = &job.retention;
        let row = tx
            .query_one(
                "INSERT INTO backup_job (organization_id, name, schedule, timezone, enabled, target_id,
                    keep_all, keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly,
                    notify_on_success, notify_on_failure, compression, compression_level, drill_schedule,
                    incremental_full_every)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)
                 RETURNING id",
                &[
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
                    &as_i32(job.incremental_full_every),
                ],
            )
            .await?;
        let id: Uuid = row.get(0);
        for app_id in &job.app_ids {
            tx.execute(
                "INSERT INTO backup_job_app (job_id, app_id) VALUES ($1, $2)",
                &[&id, app_id],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn job(&self, id: Uuid) -> Result<Job, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM backup_job WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "job",
                id: id.to_string(),
            })?;
        job_row(&row)
    }

    /// The apps a job covers, with their volumes, in a stable order.
    pub async fn job_apps(&self, job_id: Uuid) -> Result<Vec<App>, StoreError> {
        let client = self.pool().get().await?;
        let ids: Vec<String> = client
            .query(
                "SELECT a.id FROM backup_job_app ja JOIN app a ON a.id = ja.app_id
                 WHERE ja.job_id = $1 ORDER BY a.name, a.id",
                &[&job_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(client);
        let mut apps = Vec::with_capacity(ids.len());
        for id in ids {
            apps.push(self.app(&id).await?);
        }
        Ok(apps)
    }

    pub async fn touch_job_last_run(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup_job SET last_run_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(())
    }
}

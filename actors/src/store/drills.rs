//! drill: one row per drill of a job, and the job's `last_drill_at` / `last_drill_outcome`,
//! written together when a drill ends.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::backups::log_line;
use super::{Store, StoreError};
use crate::model::{Backup, Drill, Status};

const COLUMNS: &str =
    "id, organization_id, job_id, status, reason, slot, log, started_at, finished_at, created_at";

fn drill_row(row: &Row) -> Result<Drill, StoreError> {
    let status: String = row.get("status");
    Ok(Drill {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        job_id: row.get("job_id"),
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        reason: row.get("reason"),
        slot: row.get("slot"),
        log: row.get("log"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        created_at: row.get("created_at"),
    })
}

impl Store {
    /// A `pending` drill of a job asked for now; `claimed_by` set when the asking process performs
    /// it itself (the CLI), else any scheduler instance claims it.
    pub async fn insert_drill(
        &self,
        organization_id: Uuid,
        job_id: Uuid,
        claimed_by: Option<&str>,
    ) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO drill (organization_id, job_id, reason, log, claimed_by, heartbeat_at)
                 VALUES ($1, $2, 'manual', $3, $4, now()) RETURNING id",
                &[&organization_id, &job_id, &log_line("queued"), &claimed_by],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The drill of `job_id` scheduled for `slot`: recorded once across all instances (true when
    /// this call recorded it).
    pub async fn insert_scheduled_drill(
        &self,
        job_id: Uuid,
        slot: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "INSERT INTO drill (organization_id, job_id, reason, slot, log)
                 SELECT organization_id, id, 'schedule', $2, $3 FROM backup_job WHERE id = $1
                 ON CONFLICT (job_id, slot) DO NOTHING",
                &[&job_id, &slot, &log_line("scheduled")],
            )
            .await?;
        Ok(n == 1)
    }

    /// Claims the oldest unclaimed drill for `instance`.
    pub async fn claim_drill(&self, instance: &str) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "UPDATE drill SET claimed_by = $1, heartbeat_at = now()
                 WHERE id = (SELECT id FROM drill
                             WHERE claimed_by IS NULL AND status = 'pending'
                             ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
                 RETURNING id",
                &[&instance],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// `pending` → `running`; false when it is not `pending` any more.
    pub async fn mark_drill_running(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE drill SET status = 'running', started_at = now(), heartbeat_at = now(),
                    log = log || $2
                 WHERE id = $1 AND status = 'pending'",
                &[&id, &log_line("started")],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn append_drill_log(&self, id: Uuid, line: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE drill SET log = log || $2, heartbeat_at = now() WHERE id = $1",
                &[&id, &log_line(line)],
            )
            .await?;
        Ok(())
    }

    pub async fn heartbeat_drill(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE drill SET heartbeat_at = now()
                 WHERE id = $1 AND status IN ('pending', 'running')",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Ends a drill and, when `on_job`, records its outcome on the job, in one transaction. A drill
    /// that is no longer unfinished is left alone; false then.
    pub async fn finish_drill(
        &self,
        id: Uuid,
        ok: bool,
        on_job: bool,
        message: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let status = if ok { "success" } else { "failed" };
        let row = tx
            .query_opt(
                "UPDATE drill SET status = $2, finished_at = now(), log = log || $3
                 WHERE id = $1 AND status IN ('pending', 'running') RETURNING job_id, finished_at",
                &[&id, &status, &log_line(message)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        if !on_job {
            tx.commit().await?;
            return Ok(true);
        }
        let (job, at): (Uuid, DateTime<Utc>) = (row.get(0), row.get(1));
        let outcome = if ok { "ok" } else { "failed" };
        tx.execute(
            "UPDATE backup_job SET last_drill_at = $2, last_drill_outcome = $3 WHERE id = $1",
            &[&job, &at, &outcome],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn drill(&self, id: Uuid) -> Result<Drill, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM drill WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "drill",
                id: id.to_string(),
            })?;
        drill_row(&row)
    }

    /// Whether a drill of this database is unfinished (pending, or running with a heartbeat
    /// within `lease`); None for a drill this database does not know (another deployment's).
    pub async fn drill_is_live(
        &self,
        id: Uuid,
        lease: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT status IN ('pending', 'running')
                   AND (heartbeat_at IS NULL OR heartbeat_at >= now() - make_interval(secs => $2))
                 FROM drill WHERE id = $1",
                &[&id, &lease.as_secs_f64()],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Fails drills whose engine stopped (no heartbeat within the lease); the job's outcome is
    /// not changed by them: nothing was found wrong with its backups.
    pub async fn fail_abandoned_drills(&self, lease: Duration) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE drill SET status = 'failed', finished_at = now(), log = log || $2
                 WHERE status IN ('pending', 'running') AND claimed_by IS NOT NULL
                   AND heartbeat_at < now() - make_interval(secs => $1)",
                &[
                    &lease.as_secs_f64(),
                    &log_line(
                        "failed: engine stopped during the drill (no heartbeat within the lease)",
                    ),
                ],
            )
            .await?)
    }

    /// The newest successful backup (not a safety backup) of each volume `job_id` backs up, by
    /// app and volume name.
    pub async fn newest_backups_of_job(&self, job_id: Uuid) -> Result<Vec<Backup>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM (
                       SELECT DISTINCT ON (b.app_id, b.volume_name) b.*
                       FROM backup b
                       JOIN backup_job_app ja ON ja.job_id = b.job_id AND ja.app_id = b.app_id
                       WHERE b.job_id = $1 AND b.status = 'success' AND b.reason <> 'pre-restore'
                       ORDER BY b.app_id, b.volume_name, b.finished_at DESC) newest
                     ORDER BY app_name, volume_name",
                    super::backups::COLUMNS
                ),
                &[&job_id],
            )
            .await?;
        rows.iter().map(super::backups::backup_row).collect()
    }
}

//! The scheduler's queries: enabled jobs, the per-(job, minute) compare-and-set, live runs, the
//! last evaluated minute, overdue episodes, and the lease sweep of rows left by a dead engine.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::backups::log_line;
use super::{Store, StoreError};

/// What the scheduler needs of an enabled job.
#[derive(Debug, Clone)]
pub struct ScheduledJob {
    pub id: Uuid,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub created_at: DateTime<Utc>,
    pub overdue_since: Option<DateTime<Utc>>,
    /// When its drills run; None: never.
    pub drill_schedule: Option<String>,
}

const STATE_KEY: &str = "scheduler";

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    pub async fn enabled_jobs(&self) -> Result<Vec<ScheduledJob>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, name, schedule, timezone, created_at, overdue_since, drill_schedule
                 FROM backup_job WHERE enabled ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ScheduledJob {
                id: r.get(0),
                name: r.get(1),
                schedule: r.get(2),
                timezone: r.get(3),
                created_at: r.get(4),
                overdue_since: r.get(5),
                drill_schedule: r.get(6),
            })
            .collect())
    }

    /// Claims the firing of `job_id` for the scheduled `minute`: true exactly once per (job,
    /// minute) across all instances, however late; sets `last_run_at`.
    pub async fn claim_scheduled_minute(
        &self,
        job_id: Uuid,
        minute: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE backup_job SET last_scheduled_for = $2, last_run_at = now()
                 WHERE id = $1 AND enabled
                   AND (last_scheduled_for IS NULL OR last_scheduled_for < $2)",
                &[&job_id, &minute],
            )
            .await?
            == 1)
    }

    /// Whether the job has unfinished rows that a live engine still heartbeats.
    pub async fn job_has_live_run(
        &self,
        job_id: Uuid,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM backup WHERE job_id = $1
                   AND status IN ('pending', 'running')
                   AND heartbeat_at > now() - make_interval(secs => $2))",
                &[&job_id, &secs(lease)],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The last minute any scheduler evaluated, if any.
    pub async fn last_evaluated_minute(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT minute FROM scheduler_state WHERE key = $1",
                &[&STATE_KEY],
            )
            .await?;
        Ok(row
            .map(|r| r.get::<_, i64>(0))
            .and_then(|m| DateTime::from_timestamp(m * 60, 0)))
    }

    pub async fn record_evaluated_minute(&self, minute: DateTime<Utc>) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        let m = minute.timestamp().div_euclid(60);
        client
            .execute(
                "INSERT INTO scheduler_state (key, minute) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE
                 SET minute = GREATEST(scheduler_state.minute, EXCLUDED.minute), updated_at = now()",
                &[&STATE_KEY, &m],
            )
            .await?;
        Ok(())
    }

    /// The finish time of each job's latest successful backup.
    pub async fn last_success_by_job(&self) -> Result<HashMap<Uuid, DateTime<Utc>>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT job_id, max(finished_at) FROM backup
                 WHERE status IN ('success', 'pruned') AND job_id IS NOT NULL
                   AND reason <> 'pre-restore'
                 GROUP BY job_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get(0), r.get::<_, Option<DateTime<Utc>>>(1)?)))
            .collect())
    }

    /// Starts (`true`) or ends (`false`) a job's overdue episode; true when this call changed it,
    /// so that exactly one instance announces an episode.
    pub async fn set_overdue(&self, job_id: Uuid, overdue: bool) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let sql = if overdue {
            "UPDATE backup_job SET overdue_since = now() WHERE id = $1 AND overdue_since IS NULL"
        } else {
            "UPDATE backup_job SET overdue_since = NULL WHERE id = $1 AND overdue_since IS NOT NULL"
        };
        Ok(client.execute(sql, &[&job_id]).await? == 1)
    }

    /// Fails every unfinished backup and restore whose heartbeat is older than `lease`: their
    /// engine is gone. Returns how many backup and restore rows it settled.
    pub async fn fail_abandoned(&self, lease: Duration) -> Result<(u64, u64), StoreError> {
        let client = self.pool().get().await?;
        let line =
            log_line("failed: engine stopped during the run (no heartbeat within the lease)");
        let backups = client
            .execute(
                "UPDATE backup SET status = 'failed', finished_at = now(), log = log || $2
                 WHERE status IN ('pending', 'running')
                   AND heartbeat_at < now() - make_interval(secs => $1)",
                &[&secs(lease), &line],
            )
            .await?;
        let line =
            log_line("failed: engine stopped during the restore (no heartbeat within the lease)");
        let restores = client
            .execute(
                "UPDATE restore SET status = 'failed', finished_at = now(), log = log || $2
                 WHERE status = 'running'
                   AND heartbeat_at < now() - make_interval(secs => $1)",
                &[&secs(lease), &line],
            )
            .await?;
        Ok((backups, restores))
    }

    /// Refreshes a restore's heartbeat, and its safety backup's while that is being taken.
    pub async fn heartbeat_restore(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE restore SET heartbeat_at = now() WHERE id = $1 AND status IN ('pending', 'running')",
                &[&id],
            )
            .await?;
        client
            .execute(
                "UPDATE backup SET heartbeat_at = now()
                 WHERE id = (SELECT pre_restore_backup_id FROM restore WHERE id = $1)
                   AND status IN ('pending', 'running')",
                &[&id],
            )
            .await?;
        Ok(())
    }
}

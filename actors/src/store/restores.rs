//! restore: one row per restore request, with its status and timestamped log.

use tokio_postgres::Row;
use uuid::Uuid;

use super::backups::log_line;
use super::{Store, StoreError};
use crate::model::{Restore, Status};

fn restore_row(row: &Row) -> Result<Restore, StoreError> {
    let status: String = row.get("status");
    Ok(Restore {
        id: row.get("id"),
        backup_id: row.get("backup_id"),
        pre_restore_backup_id: row.get("pre_restore_backup_id"),
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        log: row.get("log"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    })
}

impl Store {
    /// A `pending` restore; `safety_backup` false skips the backup of the contents it replaces.
    pub async fn insert_restore(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
        safety_backup: bool,
    ) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        let line = if safety_backup {
            "queued"
        } else {
            "queued, without a safety backup (asked for)"
        };
        let row = client
            .query_one(
                "INSERT INTO restore (organization_id, backup_id, log, heartbeat_at, safety_backup)
                 VALUES ($1, $2, $3, now(), $4) RETURNING id",
                &[
                    &organization_id,
                    &backup_id,
                    &log_line(line),
                    &safety_backup,
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Whether the restore takes a safety backup first.
    pub async fn restore_takes_safety_backup(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one("SELECT safety_backup FROM restore WHERE id = $1", &[&id])
            .await?;
        Ok(row.get(0))
    }

    /// The `pending` row of a restore's safety backup of `of`'s volume (same organization, app,
    /// volume, kind, target and job), linked to the restore.
    pub async fn insert_pre_restore_backup(
        &self,
        restore_id: Uuid,
        of: &crate::model::Backup,
    ) -> Result<Uuid, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO backup (run_id, job_id, organization_id, app_id, app_name, target_id,
                    volume_name, volume_kind, reason, log, heartbeat_at)
                 VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, 'pre-restore', $8, now())
                 RETURNING id",
                &[
                    &of.job_id,
                    &of.organization_id,
                    &of.app_id,
                    &of.app_name,
                    &of.target_id,
                    &of.volume_name,
                    &of.volume_kind.as_str(),
                    &log_line(&format!(
                        "queued (pre-restore): the contents restore {restore_id} replaces"
                    )),
                ],
            )
            .await?;
        let id: Uuid = row.get(0);
        tx.execute(
            "UPDATE restore SET pre_restore_backup_id = $2 WHERE id = $1",
            &[&restore_id, &id],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Safety backups kept longer than `keep`, oldest first, for the janitor to delete.
    pub async fn expired_pre_restore_backups(
        &self,
        keep: std::time::Duration,
    ) -> Result<Vec<crate::model::Backup>, StoreError> {
        let client = self.pool().get().await?;
        client
            .query(
                &format!(
                    "SELECT {} FROM backup
                     WHERE reason = 'pre-restore' AND status = 'success'
                       AND finished_at < now() - make_interval(secs => $1)
                     ORDER BY finished_at LIMIT 100",
                    super::backups::COLUMNS
                ),
                &[&keep.as_secs_f64()],
            )
            .await?
            .iter()
            .map(super::backups::backup_row)
            .collect()
    }

    /// `pending` → `running`; false when the restore is not `pending` any more (another engine
    /// claimed it after a hand-back and started it, or the janitor failed it): then this engine
    /// must not perform it.
    pub async fn mark_restore_running(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE restore SET status = 'running', started_at = now(), heartbeat_at = now(),
                    log = log || $2 WHERE id = $1 AND status = 'pending'",
                &[&id, &log_line("started")],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn append_restore_log(&self, id: Uuid, message: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE restore SET log = log || $2, heartbeat_at = now() WHERE id = $1",
                &[&id, &log_line(message)],
            )
            .await?;
        Ok(())
    }

    /// Ends a restore `success` or `failed` with a last log line.
    pub async fn finish_restore(
        &self,
        id: Uuid,
        status: Status,
        message: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE restore SET status = $2, finished_at = now(), log = log || $3
                 WHERE id = $1 AND status IN ('pending', 'running')",
                &[&id, &status.as_str(), &log_line(message)],
            )
            .await?;
        Ok(())
    }

    pub async fn restore(&self, id: Uuid) -> Result<Restore, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT id, backup_id, pre_restore_backup_id, status, log, started_at, finished_at
                 FROM restore WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "restore",
                id: id.to_string(),
            })?;
        restore_row(&row)
    }

    /// Marks (or clears) that restore `id` may have left something in `docker_volume` that needs
    /// recovery. Set before anything is written into the volume, cleared once it is clean.
    pub async fn set_restore_recovery(
        &self,
        id: Uuid,
        docker_volume: &str,
        pending: bool,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE restore SET docker_volume = $2, recovery_pending = $3 WHERE id = $1",
                &[&id, &docker_volume, &pending],
            )
            .await?;
        Ok(())
    }

    /// The restores whose marks say `docker_volume` may need recovery, and whether any of them
    /// is still alive (running with a heartbeat within `lease`).
    pub async fn volume_recoveries(
        &self,
        docker_volume: &str,
        lease: std::time::Duration,
    ) -> Result<(Vec<Uuid>, bool), StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, status IN ('pending', 'running')
                        AND heartbeat_at >= now() - make_interval(secs => $2)
                 FROM restore WHERE docker_volume = $1 AND recovery_pending ORDER BY created_at",
                &[&docker_volume, &lease.as_secs_f64()],
            )
            .await?;
        let live = rows.iter().any(|r| r.get::<_, bool>(1));
        Ok((rows.iter().map(|r| r.get(0)).collect(), live))
    }

    /// Clears the recovery marks of these restores, once recovery dealt with them.
    pub async fn clear_restore_recovery(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE restore SET recovery_pending = false WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(())
    }

    /// Volumes with restores that ended (or whose engine stopped: no heartbeat within `lease`)
    /// marked as possibly needing recovery, with those restores' ids.
    pub async fn abandoned_recoveries(
        &self,
        lease: std::time::Duration,
    ) -> Result<Vec<(String, Vec<Uuid>)>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT docker_volume, array_agg(id ORDER BY created_at) FROM restore
                 WHERE recovery_pending AND docker_volume IS NOT NULL
                   AND (status NOT IN ('pending', 'running')
                        OR heartbeat_at < now() - make_interval(secs => $1))
                 GROUP BY docker_volume",
                &[&lease.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

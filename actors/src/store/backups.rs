//! The backup table: rows move pending → running → success | failed (later pruned), each change
//! with a timestamped log line, and `heartbeat_at` refreshed while a run works on them.

use chrono::Utc;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{Backup, RunReason, Status, VolumeKind};

/// One volume a run is about to back up.
#[derive(Debug, Clone)]
pub struct NewBackupRow {
    pub app_id: String,
    pub app_name: String,
    pub volume_name: String,
    pub volume_kind: VolumeKind,
}

/// The columns [`backup_row`] reads.
pub(super) const COLUMNS: &str =
    "id, run_id, job_id, organization_id, app_id, app_name, target_id, \
    volume_name, volume_kind, status, size_bytes, storage_path, checksum, log, started_at, \
    finished_at, created_at, verified_at, verify_outcome, kind, parent_backup_id, chain_position, \
    manifest_path, manifest_checksum, manifest_size, encrypted_to";

/// A log line as stored: `2024-01-15T02:00:00.123Z message`.
pub fn log_line(message: &str) -> String {
    format!(
        "{} {}\n",
        Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        message.trim_end()
    )
}

pub(super) fn backup_row(row: &Row) -> Result<Backup, StoreError> {
    let status: String = row.get("status");
    let kind: String = row.get("volume_kind");
    Ok(Backup {
        id: row.get("id"),
        run_id: row.get("run_id"),
        job_id: row.get("job_id"),
        organization_id: row.get("organization_id"),
        app_id: row.get("app_id"),
        app_name: row.get("app_name"),
        target_id: row.get("target_id"),
        volume_name: row.get("volume_name"),
        volume_kind: VolumeKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("volume kind {kind}")))?,
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        size_bytes: row.get("size_bytes"),
        storage_path: row.get("storage_path"),
        checksum: row.get("checksum"),
        log: row.get("log"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        created_at: row.get("created_at"),
        verified_at: row.get("verified_at"),
        verify_outcome: row.get("verify_outcome"),
        chain: {
            let kind: String = row.get("kind");
            crate::model::ChainLink {
                kind: crate::model::BackupKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("backup kind {kind}")))?,
                parent_backup_id: row.get("parent_backup_id"),
                position: row.get("chain_position"),
                manifest_path: row.get("manifest_path"),
                manifest_checksum: row.get("manifest_checksum"),
                manifest_size: row.get("manifest_size"),
            }
        },
        encrypted_to: row.get("encrypted_to"),
    })
}

/// Identifies the run the rows belong to.
#[derive(Debug, Clone, Copy)]
pub struct RunRef {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub organization_id: Uuid,
    pub target_id: Uuid,
    pub reason: RunReason,
    /// The scheduled minute, for scheduled runs.
    pub scheduled_for: Option<chrono::DateTime<Utc>>,
}

impl Store {
    /// Inserts one `pending` row per volume, in one transaction; returns their ids in order.
    pub async fn insert_pending_backups(
        &self,
        run: RunRef,
        volumes: &[NewBackupRow],
    ) -> Result<Vec<Uuid>, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let mut ids = Vec::with_capacity(volumes.len());
        let line = log_line(&format!("queued ({})", run.reason.as_str()));
        for v in volumes {
            let row = tx
                .query_one(
                    "INSERT INTO backup (run_id, job_id, organization_id, app_id, app_name, target_id,
                        volume_name, volume_kind, reason, log, scheduled_for, heartbeat_at)
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11, now()) RETURNING id",
                    &[
                        &run.run_id,
                        &run.job_id,
                        &run.organization_id,
                        &v.app_id,
                        &v.app_name,
                        &run.target_id,
                        &v.volume_name,
                        &v.volume_kind.as_str(),
                        &run.reason.as_str(),
                        &line,
                        &run.scheduled_for,
                    ],
                )
                .await?;
            ids.push(row.get(0));
        }
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn mark_backup_running(&self, id: Uuid, message: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET status = 'running', started_at = now(), heartbeat_at = now(),
                    log = log || $2 WHERE id = $1 AND status = 'pending'",
                &[&id, &log_line(message)],
            )
            .await?;
        Ok(())
    }

    /// Appends a line to the row's log and refreshes its heartbeat.
    pub async fn append_backup_log(&self, id: Uuid, message: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET log = log || $2, heartbeat_at = now() WHERE id = $1",
                &[&id, &log_line(message)],
            )
            .await?;
        Ok(())
    }

    /// Refreshes the heartbeat of the run's unfinished rows.
    pub async fn heartbeat_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET heartbeat_at = now()
                 WHERE run_id = $1 AND status IN ('pending', 'running')",
                &[&run_id],
            )
            .await?;
        Ok(())
    }

    /// `running` → `success`, only ever called after the target confirmed the whole object. False
    /// when the row is not `running` any more (the janitor failed it, believing its engine dead):
    /// a settled row never changes again.
    pub async fn mark_backup_success(
        &self,
        id: Uuid,
        size_bytes: u64,
        storage_path: &str,
        sha256_hex: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let size = i64::try_from(size_bytes).unwrap_or(i64::MAX);
        let n = client
            .execute(
                "UPDATE backup SET status = 'success', size_bytes = $2, storage_path = $3,
                    checksum = $4, finished_at = now(), heartbeat_at = now(), log = log || $5
                 WHERE id = $1 AND status = 'running'",
                &[
                    &id,
                    &size,
                    &storage_path,
                    &format!("sha256:{sha256_hex}"),
                    &log_line(message),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    pub async fn mark_backup_failed(&self, id: Uuid, message: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET status = 'failed', finished_at = now(), heartbeat_at = now(),
                    log = log || $2
                 WHERE id = $1 AND status IN ('pending', 'running')",
                &[&id, &log_line(message)],
            )
            .await?;
        Ok(())
    }

    /// Marks every unfinished row of a run `failed` with the reason; returns how many.
    pub async fn fail_unfinished_run(&self, run_id: Uuid, reason: &str) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE backup SET status = 'failed', finished_at = now(), log = log || $2
                 WHERE run_id = $1 AND status IN ('pending', 'running')",
                &[&run_id, &log_line(reason)],
            )
            .await?)
    }

    /// Appends a line to the log of the run's unfinished rows (a restart says why it restarts).
    pub async fn log_unfinished_run(&self, run_id: Uuid, line: &str) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE backup SET log = log || $2, heartbeat_at = now()
                 WHERE run_id = $1 AND status IN ('pending', 'running')",
                &[&run_id, &log_line(line)],
            )
            .await?)
    }

    pub async fn backup(&self, id: Uuid) -> Result<Backup, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM backup WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "backup",
                id: id.to_string(),
            })?;
        backup_row(&row)
    }

    pub async fn run_backups(&self, run_id: Uuid) -> Result<Vec<Backup>, StoreError> {
        let client = self.pool().get().await?;
        client
            .query(
                &format!("SELECT {COLUMNS} FROM backup WHERE run_id = $1 ORDER BY created_at, id"),
                &[&run_id],
            )
            .await?
            .iter()
            .map(backup_row)
            .collect()
    }

    /// The newest successful backup of a job's series (app, volume), safety backups aside: the
    /// parent an incremental backup of the series would build on.
    pub async fn chain_parent(
        &self,
        job_id: Uuid,
        app_id: &str,
        volume_name: &str,
    ) -> Result<Option<Backup>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM backup
                     WHERE job_id = $1 AND app_id = $2 AND volume_name = $3
                       AND status = 'success' AND reason <> 'pre-restore'
                     ORDER BY finished_at DESC, id DESC LIMIT 1"
                ),
                &[&job_id, &app_id, &volume_name],
            )
            .await?;
        row.as_ref().map(backup_row).transpose()
    }

    /// Forgets what an earlier attempt of a running row recorded of a chain (a restarted run
    /// writes its archive again, maybe outside any chain).
    pub async fn clear_backup_chain(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET kind = 'full', parent_backup_id = NULL, chain_position = 0,
                    manifest_path = NULL, manifest_checksum = NULL, manifest_size = NULL
                 WHERE id = $1 AND status = 'running' AND manifest_path IS NOT NULL",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Records the age recipients a running backup's archive is encrypted to (`None`: plain),
    /// before its upload starts.
    pub async fn set_backup_encryption(
        &self,
        id: Uuid,
        recipients: Option<&[String]>,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET encrypted_to = $2 WHERE id = $1 AND status = 'running'",
                &[&id, &recipients],
            )
            .await?;
        Ok(())
    }

    /// Records a running backup's place in its chain and its manifest (before it is marked
    /// `success`).
    pub async fn set_backup_chain(
        &self,
        id: Uuid,
        link: &crate::model::ChainLink,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET kind = $2, parent_backup_id = $3, chain_position = $4,
                    manifest_path = $5, manifest_checksum = $6, manifest_size = $7
                 WHERE id = $1 AND status = 'running'",
                &[
                    &id,
                    &link.kind.as_str(),
                    &link.parent_backup_id,
                    &link.position,
                    &link.manifest_path,
                    &link.manifest_checksum,
                    &link.manifest_size,
                ],
            )
            .await?;
        Ok(())
    }
}

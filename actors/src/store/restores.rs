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
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        log: row.get("log"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    })
}

impl Store {
    pub async fn insert_restore(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
    ) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO restore (organization_id, backup_id, log, heartbeat_at)
                 VALUES ($1, $2, $3, now()) RETURNING id",
                &[&organization_id, &backup_id, &log_line("queued")],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn mark_restore_running(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE restore SET status = 'running', started_at = now(), heartbeat_at = now(),
                    log = log || $2 WHERE id = $1",
                &[&id, &log_line("started")],
            )
            .await?;
        Ok(())
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
                "SELECT id, backup_id, status, log, started_at, finished_at FROM restore WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "restore",
                id: id.to_string(),
            })?;
        restore_row(&row)
    }
}

//! The queries of retention pruning: a job's `success` rows (its series), marking a row `pruned`
//! once its object is gone, and a log line on a row whose object could not be deleted.

use uuid::Uuid;

use super::backups::{backup_row, log_line, COLUMNS};
use super::{Store, StoreError};
use crate::model::Backup;

impl Store {
    /// Every `success` row of a job, grouped by (app, volume), newest first by `finished_at`, equal
    /// times by id.
    #[tracing::instrument(skip(self))]
    pub async fn job_success_backups(&self, job_id: Uuid) -> Result<Vec<Backup>, StoreError> {
        let client = self.pool().get().await?;
        client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM backup
                     WHERE job_id = $1 AND status = 'success' AND reason <> 'pre-restore'
                     ORDER BY app_id, volume_name, COALESCE(finished_at, created_at) DESC, id"
                ),
                &[&job_id],
            )
            .await?
            .iter()
            .map(backup_row)
            .collect()
    }

    /// Of these backups, the ones a restore or a verification is reading now (`pending` or
    /// `running`).
    #[tracing::instrument(skip(self, backup_ids), fields(count = backup_ids.len()))]
    pub async fn backups_in_use(&self, backup_ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        if backup_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool().get().await?;
        Ok(client
            .query(
                "SELECT backup_id FROM restore
                 WHERE backup_id = ANY($1) AND status IN ('pending', 'running')
                 UNION
                 SELECT backup_id FROM verification
                 WHERE backup_id = ANY($1) AND status IN ('pending', 'running')",
                &[&backup_ids],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// `success` → `pruned` with a log line, once the row's object is deleted. False when the row
    /// was no longer `success` (another prune got there first).
    #[tracing::instrument(skip(self, message))]
    pub async fn mark_backup_pruned(&self, id: Uuid, message: &str) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE backup SET status = 'pruned', log = log || $2
                 WHERE id = $1 AND status = 'success'",
                &[&id, &log_line(message)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Appends a line to a row's log without touching anything else (a prune that could not delete
    /// the object leaves the row `success`).
    #[tracing::instrument(skip(self, message))]
    pub async fn log_backup_prune_failure(
        &self,
        id: Uuid,
        message: &str,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup SET log = log || $2 WHERE id = $1",
                &[&id, &log_line(message)],
            )
            .await?;
        Ok(())
    }
}

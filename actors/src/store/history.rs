//! Reading the backup table as the control plane shows it: an organization's history, newest
//! first, filtered, a page at a time; and the organization a restore belongs to.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::backups::{backup_row, COLUMNS};
use super::{Store, StoreError};
use crate::model::{Backup, Status};

/// Filters of the history list; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub job_id: Option<Uuid>,
    pub app_id: Option<String>,
    pub status: Option<Status>,
    pub volume_name: Option<String>,
    pub run_id: Option<Uuid>,
    /// Rows created at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Rows created before this time.
    pub to: Option<DateTime<Utc>>,
}

impl Store {
    /// Newest first; `before` is the (created_at, id) of the last row of the previous page.
    #[tracing::instrument(skip(self))]
    pub async fn list_history(
        &self,
        organization_id: Uuid,
        filter: &HistoryFilter,
        before: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<Backup>, StoreError> {
        let client = self.pool().get().await?;
        let (t, id) = before.unzip();
        let status = filter.status.map(Status::as_str);
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM backup
                     WHERE organization_id = $1
                       AND ($2::uuid IS NULL OR job_id = $2)
                       AND ($3::text IS NULL OR app_id = $3)
                       AND ($4::text IS NULL OR status = $4)
                       AND ($5::text IS NULL OR volume_name = $5)
                       AND ($6::uuid IS NULL OR run_id = $6)
                       AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8))
                       AND ($10::timestamptz IS NULL OR created_at >= $10)
                       AND ($11::timestamptz IS NULL OR created_at < $11)
                     ORDER BY created_at DESC, id DESC LIMIT $9"
                ),
                &[
                    &organization_id,
                    &filter.job_id,
                    &filter.app_id,
                    &status,
                    &filter.volume_name,
                    &filter.run_id,
                    &t,
                    &id,
                    &limit,
                    &filter.from,
                    &filter.to,
                ],
            )
            .await?;
        rows.iter().map(backup_row).collect()
    }

    /// The organization a restore belongs to.
    #[tracing::instrument(skip(self))]
    pub async fn restore_organization(&self, id: Uuid) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        client
            .query_opt("SELECT organization_id FROM restore WHERE id = $1", &[&id])
            .await?
            .map(|r| r.get(0))
            .ok_or(StoreError::NotFound {
                what: "restore",
                id: id.to_string(),
            })
    }
}

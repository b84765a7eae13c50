//! backup_target as the control plane administers it: list an organization's targets with the
//! system targets, update (the default flag moves in the same transaction), and delete only when
//! no job uses the target. Configs stay sealed here; the HTTP layer masks them.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::admin::PageAfter;
use super::{Store, StoreError, TargetRow};
use crate::model::TargetKind;

/// A target row with its timestamps (config sealed).
#[derive(Debug, Clone)]
pub struct TargetRecord {
    pub row: TargetRow,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A write of a target's fields; `sealed_config` already has its secrets encrypted.
#[derive(Debug, Clone)]
pub struct TargetWrite {
    pub name: String,
    pub kind: TargetKind,
    pub sealed_config: serde_json::Value,
    pub is_default: bool,
    pub encryption: crate::encryption::Encryption,
}

/// What deleting a target did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetDelete {
    Deleted,
    NotFound,
    /// Jobs still write to it: (id, name) of each.
    InUse(Vec<(Uuid, String)>),
}

const COLUMNS: &str =
    "id, organization_id, name, type, config, is_default, encryption, created_at, updated_at";

fn record(row: &Row) -> Result<TargetRecord, StoreError> {
    let kind: String = row.get("type");
    Ok(TargetRecord {
        row: TargetRow {
            id: row.get("id"),
            organization_id: row.get("organization_id"),
            name: row.get("name"),
            kind: TargetKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("target type {kind}")))?,
            sealed_config: row.get("config"),
            is_default: row.get("is_default"),
            encryption: super::targets::encryption_of(row)?,
        },
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

impl Store {
    /// The targets an organization sees (its own and the system's), or with `None` the system
    /// targets only; oldest first, a page at a time.
    #[tracing::instrument(skip(self))]
    pub async fn list_target_records(
        &self,
        organization_id: Option<Uuid>,
        after: PageAfter,
        limit: i64,
    ) -> Result<Vec<TargetRecord>, StoreError> {
        let client = self.pool().get().await?;
        let (t, id) = after.unzip();
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM backup_target
                     WHERE (organization_id IS NULL OR organization_id = $1)
                       AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
                     ORDER BY created_at, id LIMIT $4"
                ),
                &[&organization_id, &t, &id, &limit],
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// Inserts a target whose config is sealed already; `is_default` clears the flag on the
    /// owner's other targets in the same transaction.
    #[tracing::instrument(skip(self, write), fields(name = %write.name))]
    pub async fn insert_sealed_target(
        &self,
        organization_id: Option<Uuid>,
        write: &TargetWrite,
    ) -> Result<Uuid, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        if write.is_default && organization_id.is_some() {
            tx.execute(
                "UPDATE backup_target SET is_default = false WHERE organization_id = $1 AND is_default",
                &[&organization_id],
            )
            .await?;
        }
        let row = tx
            .query_one(
                "INSERT INTO backup_target (organization_id, name, type, config, is_default, encryption)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &organization_id,
                    &write.name,
                    &write.kind.as_str(),
                    &write.sealed_config,
                    &write.is_default,
                    &write.encryption.to_column(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    #[tracing::instrument(skip(self))]
    pub async fn target_record(&self, id: Uuid) -> Result<TargetRecord, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM backup_target WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "target",
                id: id.to_string(),
            })?;
        record(&row)
    }

    /// Replaces a target's fields; setting `is_default` clears it on the owner's other targets in
    /// the same transaction.
    #[tracing::instrument(skip(self, write), fields(name = %write.name))]
    pub async fn update_target(
        &self,
        id: Uuid,
        organization_id: Option<Uuid>,
        write: &TargetWrite,
    ) -> Result<TargetRecord, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        if write.is_default && organization_id.is_some() {
            tx.execute(
                "UPDATE backup_target SET is_default = false
                 WHERE organization_id = $1 AND id <> $2 AND is_default",
                &[&organization_id, &id],
            )
            .await?;
        }
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE backup_target SET name = $3, type = $4, config = $5, is_default = $6,
                        encryption = $7, updated_at = now()
                     WHERE id = $1 AND organization_id IS NOT DISTINCT FROM $2
                     RETURNING {COLUMNS}"
                ),
                &[
                    &id,
                    &organization_id,
                    &write.name,
                    &write.kind.as_str(),
                    &write.sealed_config,
                    &write.is_default,
                    &write.encryption.to_column(),
                ],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "target",
                id: id.to_string(),
            })?;
        let updated = record(&row)?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Deletes the target unless a job uses it (the row is locked meanwhile, so a job cannot
    /// start using it between the check and the delete).
    #[tracing::instrument(skip(self))]
    pub async fn delete_target(
        &self,
        id: Uuid,
        organization_id: Option<Uuid>,
    ) -> Result<TargetDelete, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let found = tx
            .query_opt(
                "SELECT id FROM backup_target
                 WHERE id = $1 AND organization_id IS NOT DISTINCT FROM $2 FOR UPDATE",
                &[&id, &organization_id],
            )
            .await?;
        if found.is_none() {
            return Ok(TargetDelete::NotFound);
        }
        let users: Vec<(Uuid, String)> = tx
            .query(
                "SELECT id, name FROM backup_job WHERE target_id = $1 ORDER BY name, id",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if !users.is_empty() {
            return Ok(TargetDelete::InUse(users));
        }
        tx.execute("DELETE FROM backup_target WHERE id = $1", &[&id])
            .await?;
        tx.commit().await?;
        Ok(TargetDelete::Deleted)
    }

    /// Whether a job of `organization_id` may write to `target_id`: the org's own or a system target.
    #[tracing::instrument(skip(self))]
    pub async fn target_usable_by(
        &self,
        organization_id: Uuid,
        target_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM backup_target
                 WHERE id = $1 AND (organization_id = $2 OR organization_id IS NULL)",
                &[&target_id, &organization_id],
            )
            .await?;
        Ok(row.is_some())
    }
}

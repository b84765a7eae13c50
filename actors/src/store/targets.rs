//! backup_target: org-level and system-level targets, secrets encrypted, and the resolution order.

use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::encryption::Encryption;
use crate::model::target::secret_fields;
use crate::model::{Target, TargetConfig, TargetKind};

/// A target as the API shows it: config with secrets still sealed.
#[derive(Debug, Clone)]
pub struct TargetRow {
    pub id: Uuid,
    pub organization_id: Option<Uuid>,
    pub name: String,
    pub kind: TargetKind,
    pub sealed_config: serde_json::Value,
    pub is_default: bool,
    pub encryption: Encryption,
}

const COLUMNS: &str = "id, organization_id, name, type, config, is_default, encryption";

/// A target's `encryption` column.
pub(super) fn encryption_of(row: &Row) -> Result<Encryption, StoreError> {
    let id: Uuid = row.get("id");
    Encryption::from_column(row.get("encryption"))
        .map_err(|e| StoreError::Corrupt(format!("target {id} encryption: {e}")))
}

fn target_row(row: &Row) -> Result<TargetRow, StoreError> {
    let kind: String = row.get("type");
    Ok(TargetRow {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        name: row.get("name"),
        kind: TargetKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("target type {kind}")))?,
        sealed_config: row.get("config"),
        is_default: row.get("is_default"),
        encryption: encryption_of(row)?,
    })
}

impl Store {
    fn open_target(&self, row: TargetRow) -> Result<Target, StoreError> {
        let mut config = row.sealed_config;
        self.secrets()
            .open_fields(&mut config, secret_fields(row.kind))?;
        let config = TargetConfig::from_json(row.kind, config)
            .map_err(|e| StoreError::Corrupt(format!("target {} config: {e}", row.id)))?;
        let sealing = row
            .encryption
            .recipients()
            .map_err(|e| StoreError::Corrupt(format!("target {} encryption: {e}", row.id)))?;
        Ok(Target {
            encryption: row.encryption,
            sealing,
            id: row.id,
            organization_id: row.organization_id,
            name: row.name,
            kind: row.kind,
            config,
            is_default: row.is_default,
        })
    }

    /// Inserts a target; `config` holds secrets in clear and is sealed here.
    pub async fn insert_target(
        &self,
        organization_id: Option<Uuid>,
        name: &str,
        kind: TargetKind,
        mut config: serde_json::Value,
        is_default: bool,
    ) -> Result<Uuid, StoreError> {
        self.secrets().seal_fields(&mut config, secret_fields(kind));
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        if is_default {
            tx.execute(
                "UPDATE backup_target SET is_default = false WHERE organization_id = $1",
                &[&organization_id],
            )
            .await?;
        }
        let row = tx
            .query_one(
                "INSERT INTO backup_target (organization_id, name, type, config, is_default)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[
                    &organization_id,
                    &name,
                    &kind.as_str(),
                    &config,
                    &is_default,
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(row.get(0))
    }

    /// Creates or updates the system-level target of that name (the `backup:` section of vardo.yml).
    pub async fn upsert_system_target(
        &self,
        name: &str,
        kind: TargetKind,
        mut config: serde_json::Value,
        encryption: Option<&Encryption>,
    ) -> Result<Uuid, StoreError> {
        self.secrets().seal_fields(&mut config, secret_fields(kind));
        let client = self.pool().get().await?;
        // `None`: the stored encryption is kept (one set through the API survives a restart).
        let given = encryption.is_some();
        let column = encryption.and_then(Encryption::to_column);
        let row = client
            .query_one(
                "INSERT INTO backup_target (organization_id, name, type, config, encryption)
                 VALUES (NULL, $1, $2, $3, $4)
                 ON CONFLICT (name) WHERE organization_id IS NULL
                 DO UPDATE SET type = EXCLUDED.type, config = EXCLUDED.config,
                    encryption = CASE WHEN $5 THEN EXCLUDED.encryption
                                      ELSE backup_target.encryption END,
                    updated_at = now()
                 RETURNING id",
                &[&name, &kind.as_str(), &config, &column, &given],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Sets a target's encryption (for archives written from now on; existing ones keep theirs).
    pub async fn set_target_encryption(
        &self,
        id: Uuid,
        encryption: &Encryption,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup_target SET encryption = $2, updated_at = now() WHERE id = $1",
                &[&id, &encryption.to_column()],
            )
            .await?;
        Ok(())
    }

    pub async fn target(&self, id: Uuid) -> Result<Target, StoreError> {
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
        self.open_target(target_row(&row)?)
    }

    pub async fn list_target_rows(
        &self,
        organization_id: Option<Uuid>,
    ) -> Result<Vec<TargetRow>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM backup_target
                     WHERE organization_id IS NOT DISTINCT FROM $1 ORDER BY created_at, id"
                ),
                &[&organization_id],
            )
            .await?;
        rows.iter().map(target_row).collect()
    }

    /// The target a run of an organization's job writes to: the job's own target when it still
    /// exists, else the org's default, else any org target, else a system target; None → skip.
    pub async fn resolve_target(
        &self,
        organization_id: Uuid,
        job_target: Option<Uuid>,
    ) -> Result<Option<Target>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM backup_target
                     WHERE (organization_id = $1 OR organization_id IS NULL)
                     ORDER BY (id = $2) DESC NULLS LAST,
                              (organization_id IS NOT NULL AND is_default) DESC,
                              (organization_id IS NOT NULL) DESC,
                              created_at, id
                     LIMIT 1"
                ),
                &[&organization_id, &job_target],
            )
            .await?;
        row.map(|r| target_row(&r).and_then(|t| self.open_target(t)))
            .transpose()
    }
}

//! organization, app and volume: the registry of what can be backed up.

use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{App, Organization, Volume, VolumeKind};

impl Store {
    /// Creates the organization, or returns the existing one with that slug (its name updated when given).
    pub async fn upsert_organization(
        &self,
        slug: &str,
        name: Option<&str>,
    ) -> Result<Organization, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO organization (slug, name) VALUES ($1, COALESCE($2, $1))
                 ON CONFLICT (slug) DO UPDATE SET name = COALESCE($2, organization.name)
                 RETURNING id, slug, name",
                &[&slug, &name],
            )
            .await?;
        Ok(Organization {
            id: row.get(0),
            slug: row.get(1),
            name: row.get(2),
        })
    }

    pub async fn organization(&self, id: Uuid) -> Result<Organization, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT id, slug, name FROM organization WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "organization",
                id: id.to_string(),
            })?;
        Ok(Organization {
            id: row.get(0),
            slug: row.get(1),
            name: row.get(2),
        })
    }

    /// Creates or replaces an app and its volume list in one transaction. An existing app keeps
    /// its organization, and claims names as that organization's.
    pub async fn upsert_app(&self, app: &App) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let organization_id: Uuid = tx
            .query_one(
                "INSERT INTO app (id, organization_id, name) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
                 RETURNING organization_id",
                &[&app.id, &app.organization_id, &app.name],
            )
            .await?
            .get(0);
        super::claims::write_volumes(&tx, &app.id, organization_id, &app.name, &app.volumes)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn app(&self, id: &str) -> Result<App, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT id, organization_id, name FROM app WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "app",
                id: id.to_owned(),
            })?;
        let volumes = client
            .query(
                "SELECT name, persistent, kind FROM volume WHERE app_id = $1 ORDER BY name",
                &[&id],
            )
            .await?
            .iter()
            .map(|r| {
                let kind: String = r.get(2);
                Ok(Volume {
                    name: r.get(0),
                    persistent: r.get(1),
                    kind: VolumeKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("volume kind {kind}")))?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(App {
            id: row.get(0),
            organization_id: row.get(1),
            name: row.get(2),
            volumes,
        })
    }
}

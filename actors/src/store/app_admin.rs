//! app and volume as the control plane administers them: an organization writes, lists and
//! deletes only its own apps (app ids are global strings, so a write checks the owner).

use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::App;

/// What a `put_app_for_org` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppPut {
    Created,
    Updated,
    /// The id belongs to another organization; nothing changed.
    Foreign,
}

impl Store {
    /// Creates or replaces `app` (and its volume list) if its id is free or already the
    /// organization's, in one transaction.
    #[tracing::instrument(skip(self, app), fields(app_id = %app.id))]
    pub async fn put_app_for_org(&self, app: &App) -> Result<AppPut, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "INSERT INTO app (id, organization_id, name) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
                     WHERE app.organization_id = EXCLUDED.organization_id
                 RETURNING (xmax = 0) AS created",
                &[&app.id, &app.organization_id, &app.name],
            )
            .await?;
        let Some(row) = row else {
            return Ok(AppPut::Foreign);
        };
        let created: bool = row.get(0);
        super::claims::write_volumes(&tx, &app.id, app.organization_id, &app.name, &app.volumes)
            .await?;
        tx.commit().await?;
        Ok(if created {
            AppPut::Created
        } else {
            AppPut::Updated
        })
    }

    /// An organization's app ids, by id, a page at a time (`after` is the last id of the
    /// previous page).
    #[tracing::instrument(skip(self))]
    pub async fn list_app_ids(
        &self,
        organization_id: Uuid,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id FROM app WHERE organization_id = $1 AND ($2::text IS NULL OR id > $2)
                 ORDER BY id LIMIT $3",
                &[&organization_id, &after, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Deletes the organization's app; false when it has no such app. Its Docker volume names
    /// stay the organization's (the claims' `app_id` becomes NULL), since its volumes may stay.
    #[tracing::instrument(skip(self))]
    pub async fn delete_app(&self, organization_id: Uuid, id: &str) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "DELETE FROM app WHERE id = $1 AND organization_id = $2",
                &[&id, &organization_id],
            )
            .await?;
        Ok(n == 1)
    }
}

//! Organizations as the control plane administers them: create (a taken slug is an error, unlike
//! `upsert_organization`), read with timestamps, list a page at a time.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Store, StoreError};

/// An organization with its creation time, for the API.
#[derive(Debug, Clone)]
pub struct OrganizationRecord {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// Where a page of a list starts: after the item with this (created_at, id).
pub type PageAfter = Option<(DateTime<Utc>, Uuid)>;

fn org_row(r: &Row) -> OrganizationRecord {
    OrganizationRecord {
        id: r.get("id"),
        slug: r.get("slug"),
        name: r.get("name"),
        created_at: r.get("created_at"),
    }
}

impl Store {
    /// Creates an organization; a taken slug is a unique violation (`StoreError::Db`, 23505).
    #[tracing::instrument(skip(self))]
    pub async fn insert_organization(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<OrganizationRecord, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO organization (slug, name) VALUES ($1, $2)
                 RETURNING id, slug, name, created_at",
                &[&slug, &name],
            )
            .await?;
        Ok(org_row(&row))
    }

    #[tracing::instrument(skip(self))]
    pub async fn organization_record(&self, id: Uuid) -> Result<OrganizationRecord, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT id, slug, name, created_at FROM organization WHERE id = $1",
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "organization",
                id: id.to_string(),
            })?;
        Ok(org_row(&row))
    }

    /// Oldest first; `limit` rows after `after`.
    #[tracing::instrument(skip(self))]
    pub async fn list_organizations(
        &self,
        after: PageAfter,
        limit: i64,
    ) -> Result<Vec<OrganizationRecord>, StoreError> {
        let client = self.pool().get().await?;
        let (t, id) = after.unzip();
        let rows = client
            .query(
                "SELECT id, slug, name, created_at FROM organization
                 WHERE $1::timestamptz IS NULL OR (created_at, id) > ($1, $2)
                 ORDER BY created_at, id LIMIT $3",
                &[&t, &id, &limit],
            )
            .await?;
        Ok(rows.iter().map(org_row).collect())
    }
}

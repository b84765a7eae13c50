//! docker_volume_claim: which organization, and which of its apps, owns which Docker volume name;
//! stored_object: which backup owns which stored object. Both are written before the thing they
//! guard is touched, and a claim is never deleted: it outlives its app, bound to its organization.

use tokio_postgres::Transaction;
use uuid::Uuid;

use super::{Store, StoreError};
use crate::docker::app_volume_candidates;
use crate::model::Volume;

/// A Docker volume name another registration holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Docker volume name {docker_volume} is already registered to {holder}; app and volume names must name Docker volumes no other app names")]
pub struct NameTaken {
    pub docker_volume: String,
    /// The volume of the registration that failed.
    pub volume_name: String,
    /// "app {id}" within the same organization, "another organization" otherwise (never which
    /// one, nor its app).
    pub holder: String,
}

/// Who holds a Docker volume name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeClaim {
    /// None once the app that claimed it was deleted or stopped naming it: the name stays the
    /// organization's, for any of its apps to claim again.
    pub app_id: Option<String>,
    pub organization_id: Uuid,
}

/// Replaces an app's volume rows and its Docker volume claims, inside the caller's transaction.
/// The names it no longer forms are released to the organization, never freed; a name held by
/// another app of the organization, or by another organization at all, fails the whole
/// transaction with [`NameTaken`].
pub(super) async fn write_volumes(
    tx: &Transaction<'_>,
    app_id: &str,
    organization_id: Uuid,
    app_name: &str,
    volumes: &[Volume],
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM volume WHERE app_id = $1", &[&app_id])
        .await?;
    tx.execute(
        "UPDATE docker_volume_claim SET app_id = NULL WHERE app_id = $1",
        &[&app_id],
    )
    .await?;
    for v in volumes {
        tx.execute(
            "INSERT INTO volume (app_id, name, persistent, kind) VALUES ($1, $2, $3, $4)",
            &[&app_id, &v.name, &v.persistent, &v.kind.as_str()],
        )
        .await?;
        for name in app_volume_candidates(app_name, &v.name) {
            let claimed = tx
                .query_opt(
                    "INSERT INTO docker_volume_claim (name, app_id, organization_id, volume_name)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (name) DO UPDATE
                         SET app_id = EXCLUDED.app_id, volume_name = EXCLUDED.volume_name
                         WHERE docker_volume_claim.app_id IS NULL
                           AND docker_volume_claim.organization_id = EXCLUDED.organization_id
                     RETURNING name",
                    &[&name, &app_id, &organization_id, &v.name],
                )
                .await?;
            if claimed.is_some() {
                continue;
            }
            let holder = tx
                .query_opt(
                    "SELECT app_id, organization_id FROM docker_volume_claim WHERE name = $1",
                    &[&name],
                )
                .await?;
            let holder = match holder {
                Some(row) if row.get::<_, Uuid>(1) == organization_id => {
                    match row.get::<_, Option<String>>(0) {
                        Some(app) => format!("app {app}"),
                        // A released name is taken just above; only a concurrent
                        // registration that took and released it since ends here.
                        None => {
                            "a concurrent registration of this organization (try again)".to_owned()
                        }
                    }
                }
                _ => "another organization".to_owned(),
            };
            return Err(NameTaken {
                docker_volume: name,
                volume_name: v.name.clone(),
                holder,
            }
            .into());
        }
    }
    Ok(())
}

impl Store {
    /// Who holds a Docker volume name, if anyone.
    pub async fn volume_claim(
        &self,
        docker_volume: &str,
    ) -> Result<Option<VolumeClaim>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT app_id, organization_id FROM docker_volume_claim WHERE name = $1",
                &[&docker_volume],
            )
            .await?;
        Ok(row.map(|r| VolumeClaim {
            app_id: r.get(0),
            organization_id: r.get(1),
        }))
    }

    /// Reserves a stored object's location for a backup row; false when another row holds it. The
    /// row that holds it gets it again (a restarted run writes its volume's object where the
    /// interrupted attempt did, leaving no orphan behind).
    pub async fn reserve_object(
        &self,
        location: &str,
        backup_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "INSERT INTO stored_object (location, backup_id) VALUES ($1, $2)
                 ON CONFLICT (location) DO UPDATE SET backup_id = EXCLUDED.backup_id
                     WHERE stored_object.backup_id = EXCLUDED.backup_id
                 RETURNING location",
                &[&location, &backup_id],
            )
            .await?;
        Ok(row.is_some())
    }
}

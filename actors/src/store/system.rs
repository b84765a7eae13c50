//! The system organization and its job (`self_backup`): fixed ids, created or updated at start-up.

use uuid::Uuid;

use super::jobs::as_i32;
use super::{Store, StoreError};
use crate::self_backup::SelfBackupPlan;

impl Store {
    /// The system organization with `id` and `slug`; an organization of the tenants that holds
    /// the slug already is an error (its keys would share the system's prefix).
    pub async fn ensure_system_organization(&self, id: Uuid, slug: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO organization (id, slug, name) VALUES ($1, $2, 'System')
                 ON CONFLICT DO NOTHING",
                &[&id, &slug],
            )
            .await?;
        let owner: Option<Uuid> = client
            .query_opt("SELECT id FROM organization WHERE slug = $1", &[&slug])
            .await?
            .map(|r| r.get(0));
        if owner != Some(id) {
            return Err(StoreError::Corrupt(format!(
                "the organization slug {slug:?} is reserved for the system organization, but \
                 another organization holds it: rename that organization, then start again"
            )));
        }
        Ok(())
    }

    /// Creates or updates the system job: the engine app, its schedule, target and retention;
    /// never drilled (its dump is restored with `restore-self`).
    pub async fn upsert_system_job(
        &self,
        id: Uuid,
        plan: &SelfBackupPlan,
    ) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let r = &plan.retention;
        tx.execute(
            "INSERT INTO backup_job (id, organization_id, name, schedule, timezone, enabled,
                target_id, keep_all, keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
                keep_yearly, notify_on_success, notify_on_failure, compression, drill_schedule)
             VALUES ($1, $2, 'The engine''s database', $3, $4, true, $5, $6, $7, $8, $9, $10,
                $11, $12, $13, $14, $15, NULL)
             ON CONFLICT (id) DO UPDATE SET schedule = $3, timezone = $4, enabled = true,
                target_id = $5, keep_all = $6, keep_last = $7, keep_hourly = $8, keep_daily = $9,
                keep_weekly = $10, keep_monthly = $11, keep_yearly = $12, notify_on_success = $13,
                notify_on_failure = $14, compression = $15, drill_schedule = NULL,
                updated_at = now()",
            &[
                &id,
                &crate::self_backup::SYSTEM_ORG_ID,
                &plan.schedule,
                &plan.timezone,
                &plan.target_id,
                &r.keep_all,
                &as_i32(r.keep_last),
                &as_i32(r.keep_hourly),
                &as_i32(r.keep_daily),
                &as_i32(r.keep_weekly),
                &as_i32(r.keep_monthly),
                &as_i32(r.keep_yearly),
                &plan.notify_on_success,
                &plan.notify_on_failure,
                &plan.compression.as_str(),
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO backup_job_app (job_id, app_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &crate::self_backup::ENGINE_APP_ID],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The id of the system-level target named `name`.
    pub async fn system_target_id(&self, name: &str) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .query_opt(
                "SELECT id FROM backup_target WHERE organization_id IS NULL AND name = $1",
                &[&name],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// The engine's app, owned by the system organization, with its one volume of kind `engine`.
    /// No Docker volume name is claimed (it has none). An app of another organization that holds
    /// the id is an error: nothing of it is changed.
    pub async fn ensure_engine_app(
        &self,
        organization_id: Uuid,
        app_id: &str,
        volume: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO app (id, organization_id, name) VALUES ($1, $2, $1) ON CONFLICT DO NOTHING",
            &[&app_id, &organization_id],
        )
        .await?;
        let owner: Uuid = tx
            .query_one("SELECT organization_id FROM app WHERE id = $1", &[&app_id])
            .await?
            .get(0);
        if owner != organization_id {
            return Err(StoreError::Corrupt(format!(
                "the app id {app_id:?} is reserved for the engine's own database, but organization \
                 {owner} holds it: self_backup stays off until that app is renamed"
            )));
        }
        tx.execute(
            "DELETE FROM volume WHERE app_id = $1 AND name <> $2",
            &[&app_id, &volume],
        )
        .await?;
        tx.execute(
            "INSERT INTO volume (app_id, name, persistent, kind) VALUES ($1, $2, true, 'engine')
             ON CONFLICT (app_id, name) DO UPDATE SET persistent = true, kind = 'engine'",
            &[&app_id, &volume],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables a job if it exists.
    pub async fn disable_job(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE backup_job SET enabled = false, updated_at = now() WHERE id = $1 AND enabled",
                &[&id],
            )
            .await?;
        Ok(())
    }
}

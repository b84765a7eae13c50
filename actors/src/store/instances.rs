//! engine_instance: the engine processes sharing this database, so that a sweep can tell the
//! helper containers of a dead engine from those of a live one.

use std::collections::HashMap;
use std::time::Duration;

use super::{Store, StoreError};

/// Rows of instances gone for this long are deleted; their helpers, if any are still left, are
/// then unknown and never touched.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

impl Store {
    /// Records that `instance` is alive now (registering it on the first call).
    pub async fn heartbeat_instance(&self, instance: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "INSERT INTO engine_instance (id) VALUES ($1)
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
                &[&instance],
            )
            .await?;
        Ok(())
    }

    /// Records that `instance` stopped: its helpers may be removed by anyone from now on.
    pub async fn stop_instance(&self, instance: &str) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE engine_instance SET stopped_at = now() WHERE id = $1",
                &[&instance],
            )
            .await?;
        Ok(())
    }

    /// Whether each of `instances` that this database knows is alive: not stopped and a
    /// heartbeat within `lease`. Instances it does not know are left out of the answer.
    pub async fn instances_alive(
        &self,
        instances: &[String],
        lease: Duration,
    ) -> Result<HashMap<String, bool>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, stopped_at IS NULL
                        AND heartbeat_at >= now() - make_interval(secs => $2)
                 FROM engine_instance WHERE id = ANY($1)",
                &[&instances, &lease.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Deletes the rows of instances that have been gone for a week.
    pub async fn forget_old_instances(&self) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "DELETE FROM engine_instance
                 WHERE heartbeat_at < now() - make_interval(secs => $1)",
                &[&FORGET_AFTER.as_secs_f64()],
            )
            .await?)
    }
}

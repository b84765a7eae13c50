//! verification: one row per verification of a backup, and the backup's `verified_at` /
//! `verify_outcome`, written together when a verification ends.

use std::time::Duration;

use tokio_postgres::Row;
use uuid::Uuid;

use super::backups::log_line;
use super::{Store, StoreError};
use crate::model::{Status, Verification};

const COLUMNS: &str =
    "id, organization_id, backup_id, status, log, checked, started_at, finished_at, created_at";

fn verification_row(row: &Row) -> Result<Verification, StoreError> {
    let status: String = row.get("status");
    Ok(Verification {
        id: row.get("id"),
        organization_id: row.get("organization_id"),
        backup_id: row.get("backup_id"),
        status: Status::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        log: row.get("log"),
        checked: row.get("checked"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        created_at: row.get("created_at"),
    })
}

impl Store {
    /// A `pending` verification of a backup of `organization_id`; `claimed_by` set when the
    /// asking process performs it itself (the CLI), else any scheduler instance claims it.
    pub async fn insert_verification(
        &self,
        organization_id: Uuid,
        backup_id: Uuid,
        claimed_by: Option<&str>,
    ) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO verification (organization_id, backup_id, log, claimed_by, heartbeat_at)
                 VALUES ($1, $2, $3, $4, now()) RETURNING id",
                &[&organization_id, &backup_id, &log_line("queued"), &claimed_by],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Claims the oldest unclaimed verification for `instance`.
    pub async fn claim_verification(&self, instance: &str) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "UPDATE verification SET claimed_by = $1, heartbeat_at = now()
                 WHERE id = (SELECT id FROM verification
                             WHERE claimed_by IS NULL AND status = 'pending'
                             ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
                 RETURNING id",
                &[&instance],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// `pending` → `running`; false when it is not `pending` any more (nothing to do then).
    pub async fn mark_verification_running(&self, id: Uuid) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "UPDATE verification SET status = 'running', started_at = now(),
                    heartbeat_at = now(), log = log || $2
                 WHERE id = $1 AND status = 'pending'",
                &[&id, &log_line("started")],
            )
            .await?;
        Ok(n == 1)
    }

    /// Appends a line and records what it checked (when `checked` is set); refreshes the heartbeat.
    pub async fn append_verification_log(
        &self,
        id: Uuid,
        line: &str,
        checked: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE verification SET log = log || $2, heartbeat_at = now(),
                    checked = CASE WHEN $3::text IS NULL THEN checked
                                   ELSE array_append(checked, $3::text) END
                 WHERE id = $1",
                &[&id, &log_line(line), &checked],
            )
            .await?;
        Ok(())
    }

    pub async fn heartbeat_verification(&self, id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE verification SET heartbeat_at = now()
                 WHERE id = $1 AND status IN ('pending', 'running')",
                &[&id],
            )
            .await?;
        Ok(())
    }

    /// Ends a verification and, in the same transaction, records its outcome on the backup row:
    /// `intact` Some(true) → `ok`, Some(false) → `failed`, None (it could not verify: the target
    /// did not answer) → the backup's outcome stays as it was. A verification that is no longer
    /// unfinished is left alone.
    pub async fn finish_verification(
        &self,
        id: Uuid,
        intact: Option<bool>,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let status = if intact == Some(true) {
            "success"
        } else {
            "failed"
        };
        let row = tx
            .query_opt(
                "UPDATE verification SET status = $2, finished_at = now(), log = log || $3
                 WHERE id = $1 AND status IN ('pending', 'running') RETURNING backup_id",
                &[&id, &status, &log_line(message)],
            )
            .await?;
        if let (Some(row), Some(intact)) = (row, intact) {
            let backup: Uuid = row.get(0);
            let outcome = if intact { "ok" } else { "failed" };
            tx.execute(
                "UPDATE backup SET verified_at = now(), verify_outcome = $2 WHERE id = $1",
                &[&backup, &outcome],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn verification(&self, id: Uuid) -> Result<Verification, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM verification WHERE id = $1"),
                &[&id],
            )
            .await?
            .ok_or(StoreError::NotFound {
                what: "verification",
                id: id.to_string(),
            })?;
        verification_row(&row)
    }

    /// Fails verifications whose engine stopped (no heartbeat within the lease); the backup's
    /// outcome is not changed by them: nothing was found wrong with it.
    pub async fn fail_abandoned_verifications(&self, lease: Duration) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE verification SET status = 'failed', finished_at = now(), log = log || $2
                 WHERE status IN ('pending', 'running') AND claimed_by IS NOT NULL
                   AND heartbeat_at < now() - make_interval(secs => $1)",
                &[
                    &lease.as_secs_f64(),
                    &log_line("failed: engine stopped during the verification (no heartbeat within the lease)"),
                ],
            )
            .await?)
    }
}

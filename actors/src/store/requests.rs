//! run_request and restore claims: work asked for by the HTTP control plane or the deploy pipeline,
//! done by whichever instance runs the scheduler role and claims it first.

use std::time::Duration;

use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::RunReason;

/// A claimed request to run a job now.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The run's id, known to the requester before the run starts.
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub reason: RunReason,
    pub request_id: Option<String>,
}

impl Store {
    /// Asks for a run of `job_id`; returns the id the run will have.
    pub async fn request_run(
        &self,
        job_id: Uuid,
        reason: RunReason,
        request_id: Option<&str>,
    ) -> Result<Uuid, StoreError> {
        let client = self.pool().get().await?;
        let run_id = Uuid::new_v4();
        client
            .execute(
                "INSERT INTO run_request (id, job_id, reason, request_id) VALUES ($1, $2, $3, $4)",
                &[&run_id, &job_id, &reason.as_str(), &request_id],
            )
            .await?;
        Ok(run_id)
    }

    /// Claims the oldest unclaimed run request for `instance`.
    pub async fn claim_run_request(
        &self,
        instance: &str,
    ) -> Result<Option<RunRequest>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "UPDATE run_request SET claimed_at = now(), claimed_by = $1
                 WHERE id = (SELECT id FROM run_request WHERE claimed_at IS NULL
                             ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
                 RETURNING id, job_id, reason, request_id",
                &[&instance],
            )
            .await?;
        row.map(|r| {
            let reason: String = r.get(2);
            Ok(RunRequest {
                run_id: r.get(0),
                job_id: r.get(1),
                reason: RunReason::parse(&reason)
                    .ok_or_else(|| StoreError::Corrupt(format!("run reason {reason}")))?,
                request_id: r.get(3),
            })
        })
        .transpose()
    }

    /// Claims the oldest pending, unclaimed restore for `instance`.
    pub async fn claim_restore(&self, instance: &str) -> Result<Option<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "UPDATE restore SET claimed_by = $1, heartbeat_at = now()
                 WHERE id = (SELECT id FROM restore WHERE claimed_by IS NULL AND status = 'pending'
                             ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
                 RETURNING id",
                &[&instance],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Claims one restore by id (for a restore performed by the process that asked for it).
    pub async fn claim_restore_by_id(&self, id: Uuid, instance: &str) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "UPDATE restore SET claimed_by = $2, heartbeat_at = now()
                 WHERE id = $1 AND claimed_by IS NULL",
                &[&id, &instance],
            )
            .await?
            == 1)
    }

    /// The deploy pipeline's `requestId` of a run it asked for; None for any other run.
    pub async fn deploy_request_id(&self, run_id: Uuid) -> Result<Option<String>, StoreError> {
        let client = self.pool().get().await?;
        let row = client
            .query_opt(
                "SELECT request_id FROM run_request WHERE id = $1 AND reason = 'deploy'",
                &[&run_id],
            )
            .await?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Records that the run of a request has ended (however it ended).
    pub async fn finish_run_request(&self, run_id: Uuid) -> Result<(), StoreError> {
        let client = self.pool().get().await?;
        client
            .execute(
                "UPDATE run_request SET finished_at = now() WHERE id = $1 AND finished_at IS NULL",
                &[&run_id],
            )
            .await?;
        Ok(())
    }

    /// Hands back requests and restores claimed by an engine that died before it recorded any
    /// work: a claimed, unfinished run request older than `lease` whose run has no rows, and a
    /// claimed restore still `pending` with no heartbeat within `lease`. Returns how many.
    pub async fn release_abandoned_claims(&self, lease: Duration) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        let secs = lease.as_secs_f64();
        let runs = client
            .execute(
                "UPDATE run_request r SET claimed_at = NULL, claimed_by = NULL
                 WHERE r.claimed_at < now() - make_interval(secs => $1) AND r.finished_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM backup b WHERE b.run_id = r.id)",
                &[&secs],
            )
            .await?;
        let restores = client
            .execute(
                "UPDATE restore SET claimed_by = NULL
                 WHERE status = 'pending' AND claimed_by IS NOT NULL
                   AND heartbeat_at < now() - make_interval(secs => $1)",
                &[&secs],
            )
            .await?;
        Ok(runs + restores)
    }
}

//! run_request and restore claims: work asked for by the HTTP control plane or the deploy pipeline,
//! done by whichever instance runs the scheduler role and claims it first.

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
                "UPDATE restore SET claimed_by = $1
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
                "UPDATE restore SET claimed_by = $2 WHERE id = $1 AND claimed_by IS NULL",
                &[&id, &instance],
            )
            .await?
            == 1)
    }
}

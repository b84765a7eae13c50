//! Verifications: `POST …/backups/history/{backupId}/verify` queues a verification of a successful
//! backup that a scheduler-role instance claims and performs (its object downloaded, its size and
//! sha256 checked, its content read to the end); `GET …/backups/verifications/{id}` shows its
//! status, log and what it checked. The backup's `verifiedAt` / `verifyOutcome` show the newest.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;
use vardo_actors::model::Status;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::history::{owned, BackupStatus};
use super::jobs::Accepted;
use super::State;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub id: Uuid,
    pub backup_id: Uuid,
    /// pending, running, success (the backup is intact) or failed (the log's last line says why).
    pub status: BackupStatus,
    pub log: String,
    /// What was checked, in order: `object`, `sha256`, then `tar entries` or `sql dump`.
    pub checked: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Verifies a successful backup: nothing is restored or changed.
#[utoipa::path(
    tag = "verifications",
    params(("orgId" = Uuid, Path), ("backupId" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
#[post("/organizations/{orgId}/backups/history/{backupId}/verify")]
pub async fn create_verification(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, backup_id) = path.into_inner();
    who.organization(&state, org).await?;
    let backup = owned(&state, org, backup_id).await?;
    if backup.status != Status::Success {
        return Err(ApiError::conflict(
            format!(
                "only a successful backup can be verified; this one is {}",
                backup.status.as_str()
            ),
            None,
        ));
    }
    let id = state
        .engine
        .store()
        .insert_verification(org, backup_id, None)
        .await?;
    Ok(HttpResponse::Accepted().json(Accepted { id }))
}

/// A verification's status, log and what it checked.
#[utoipa::path(
    tag = "verifications",
    params(("orgId" = Uuid, Path), ("verificationId" = Uuid, Path)),
    responses((status = 200, body = Verification), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/verifications/{verificationId}")]
pub async fn get_verification(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    let v = state.engine.store().verification(id).await?;
    // Another organization's verification does not exist for this caller.
    if v.organization_id != org {
        return Err(ApiError::NotFound("verification"));
    }
    Ok(HttpResponse::Ok().json(Verification {
        id: v.id,
        backup_id: v.backup_id,
        status: v.status.into(),
        log: v.log,
        checked: v.checked,
        started_at: v.started_at,
        finished_at: v.finished_at,
        created_at: v.created_at,
    }))
}

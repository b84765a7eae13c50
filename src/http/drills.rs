//! Drills: `POST …/backups/jobs/{jobId}/drill` queues a drill of the job — its newest backups
//! restored into scratch volumes and containers, then checked — that a scheduler-role instance
//! claims and performs; `GET …/backups/drills/{id}` shows its status and log. The job shows the
//! newest drill's `lastDrillAt` / `lastDrillOutcome`.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::history::BackupStatus;
use super::jobs::{owned, Accepted};
use super::State;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drill {
    pub id: Uuid,
    pub job_id: Uuid,
    /// pending, running, success (every volume restored and checked) or failed (the log says
    /// why).
    pub status: BackupStatus,
    /// `schedule` or `manual`.
    pub reason: String,
    pub log: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Drills the job now: nothing live is restored into or changed.
#[utoipa::path(
    tag = "drills",
    params(("orgId" = Uuid, Path), ("jobId" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[post("/organizations/{orgId}/backups/jobs/{jobId}/drill")]
pub async fn create_drill(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, job) = path.into_inner();
    who.organization(&state, org).await?;
    owned(&state, org, job).await?;
    let id = state.engine.store().insert_drill(org, job, None).await?;
    Ok(HttpResponse::Accepted().json(Accepted { id }))
}

/// A drill's status and log.
#[utoipa::path(
    tag = "drills",
    params(("orgId" = Uuid, Path), ("drillId" = Uuid, Path)),
    responses((status = 200, body = Drill), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/drills/{drillId}")]
pub async fn get_drill(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    let d = state.engine.store().drill(id).await?;
    // Another organization's drill does not exist for this caller.
    if d.organization_id != org {
        return Err(ApiError::NotFound("drill"));
    }
    Ok(HttpResponse::Ok().json(Drill {
        id: d.id,
        job_id: d.job_id,
        status: d.status.into(),
        reason: d.reason,
        log: d.log,
        started_at: d.started_at,
        finished_at: d.finished_at,
        created_at: d.created_at,
    }))
}

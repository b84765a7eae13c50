//! Runs that backed up nothing: `/api/v1/organizations/{orgId}/backups/runs` — the runs that
//! ended without a single backup row (no target resolved, no persistent volume, an error before
//! the rows), newest first, with their reason. A run with rows is told by its rows in the history.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vardo_actors::model::{RunFailureReason, RunRecord};

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::history::BackupStatus;
use super::json::{self, ApiQuery};
use super::State;

/// Why a run backed up nothing.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunReasonCode {
    /// No backup target resolves for the job.
    NoTarget,
    /// The job covers no persistent volume.
    NoVolumes,
    /// The run stopped before it recorded its volumes.
    Error,
}

impl From<RunFailureReason> for RunReasonCode {
    fn from(r: RunFailureReason) -> Self {
        match r {
            RunFailureReason::NoTarget => Self::NoTarget,
            RunFailureReason::NoVolumes => Self::NoVolumes,
            RunFailureReason::Error => Self::Error,
        }
    }
}

/// A run that ended without any backup row.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunItem {
    /// The run's id (the id `POST …/jobs/{jobId}/run` answered).
    pub id: Uuid,
    /// Null once the job is deleted (the record stays).
    pub job_id: Option<Uuid>,
    /// Always `failed`: nothing was backed up.
    pub status: BackupStatus,
    pub reason: RunReasonCode,
    pub message: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub items: Vec<RunItem>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct RunParams {
    pub job_id: Option<Uuid>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn view(r: RunRecord) -> RunItem {
    RunItem {
        id: r.id,
        job_id: r.job_id,
        status: BackupStatus::Failed,
        reason: r.reason.into(),
        message: r.message,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }
}

/// Lists the runs that backed up nothing, newest first.
#[utoipa::path(
    tag = "history",
    params(("orgId" = Uuid, Path), RunParams),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/runs")]
pub async fn list_runs(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    q: ApiQuery<RunParams>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let q = q.0;
    let limit = json::limit(q.limit)?;
    let before = json::decode_cursor(q.cursor.as_deref())?;
    let runs = state
        .engine
        .store()
        .list_runs(org, q.job_id, before, limit)
        .await?;
    let next_cursor = json::next_cursor(&runs, limit, |r| json::encode_cursor(r.finished_at, r.id));
    Ok(HttpResponse::Ok().json(RunList {
        items: runs.into_iter().map(view).collect(),
        next_cursor,
    }))
}

//! Restores: `POST …/backups/history/{backupId}/restore` queues a restore that a scheduler-role
//! instance claims and performs; `GET …/backups/restores/{restoreId}` shows its status and log.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use vardo_actors::model::Status;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::history::{owned, BackupStatus};
use super::jobs::Accepted;
use super::json;
use super::State;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restore {
    pub id: Uuid,
    pub backup_id: Uuid,
    /// The safety backup of the contents this restore replaced (reason `pre-restore`): restore
    /// it to undo this restore. Null when none was taken (asked not to, or no volume existed).
    pub pre_restore_backup_id: Option<Uuid>,
    /// pending, running, success or failed.
    pub status: BackupStatus,
    pub log: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The optional body of a restore request.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreInput {
    /// Back up the contents the restore replaces first (default true); false for very large
    /// volumes whose current contents need no keeping.
    pub safety_backup: Option<bool>,
}

/// Restores a successful backup into its volume (the app is not restarted). First, unless the body
/// says `{"safetyBackup": false}`, the volume's current contents are backed up to the same target,
/// so that the restore can be undone.
#[utoipa::path(
    tag = "restores",
    params(("orgId" = Uuid, Path), ("backupId" = Uuid, Path)),
    request_body(content = Option<RestoreInput>, content_type = "application/json"),
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody))
)]
#[post("/organizations/{orgId}/backups/history/{backupId}/restore")]
pub async fn create_restore(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (org, backup_id) = path.into_inner();
    who.organization(&state, org).await?;
    let input: RestoreInput = if body.iter().all(u8::is_ascii_whitespace) {
        RestoreInput::default()
    } else {
        json::parse_json(&body)?
    };
    let backup = owned(&state, org, backup_id).await?;
    if backup.status != Status::Success {
        return Err(ApiError::conflict(
            format!(
                "only a successful backup can be restored; this one is {}",
                backup.status.as_str()
            ),
            None,
        ));
    }
    let id = state
        .engine
        .store()
        .insert_restore(org, backup_id, input.safety_backup.unwrap_or(true))
        .await?;
    Ok(HttpResponse::Accepted().json(Accepted { id }))
}

/// A restore's status and log.
#[utoipa::path(
    tag = "restores",
    params(("orgId" = Uuid, Path), ("restoreId" = Uuid, Path)),
    responses((status = 200, body = Restore), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/restores/{restoreId}")]
pub async fn get_restore(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    let store = state.engine.store();
    if store.restore_organization(id).await? != org {
        return Err(ApiError::NotFound("restore"));
    }
    let r = store.restore(id).await?;
    Ok(HttpResponse::Ok().json(Restore {
        id: r.id,
        backup_id: r.backup_id,
        pre_restore_backup_id: r.pre_restore_backup_id,
        status: r.status.into(),
        log: r.log,
        started_at: r.started_at,
        finished_at: r.finished_at,
    }))
}

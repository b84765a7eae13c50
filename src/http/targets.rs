//! Backup targets: `/api/v1/organizations/{orgId}/backups/targets` (an organization's targets;
//! the list and reads include the system targets, read-only) and `/api/v1/system/backups/targets`
//! (system targets, admin token). Secrets are sealed at rest and masked in every response; a PUT
//! that sends the mask back keeps the stored secret.

use actix_web::{delete, get, post, put, web, HttpResponse};
use uuid::Uuid;
use vardo_actors::store::{TargetDelete, TargetRecord};

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::{self, ApiJson, ApiQuery};
use super::organizations::PageParams;
use super::targets_json::{prepare, view, Target, TargetInput, TargetList};
use super::State;

fn name_conflict(e: vardo_actors::store::StoreError) -> ApiError {
    match ApiError::from(e) {
        ApiError::Conflict { .. } => {
            ApiError::conflict("a target with that name exists", Some("name"))
        }
        other => other,
    }
}

async fn list(state: &State, owner: Option<Uuid>, q: PageParams) -> Result<HttpResponse, ApiError> {
    let limit = json::limit(q.limit)?;
    let after = json::decode_cursor(q.cursor.as_deref())?;
    let rows = state
        .engine
        .store()
        .list_target_records(owner, after, limit)
        .await?;
    let next_cursor = json::next_cursor(&rows, limit, |t| {
        json::encode_cursor(t.created_at, t.row.id)
    });
    Ok(HttpResponse::Ok().json(TargetList {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }))
}

pub(crate) async fn create(
    state: &State,
    owner: Option<Uuid>,
    input: TargetInput,
) -> Result<HttpResponse, ApiError> {
    let write = prepare(state, input, None, None)?;
    let store = state.engine.store();
    let id = store
        .insert_sealed_target(owner, &write)
        .await
        .map_err(name_conflict)?;
    Ok(HttpResponse::Created().json(view(store.target_record(id).await?)))
}

/// Loads a target the caller may read in `owner`'s scope; `None` = the system scope.
async fn visible(state: &State, owner: Option<Uuid>, id: Uuid) -> Result<TargetRecord, ApiError> {
    let record = state.engine.store().target_record(id).await?;
    match (owner, record.row.organization_id) {
        (_, None) => Ok(record),
        (Some(o), Some(t)) if o == t => Ok(record),
        _ => Err(ApiError::NotFound("target")),
    }
}

/// Loads a target the caller may change in `owner`'s scope.
async fn writable(state: &State, owner: Option<Uuid>, id: Uuid) -> Result<TargetRecord, ApiError> {
    let record = visible(state, owner, id).await?;
    if owner.is_some() && record.row.organization_id.is_none() {
        return Err(ApiError::Forbidden(
            "system targets are read-only here (the admin changes them under /api/v1/system/backups/targets)"
                .to_owned(),
        ));
    }
    Ok(record)
}

pub(crate) async fn update(
    state: &State,
    owner: Option<Uuid>,
    id: Uuid,
    input: TargetInput,
) -> Result<HttpResponse, ApiError> {
    let record = writable(state, owner, id).await?;
    let write = prepare(
        state,
        input,
        Some(&record.row.sealed_config),
        Some(&record.row.encryption),
    )?;
    let updated = state
        .engine
        .store()
        .update_target(id, owner, &write)
        .await
        .map_err(name_conflict)?;
    Ok(HttpResponse::Ok().json(view(updated)))
}

pub(crate) async fn remove(
    state: &State,
    owner: Option<Uuid>,
    id: Uuid,
) -> Result<HttpResponse, ApiError> {
    writable(state, owner, id).await?;
    match state.engine.store().delete_target(id, owner).await? {
        TargetDelete::Deleted => Ok(HttpResponse::NoContent().finish()),
        TargetDelete::NotFound => Err(ApiError::NotFound("target")),
        TargetDelete::InUse(jobs) => {
            let names: Vec<String> = jobs
                .iter()
                .map(|(id, name)| format!("{name} ({id})"))
                .collect();
            Err(ApiError::conflict(
                format!("the target is used by jobs: {}", names.join(", ")),
                None,
            ))
        }
    }
}

/// Lists the organization's targets and the system targets, oldest first.
#[utoipa::path(
    tag = "targets",
    params(("orgId" = Uuid, Path), PageParams),
    responses((status = 200, body = TargetList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/targets")]
pub async fn list_targets(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    q: ApiQuery<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    list(&state, Some(org), q.0).await
}

/// Creates a target of the organization.
#[utoipa::path(
    tag = "targets",
    params(("orgId" = Uuid, Path)),
    request_body = TargetInput,
    responses((status = 201, body = Target), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody))
)]
#[post("/organizations/{orgId}/backups/targets")]
pub async fn create_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    body: ApiJson<TargetInput>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    create(&state, Some(org), body.0).await
}

/// Reads a target (the organization's or a system target).
#[utoipa::path(
    tag = "targets",
    params(("orgId" = Uuid, Path), ("targetId" = Uuid, Path)),
    responses((status = 200, body = Target), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/targets/{targetId}")]
pub async fn get_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    Ok(HttpResponse::Ok().json(view(visible(&state, Some(org), id).await?)))
}

/// Replaces a target; `isDefault: true` clears it on the organization's other targets.
#[utoipa::path(
    tag = "targets",
    params(("orgId" = Uuid, Path), ("targetId" = Uuid, Path)),
    request_body = TargetInput,
    responses((status = 200, body = Target), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody))
)]
#[put("/organizations/{orgId}/backups/targets/{targetId}")]
pub async fn update_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
    body: ApiJson<TargetInput>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    update(&state, Some(org), id, body.0).await
}

/// Deletes a target; 409 naming the jobs that still use it.
#[utoipa::path(
    tag = "targets",
    params(("orgId" = Uuid, Path), ("targetId" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
#[delete("/organizations/{orgId}/backups/targets/{targetId}")]
pub async fn delete_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    remove(&state, Some(org), id).await
}

/// Lists the system targets (admin token).
#[utoipa::path(
    tag = "administration",
    params(PageParams),
    responses((status = 200, body = TargetList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
#[get("/system/backups/targets")]
pub async fn list_system_targets(
    state: web::Data<State>,
    who: Principal,
    q: ApiQuery<PageParams>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    list(&state, None, q.0).await
}

/// Creates a system target (admin token).
#[utoipa::path(
    tag = "administration",
    request_body = TargetInput,
    responses((status = 201, body = Target), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody))
)]
#[post("/system/backups/targets")]
pub async fn create_system_target(
    state: web::Data<State>,
    who: Principal,
    body: ApiJson<TargetInput>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    create(&state, None, body.0).await
}

/// Reads a system target (admin token).
#[utoipa::path(
    tag = "administration",
    params(("targetId" = Uuid, Path)),
    responses((status = 200, body = Target), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/system/backups/targets/{targetId}")]
pub async fn get_system_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    Ok(HttpResponse::Ok().json(view(visible(&state, None, path.into_inner()).await?)))
}

/// Replaces a system target (admin token).
#[utoipa::path(
    tag = "administration",
    params(("targetId" = Uuid, Path)),
    request_body = TargetInput,
    responses((status = 200, body = Target), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody))
)]
#[put("/system/backups/targets/{targetId}")]
pub async fn update_system_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    body: ApiJson<TargetInput>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    update(&state, None, path.into_inner(), body.0).await
}

/// Deletes a system target (admin token); 409 naming the jobs that still use it.
#[utoipa::path(
    tag = "administration",
    params(("targetId" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
#[delete("/system/backups/targets/{targetId}")]
pub async fn delete_system_target(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    remove(&state, None, path.into_inner()).await
}

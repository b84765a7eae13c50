//! Apps: `/api/v1/organizations/{orgId}/apps/{appId}` — the registry of what can be backed up: an
//! app's name and its volumes (`persistent` ones are backed up; `kind` picks tar or pg_dump). The
//! deploy pipeline feeds the same registry.

use actix_web::{delete, get, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use vardo_actors::model::{App as AppModel, Volume as VolumeModel, VolumeKind};
use vardo_actors::store::AppPut;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::{self, ApiJson, ApiQuery};
use super::organizations::PageParams;
use super::State;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    #[default]
    Generic,
    Postgres,
    /// The engine's own database (the system organization only); never accepted as input.
    #[serde(skip_deserializing)]
    Engine,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Docker volume `{appName}-blue_{name}` (or `-green_`) holds it.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    pub name: String,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub persistent: bool,
    #[serde(default)]
    pub kind: VolumeType,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppInput {
    /// Used in Docker volume names and storage keys.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    pub name: String,
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppList {
    pub items: Vec<App>,
    pub next_cursor: Option<String>,
}

/// Docker-safe: starts with a letter or digit, then letters, digits, `_`, `.`, `-`; ≤ 128 chars.
fn docker_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn view(a: AppModel) -> App {
    App {
        id: a.id,
        name: a.name,
        volumes: a
            .volumes
            .into_iter()
            .map(|v| Volume {
                name: v.name,
                persistent: v.persistent,
                kind: match v.kind {
                    VolumeKind::Generic => VolumeType::Generic,
                    VolumeKind::Postgres => VolumeType::Postgres,
                    VolumeKind::Engine => VolumeType::Engine,
                },
            })
            .collect(),
    }
}

/// An app id the database can hold; any other names no app.
fn check_id(id: &str) -> Result<(), ApiError> {
    // The engine's own database's app is the system organization's, never a tenant's.
    if id.is_empty()
        || id.len() > 200
        || id.chars().any(char::is_control)
        || id == vardo_actors::self_backup::ENGINE_APP_ID
    {
        return Err(ApiError::NotFound("app"));
    }
    Ok(())
}

/// The organization's app, or 404.
async fn owned(state: &State, org: Uuid, id: &str) -> Result<AppModel, ApiError> {
    check_id(id)?;
    let app = state.engine.store().app(id).await?;
    if app.organization_id != org {
        return Err(ApiError::NotFound("app"));
    }
    Ok(app)
}

/// Lists the organization's apps by id.
#[utoipa::path(
    tag = "apps",
    params(("orgId" = Uuid, Path), PageParams),
    responses((status = 200, body = AppList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/apps")]
pub async fn list_apps(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    q: ApiQuery<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let limit = json::limit(q.0.limit)?;
    let after = json::decode_key_cursor(q.0.cursor.as_deref())?;
    let store = state.engine.store();
    let ids = store.list_app_ids(org, after.as_deref(), limit).await?;
    let next_cursor = json::next_cursor(&ids, limit, |id| json::encode_key_cursor(id));
    let mut items = Vec::with_capacity(ids.len());
    for id in &ids {
        items.push(view(store.app(id).await?));
    }
    Ok(HttpResponse::Ok().json(AppList { items, next_cursor }))
}

/// Creates or replaces an app and its volume list (201 when created).
#[utoipa::path(
    tag = "apps",
    params(("orgId" = Uuid, Path), ("appId" = String, Path)),
    request_body = AppInput,
    responses((status = 200, body = App), (status = 201, body = App),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody))
)]
#[put("/organizations/{orgId}/apps/{appId}")]
pub async fn put_app(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, String)>,
    body: ApiJson<AppInput>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    check_id(&id)?;
    let input = body.0;
    if !docker_name(&input.name) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in input.volumes.iter().enumerate() {
        let field = format!("volumes[{i}].name");
        if !docker_name(&v.name) {
            return Err(ApiError::invalid(
                &field,
                format!("{field}: 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit"),
            ));
        }
        if !seen.insert(v.name.as_str()) {
            return Err(ApiError::invalid(
                &field,
                format!("{field}: {:?} appears twice", v.name),
            ));
        }
    }
    let app = AppModel {
        id: id.clone(),
        organization_id: org,
        name: input.name,
        volumes: input
            .volumes
            .into_iter()
            .map(|v| VolumeModel {
                name: v.name,
                persistent: v.persistent,
                kind: match v.kind {
                    VolumeType::Generic => VolumeKind::Generic,
                    VolumeType::Postgres => VolumeKind::Postgres,
                    VolumeType::Engine => VolumeKind::Generic,
                },
            })
            .collect(),
    };
    let store = state.engine.store();
    let outcome = match store.put_app_for_org(&app).await {
        Err(vardo_actors::store::StoreError::NameTaken(taken)) => {
            let field = app
                .volumes
                .iter()
                .position(|v| v.name == taken.volume_name)
                .map(|i| format!("volumes[{i}].name"));
            return Err(ApiError::conflict(taken.to_string(), field.as_deref()));
        }
        other => other?,
    };
    let body = view(store.app(&id).await?);
    match outcome {
        AppPut::Created => Ok(HttpResponse::Created().json(body)),
        AppPut::Updated => Ok(HttpResponse::Ok().json(body)),
        // Another organization's id: answered like any unknown resource.
        AppPut::Foreign => Err(ApiError::NotFound("app")),
    }
}

/// Reads an app.
#[utoipa::path(
    tag = "apps",
    params(("orgId" = Uuid, Path), ("appId" = String, Path)),
    responses((status = 200, body = App), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/apps/{appId}")]
pub async fn get_app(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    Ok(HttpResponse::Ok().json(view(owned(&state, org, &id).await?)))
}

/// Deletes an app (jobs stop covering it; its history rows stay).
#[utoipa::path(
    tag = "apps",
    params(("orgId" = Uuid, Path), ("appId" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[delete("/organizations/{orgId}/apps/{appId}")]
pub async fn delete_app(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, String)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    check_id(&id)?;
    if !state.engine.store().delete_app(org, &id).await? {
        return Err(ApiError::NotFound("app"));
    }
    Ok(HttpResponse::NoContent().finish())
}

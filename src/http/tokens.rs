//! `POST /api/v1/organizations/{orgId}/tokens` (admin token): a new organization token, shown in
//! this one response only; the database keeps its SHA-256.

use actix_web::{post, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{self, Principal};
use super::error::{ApiError, ErrorBody};
use super::State;

#[derive(Debug, Serialize, ToSchema)]
pub struct NewToken {
    pub id: Uuid,
    /// The bearer token. It is not stored and cannot be shown again.
    pub token: String,
}

/// Creates an organization token.
#[utoipa::path(
    tag = "administration",
    params(("orgId" = Uuid, Path, description = "organization id")),
    responses(
        (status = 201, body = NewToken),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
#[post("/organizations/{orgId}/tokens")]
pub async fn create_token(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    let org = path.into_inner();
    if org == vardo_actors::self_backup::SYSTEM_ORG_ID {
        // Its backups are the engine's whole database: only the admin token reads them.
        return Err(ApiError::conflict(
            "the system organization has no tokens: use the admin token",
            None,
        ));
    }
    let store = state.engine.store();
    store.organization_record(org).await?;
    let token = auth::new_token();
    let id = store
        .insert_api_token(org, &auth::token_hash(&token))
        .await?;
    tracing::info!(organization_id = %org, token_id = %id, "organization token created");
    Ok(HttpResponse::Created().json(NewToken { id, token }))
}

//! `/api/v1/organizations` (admin token): create and list organizations.

use actix_web::{get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vardo_actors::store::OrganizationRecord;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::{self, ApiJson, ApiQuery};
use super::State;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationInput {
    /// Lowercase letters, digits and dashes; used in storage keys. 1 to 63 characters.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub slug: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationList {
    pub items: Vec<Organization>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// `limit` (1–500, default 50) and `cursor` (from the previous page's `nextCursor`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl From<OrganizationRecord> for Organization {
    fn from(o: OrganizationRecord) -> Self {
        Self {
            id: o.id,
            slug: o.slug,
            name: o.name,
            created_at: o.created_at,
        }
    }
}

pub fn valid_slug(slug: &str) -> bool {
    let b = slug.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && !b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == b'-')
}

/// A display name: not blank, at most 200 characters, no control characters.
pub fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if name.chars().count() > 200 {
        return Err(ApiError::invalid(
            field,
            format!("{field} is longer than 200 characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Creates an organization.
#[utoipa::path(
    tag = "administration",
    request_body = OrganizationInput,
    responses(
        (status = 201, body = Organization),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
#[post("/organizations")]
pub async fn create_organization(
    state: web::Data<State>,
    who: Principal,
    body: ApiJson<OrganizationInput>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    let input = body.0;
    if input.slug == vardo_actors::self_backup::SYSTEM_ORG_SLUG {
        return Err(ApiError::invalid(
            "slug",
            "slug vardo-system is reserved for the system organization",
        ));
    }
    if !valid_slug(&input.slug) {
        return Err(ApiError::invalid(
            "slug",
            "slug must be 1 to 63 lowercase letters, digits or dashes, starting with a letter or digit",
        ));
    }
    check_name("name", &input.name)?;
    let org = state
        .engine
        .store()
        .insert_organization(&input.slug, &input.name)
        .await
        .map_err(|e| match ApiError::from(e) {
            ApiError::Conflict { .. } => {
                ApiError::conflict("an organization with that slug exists", Some("slug"))
            }
            other => other,
        })?;
    Ok(HttpResponse::Created().json(Organization::from(org)))
}

/// Lists organizations, oldest first.
#[utoipa::path(
    tag = "administration",
    params(PageParams),
    responses(
        (status = 200, body = OrganizationList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
#[get("/organizations")]
pub async fn list_organizations(
    state: web::Data<State>,
    who: Principal,
    query: ApiQuery<PageParams>,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    let limit = json::limit(query.0.limit)?;
    let after = json::decode_cursor(query.0.cursor.as_deref())?;
    let rows = state
        .engine
        .store()
        .list_organizations(after, limit)
        .await?;
    let next_cursor = json::next_cursor(&rows, limit, |o| json::encode_cursor(o.created_at, o.id));
    Ok(HttpResponse::Ok().json(OrganizationList {
        items: rows.into_iter().map(Organization::from).collect(),
        next_cursor,
    }))
}

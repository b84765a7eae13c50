//! Notification channels: `/api/v1/organizations/{orgId}/notifications/channels` — email,
//! webhook (HMAC-signed) and Slack. Webhook secrets and webhook/Slack URLs (they carry tokens) are
//! encrypted at rest and masked in responses.

use actix_web::{delete, get, post, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;
use vardo_actors::model::channel::secret_fields;
use vardo_actors::model::ChannelKind;
use vardo_actors::notify::validate_channel;
use vardo_actors::store::ChannelRow;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::{self, ApiJson, ApiQuery};
use super::organizations::PageParams;
use super::targets_json::MASK;
use super::State;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    Email,
    Webhook,
    Slack,
}

impl From<ChannelType> for ChannelKind {
    fn from(t: ChannelType) -> Self {
        match t {
            ChannelType::Email => Self::Email,
            ChannelType::Webhook => Self::Webhook,
            ChannelType::Slack => Self::Slack,
        }
    }
}

impl From<ChannelKind> for ChannelType {
    fn from(t: ChannelKind) -> Self {
        match t {
            ChannelKind::Email => Self::Email,
            ChannelKind::Webhook => Self::Webhook,
            ChannelKind::Slack => Self::Slack,
        }
    }
}

/// email: `{"to": ["ops@example.com"]}`; webhook: `{"url": "https://…", "secret": "…"}` (secret
/// optional; bodies are signed with HMAC-SHA256 when set); slack: `{"url": "https://hooks.slack.com/…"}`.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation only
pub struct ChannelConfigDoc {
    to: Option<Vec<String>>,
    url: Option<String>,
    secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub kind: ChannelType,
    #[schema(value_type = ChannelConfigDoc)]
    pub config: Value,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: Uuid,
    pub kind: ChannelType,
    /// `url` shows only its scheme and host; `secret` is masked.
    #[schema(value_type = ChannelConfigDoc)]
    pub config: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelList {
    pub items: Vec<Channel>,
    pub next_cursor: Option<String>,
}

/// `https://host/********`: enough to recognise the receiver, none of the token in the path.
fn mask_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            // userinfo may carry a password
            let host = host.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/{MASK}")
        }
        None => MASK.to_owned(),
    }
}

pub(crate) fn view(c: ChannelRow) -> Channel {
    let mut config = c.config;
    for field in secret_fields(c.kind) {
        if let Some(slot) = config.get_mut(*field) {
            if let Some(s) = slot.as_str() {
                *slot = Value::String(if *field == "url" {
                    mask_url(s)
                } else {
                    MASK.to_owned()
                });
            }
        }
    }
    Channel {
        id: c.id,
        kind: c.kind.into(),
        config,
        created_at: c.created_at,
    }
}

/// Lists the organization's channels, oldest first.
#[utoipa::path(
    tag = "notifications",
    params(("orgId" = Uuid, Path), PageParams),
    responses((status = 200, body = ChannelList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/notifications/channels")]
pub async fn list_channels(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    q: ApiQuery<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let limit = json::limit(q.0.limit)?;
    let after = json::decode_cursor(q.0.cursor.as_deref())?;
    // An organization has a handful of channels: page in memory over the store's ordered list.
    let rows: Vec<ChannelRow> = state
        .engine
        .store()
        .list_channels(org)
        .await?
        .into_iter()
        .filter(|c| after.is_none_or(|(t, id)| (c.created_at, c.id) > (t, id)))
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .collect();
    let next_cursor = json::next_cursor(&rows, limit, |c| json::encode_cursor(c.created_at, c.id));
    Ok(HttpResponse::Ok().json(ChannelList {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// Adds a channel.
#[utoipa::path(
    tag = "notifications",
    params(("orgId" = Uuid, Path)),
    request_body = ChannelInput,
    responses((status = 201, body = Channel), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody))
)]
#[post("/organizations/{orgId}/notifications/channels")]
pub async fn create_channel(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    body: ApiJson<ChannelInput>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let id = add_channel(&state, org, body.0).await?;
    let row = state
        .engine
        .store()
        .list_channels(org)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or(ApiError::NotFound("channel"))?;
    Ok(HttpResponse::Created().json(view(row)))
}

/// Checks a channel and stores it; its id.
pub(crate) async fn add_channel(
    state: &State,
    org: Uuid,
    input: ChannelInput,
) -> Result<Uuid, ApiError> {
    let kind: ChannelKind = input.kind.into();
    let allow_private = state
        .engine
        .settings()
        .notifications
        .allow_private_addresses;
    validate_channel(kind, &input.config, allow_private).map_err(|(field, message)| {
        let field = if field == "config" {
            field
        } else {
            format!("config.{field}")
        };
        ApiError::Invalid {
            message: format!("{field}: {message}"),
            field,
        }
    })?;
    Ok(state
        .engine
        .store()
        .insert_channel(org, kind, input.config)
        .await?)
}

/// Deletes a channel (its undelivered notices go with it).
#[utoipa::path(
    tag = "notifications",
    params(("orgId" = Uuid, Path), ("channelId" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[delete("/organizations/{orgId}/notifications/channels/{channelId}")]
pub async fn delete_channel(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    if !state.engine.store().delete_channel(org, id).await? {
        return Err(ApiError::NotFound("channel"));
    }
    Ok(HttpResponse::NoContent().finish())
}

//! Authentication: `Authorization: Bearer <token>` with the admin token (`VARDO_ADMIN_TOKEN`) or
//! an organization's token (only its SHA-256 is stored). A middleware on `/api/v1` resolves the
//! caller before any route runs, so a missing or bad token is a 401 whatever else is wrong with
//! the request; handlers then ask the [`Principal`] for the scope they need.

use std::future::{ready, Ready};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::ApiError;
use super::State;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Organization(Uuid),
}

/// Prefix of organization tokens, so a leaked one is recognisable.
const TOKEN_PREFIX: &str = "vardo_";

/// A new organization token: 32 random bytes, URL-safe base64.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What the database stores for a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two secrets in time independent of where they differ (both hashed to 32 bytes).
pub fn same_secret(a: &str, b: &[u8; 32]) -> bool {
    let a = Sha256::digest(a.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

async fn resolve(state: &State, token: &str) -> Result<Principal, ApiError> {
    if let Some(admin) = &state.admin_token_hash {
        if same_secret(token, admin) {
            return Ok(Principal::Admin);
        }
    }
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Err(ApiError::Unauthorized);
    }
    match state
        .engine
        .store()
        .organization_for_token(&token_hash(token))
        .await?
    {
        Some(org) => Ok(Principal::Organization(org)),
        None => Err(ApiError::Unauthorized),
    }
}

/// The middleware: resolves the caller or answers 401.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<State>>()
        .cloned()
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no state")))?;
    let token = bearer(&req).ok_or(ApiError::Unauthorized)?;
    let principal = resolve(&state, &token).await?;
    req.extensions_mut().insert(principal);
    next.call(req).await
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .copied()
                .ok_or(ApiError::Unauthorized),
        )
    }
}

impl Principal {
    /// Admin-only routes: an organization token gets 403.
    pub fn admin(&self) -> Result<(), ApiError> {
        match self {
            Self::Admin => Ok(()),
            Self::Organization(_) => Err(ApiError::Forbidden(
                "this route needs the admin token".to_owned(),
            )),
        }
    }

    /// Routes under `/organizations/{orgId}`: the organization's own token, or the admin token
    /// for an organization that exists. Anything else is a 404, so a caller never learns whether
    /// another organization exists.
    pub async fn organization(&self, state: &State, org: Uuid) -> Result<(), ApiError> {
        match self {
            Self::Organization(own) if *own == org => Ok(()),
            Self::Organization(_) => Err(ApiError::NotFound("organization")),
            Self::Admin => state
                .engine
                .store()
                .organization_record(org)
                .await
                .map(drop)
                .map_err(ApiError::from),
        }
    }
}

/// The admin token as the state keeps it: its SHA-256 only.
pub fn admin_token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let a = new_token();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_ne!(a, new_token());
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(token_hash(&a).len(), 64);
    }

    #[test]
    fn compares_secrets() {
        let h = admin_token_hash("s3cret");
        assert!(same_secret("s3cret", &h));
        assert!(!same_secret("s3cres", &h));
    }
}

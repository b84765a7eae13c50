//! Signing in to the Backups page: the form takes an organization token or the admin token and
//! exchanges it for a session cookie (HttpOnly, SameSite=Strict, Secure over TLS). Every form of
//! a session carries its CSRF token, checked before anything changes; the sign-in form carries a
//! one-time value that must match a cookie set with the form. The admin picks the organization to
//! look at.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use base64::Engine as _;
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{page, PageError, Refresh};
use crate::http::auth::{same_secret, token_hash};
use crate::http::State;

const SESSION_COOKIE: &str = "vardo_session";
const SIGNIN_COOKIE: &str = "vardo_signin";
/// A session ends this long after sign-in.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

fn random_value() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(value: &str) -> String {
    token_hash(value)
}

/// What an admin session keeps of the admin token: a hash of its hash, never the token.
fn admin_fingerprint(admin_token_hash: &[u8; 32]) -> String {
    hash(&hex::encode(admin_token_hash))
}

/// Equal in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    same_secret(a, &crate::http::auth::admin_token_hash(b))
}

/// The signed-in person.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub admin: bool,
    /// The organization shown (the admin may not have picked one yet).
    pub organization: Option<Uuid>,
    pub csrf: String,
    id_hash: String,
}

impl Viewer {
    /// The organization the page is about; the admin without one is sent to pick one.
    pub fn org(&self) -> Result<Uuid, PageError> {
        self.organization.ok_or(PageError::Forbidden(
            "Pick an organization on the overview first.".to_owned(),
        ))
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check(&self, csrf: &str) -> Result<(), PageError> {
        if same(csrf, &self.csrf) {
            Ok(())
        } else {
            Err(PageError::Forbidden(
                "This form is not from your session (or the session changed); reload the page and try again.".to_owned(),
            ))
        }
    }

    /// A POST's fields, once its CSRF token is this session's, and the organization it is about.
    pub fn form(&self, body: &[u8]) -> Result<(super::job_form::Fields, Uuid), PageError> {
        let fields = super::job_form::Fields::parse(body);
        self.check(fields.get("csrf"))?;
        Ok((fields, self.org()?))
    }

    pub fn who(&self) -> String {
        if self.admin {
            "signed in as admin".to_owned()
        } else {
            "signed in with an organization token".to_owned()
        }
    }
}

impl FromRequest for Viewer {
    type Error = PageError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, PageError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<State>>().cloned();
        let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        Box::pin(async move {
            let (Some(state), Some(cookie)) = (state, cookie) else {
                return Err(PageError::SignIn);
            };
            let id_hash = hash(&cookie);
            let session = state
                .engine
                .store()
                .web_session(&id_hash)
                .await?
                .ok_or(PageError::SignIn)?;
            // An admin session lasts only while the admin token it signed in with is the one
            // configured: a changed or removed admin token ends it.
            if session.admin {
                let current = state.admin_token_hash.as_ref().map(admin_fingerprint);
                let valid = match (current, session.admin_token.as_deref()) {
                    (Some(current), Some(kept)) => same(&current, kept),
                    _ => false,
                };
                if !valid {
                    return Err(PageError::SignIn);
                }
            }
            Ok(Viewer {
                admin: session.admin,
                organization: session.organization_id,
                csrf: session.csrf,
                id_hash,
            })
        })
    }
}

fn secure(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

fn cookie<'a>(req: &HttpRequest, name: &'a str, value: String, max_age: Duration) -> Cookie<'a> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure(req))
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        ))
        .finish()
}

fn signin_form(req: &HttpRequest, error: Option<&str>) -> HttpResponse {
    let value = random_value();
    let mut response = page(
        "Sign in",
        None,
        Refresh::No,
        html! {
            form.stack method="post" action="/signin" {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                input type="hidden" name="csrf" value=(value);
                label for="token" { "Organization token or admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    );
    let _ = response.add_cookie(&cookie(
        req,
        SIGNIN_COOKIE,
        value,
        Duration::from_secs(3600),
    ));
    response
}

pub async fn signin_page(req: HttpRequest) -> HttpResponse {
    signin_form(&req, None)
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
    csrf: String,
}

pub async fn signin(
    req: HttpRequest,
    state: web::Data<State>,
    form: web::Form<SignIn>,
) -> Result<HttpResponse, PageError> {
    let expected = req.cookie(SIGNIN_COOKIE).map(|c| c.value().to_owned());
    if !expected.is_some_and(|e| same(&form.csrf, &e)) {
        let mut response = signin_form(
            &req,
            Some("The sign-in form expired or did not come from this site; try again."),
        );
        *response.status_mut() = actix_web::http::StatusCode::FORBIDDEN;
        return Ok(response);
    }
    let token = form.token.trim();
    let session = random_value();
    let csrf = random_value();
    let store = state.engine.store();
    let admin = state
        .admin_token_hash
        .as_ref()
        .is_some_and(|h| !token.is_empty() && same_secret(token, h));
    // Signing in again ends the session the browser had.
    if let Some(old) = req.cookie(SESSION_COOKIE) {
        store.close_web_session(&hash(old.value())).await?;
    }
    let opened = if let (true, Some(h)) = (admin, state.admin_token_hash.as_ref()) {
        store
            .open_admin_session(&hash(&session), &admin_fingerprint(h), &csrf, SESSION_TTL)
            .await?;
        true
    } else if token.starts_with("vardo_") && token.len() <= 128 {
        store
            .open_token_session(&hash(&session), &token_hash(token), &csrf, SESSION_TTL)
            .await?
            .is_some()
    } else {
        false
    };
    if !opened {
        let mut response = signin_form(&req, Some("That token is not valid."));
        *response.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return Ok(response);
    }
    let mut gone = cookie(&req, SIGNIN_COOKIE, String::new(), Duration::ZERO);
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .cookie(cookie(&req, SESSION_COOKIE, session, SESSION_TTL))
        .cookie(gone)
        .finish())
}

#[derive(Deserialize)]
pub struct Csrf {
    pub csrf: String,
}

pub async fn signout(
    req: HttpRequest,
    state: web::Data<State>,
    viewer: Viewer,
    form: web::Form<Csrf>,
) -> Result<HttpResponse, PageError> {
    viewer.check(&form.csrf)?;
    state
        .engine
        .store()
        .close_web_session(&viewer.id_hash)
        .await?;
    let mut gone = cookie(&req, SESSION_COOKIE, String::new(), Duration::ZERO);
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/signin"))
        .cookie(gone)
        .finish())
}

#[derive(Deserialize)]
pub struct Pick {
    csrf: String,
    organization: Uuid,
}

/// The admin's organization switcher.
pub async fn pick_organization(
    state: web::Data<State>,
    viewer: Viewer,
    form: web::Form<Pick>,
) -> Result<HttpResponse, PageError> {
    viewer.check(&form.csrf)?;
    if !viewer.admin {
        return Err(PageError::Forbidden(
            "Only the admin switches organizations.".to_owned(),
        ));
    }
    let store = state.engine.store();
    store.organization_record(form.organization).await?;
    store
        .show_organization(&viewer.id_hash, form.organization)
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .finish())
}

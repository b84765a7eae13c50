//! The page shell (header, navigation, sign-out), the embedded stylesheet and script, the small
//! formatting helpers every page uses, and the error pages.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use vardo_actors::store::StoreError;

use super::session::Viewer;

const STYLE: &str = include_str!("style.css");
const SCRIPT: &str = include_str!("page.js");

pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(STYLE)
}

pub async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .body(SCRIPT)
}

/// How a page asks to be refreshed while something on it is still running.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    No,
    Every(u32),
}

/// A whole page: `title`, the signed-in viewer's navigation (none on the sign-in page), `body`.
pub fn page(title: &str, viewer: Option<&Viewer>, refresh: Refresh, body: Markup) -> HttpResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Refresh::Every(s) = refresh { meta http-equiv="refresh" content=(s); }
                title { (title) " · vardo-backup" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                header {
                    strong { "vardo-backup" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            a href="/" { "Overview" }
                            a href="/history" { "History" }
                            a href="/targets" { "Targets" }
                            a href="/channels" { "Notifications" }
                        }
                        span.muted { (v.who()) }
                        form.inline method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                script src="/static/page.js" defer {}
            }
        }
    };
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"));
    response.body(markup.into_string())
}

/// A time: UTC in the page, the viewer's own zone once the script ran.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// A time with how long ago (or how soon) it is.
pub fn when(t: DateTime<Utc>) -> Markup {
    html! { (time(t)) " " span.muted { "(" (relative(t, Utc::now())) ")" } }
}

pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, future) = (secs.unsigned_abs(), secs < 0);
    let amount = match n {
        0..=59 => {
            return if future {
                "in a moment".into()
            } else {
                "just now".into()
            }
        }
        60..=3599 => format!("{} min", n / 60),
        3600..=86_399 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

pub fn size(bytes: Option<i64>) -> String {
    let Some(b) = bytes else { return "—".into() };
    let b = b.max(0) as f64;
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    match (start, end) {
        (Some(s), Some(e)) => {
            let secs = (e - s).num_seconds().max(0);
            if secs < 60 {
                format!("{secs} s")
            } else {
                format!("{} min {} s", secs / 60, secs % 60)
            }
        }
        _ => "—".into(),
    }
}

pub fn badge(status: &str) -> Markup {
    html! { span class={"badge " (status)} { (status) } }
}

/// Why a page is not shown.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("sign in first")]
    SignIn,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::NotFound,
            e => Self::Internal(e.to_string()),
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn => StatusCode::SEE_OTHER,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::SignIn = self {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/signin"))
                .finish();
        }
        if let Self::Internal(detail) = self {
            tracing::error!(%detail, "page failed");
        }
        let title = match self {
            Self::NotFound => "Not found",
            Self::Forbidden(_) => "Not allowed",
            Self::BadRequest(_) => "Bad request",
            Self::Conflict(_) => "Cannot do that now",
            _ => "Something went wrong",
        };
        let message = match self {
            Self::NotFound => {
                "There is nothing here, or it belongs to another organization.".to_owned()
            }
            Self::Internal(_) => {
                "The engine could not show this page; its log says why.".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = page(
            title,
            None,
            Refresh::No,
            html! { p.error role="alert" { (message) } p { a href="/" { "Back to the overview" } } },
        );
        *response.status_mut() = self.status_code();
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_relative_times_read_like_a_person_writes_them() {
        assert_eq!(size(Some(512)), "512 B");
        assert_eq!(size(Some(1536)), "1.5 KiB");
        assert_eq!(size(None), "—");
        let now = Utc::now();
        assert_eq!(
            relative(now - chrono::Duration::minutes(5), now),
            "5 min ago"
        );
        assert_eq!(relative(now + chrono::Duration::hours(3), now), "in 3 h");
    }
}

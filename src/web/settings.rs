//! `/targets` and `/channels`: where backups go and who hears about them — listed with secrets
//! masked as the API masks them, created, edited (targets) and deleted through the API's own
//! checks and messages. Configurations are edited as the API's JSON; a masked secret left as it
//! is keeps the stored one.

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError as _};
use maud::{html, Markup};
use serde_json::{json, Value};
use uuid::Uuid;

use super::job_form::Fields;
use super::layout::{page, PageError, Refresh};
use super::session::Viewer;
use crate::http::channels::{add_channel, ChannelInput};
use crate::http::targets_json::TargetInput;
use crate::http::State;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn word<T: serde::Serialize>(kind: T) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn back(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

fn refused(title: &str, viewer: &Viewer, body: Markup) -> HttpResponse {
    let mut response = page(title, Some(viewer), Refresh::No, body);
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    response
}

/// The API's target body from a form (`name`, `type`, `config` as JSON, `isDefault`, and
/// `recipients`, one age recipient per line: none turns encryption off).
fn target_input(f: &Fields) -> Result<TargetInput, String> {
    let config: Value =
        serde_json::from_str(f.get("config")).map_err(|e| format!("config is not JSON: {e}"))?;
    let recipients: Vec<&str> = f
        .get("recipients")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // A form without the field (one loaded before it existed) keeps the stored setting.
    let encryption = if !f.has("recipients") {
        Value::Null
    } else if recipients.is_empty() {
        json!({ "type": "none" })
    } else {
        json!({ "type": "age", "recipients": recipients })
    };
    serde_json::from_value(json!({
        "name": f.get("name"), "type": f.get("type"), "config": config,
        "isDefault": !f.get("isDefault").is_empty(), "encryption": encryption,
    }))
    .map_err(|e| e.to_string())
}

async fn target_list(
    state: &State,
    viewer: &Viewer,
    error: Option<&str>,
) -> Result<Markup, PageError> {
    let org = viewer.org()?;
    let rows = state
        .engine
        .store()
        .list_target_records(Some(org), None, 500)
        .await?;
    Ok(html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        div.scroll { table {
            thead { tr { th { "Name" } th { "Kind" } th { "Owner" } th { "Configuration" } } }
            tbody { @for record in rows {
                @let t = crate::http::targets_json::view(record);
                tr data-target=(t.id) {
                    td { (t.name) @if t.is_default { " " span.badge.success { "default" } } }
                    td { (word(t.kind)) }
                    td { @if t.organization_id.is_none() { "system" } @else { "this organization" } }
                    td {
                        pre { (pretty(&t.config)) }
                        @if !t.encryption.recipients.is_empty() {
                            p data-encryption="age" { "Encrypted with age to "
                                @for (i, r) in t.encryption.recipients.iter().enumerate() {
                                    @if i > 0 { ", " } code title=(r.recipient) { (r.fingerprint) }
                                } }
                        }
                        @if t.organization_id.is_some() {
                            details { summary { "Edit" }
                                form.stack method="post" action={"/targets/" (t.id) "/edit"} {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="type" value=(word(t.kind));
                                    label { "Name" input name="name" value=(t.name); }
                                    label { "Configuration (JSON; leave masked secrets as they are to keep them)"
                                        textarea name="config" rows="8" { (pretty(&t.config)) } }
                                    label { "Encrypt new archives with age to (one recipient per line; empty: no encryption)"
                                        textarea name="recipients" rows="2" { @for r in &t.encryption.recipients { (r.recipient) "\n" } } }
                                    label { span { input type="checkbox" name="isDefault" checked[t.is_default]; " the organization's default target" } }
                                    button type="submit" { "Save" }
                                }
                            }
                            form.inline method="post" action={"/targets/" (t.id) "/delete"} {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.danger type="submit" aria-label={"Delete the target " (t.name)} { "Delete" }
                            }
                        }
                    }
                }
            } }
        } }
        h2 { "New target" }
        form.stack method="post" action="/targets" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label { "Name" input name="name" required; }
            label { "Kind" select name="type" { @for k in ["s3", "r2", "b2", "ssh", "local"] { option value=(k) { (k) } } } }
            label { "Configuration (JSON, as the API takes it)" textarea name="config" rows="6" { "{}" } }
            label { "Encrypt archives with age to (one recipient per line: age1… or ssh-ed25519 …; empty: no encryption)"
                textarea name="recipients" rows="2" {} }
            label { span { input type="checkbox" name="isDefault"; " the organization's default target" } }
            button type="submit" { "Add the target" }
        }
    })
}

pub async fn targets(state: web::Data<State>, viewer: Viewer) -> Result<HttpResponse, PageError> {
    let body = target_list(&state, &viewer, None).await?;
    Ok(page("Targets", Some(&viewer), Refresh::No, body))
}

pub async fn create_target(
    state: web::Data<State>,
    viewer: Viewer,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (f, org) = viewer.form(&body)?;
    let done = match target_input(&f) {
        Ok(input) => crate::http::targets::create(&state, Some(org), input)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => Ok(back("/targets")),
        Err(message) => Ok(refused(
            "Targets",
            &viewer,
            target_list(&state, &viewer, Some(&message)).await?,
        )),
    }
}

pub async fn edit_target(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (f, org) = viewer.form(&body)?;
    let done = match target_input(&f) {
        Ok(input) => crate::http::targets::update(&state, Some(org), path.into_inner(), input)
            .await
            .map(drop)
            .map_err(|e| (e.status_code(), e.to_string())),
        Err(e) => Err((StatusCode::UNPROCESSABLE_ENTITY, e)),
    };
    match done {
        Ok(()) => Ok(back("/targets")),
        Err((StatusCode::NOT_FOUND, _)) => Err(PageError::NotFound),
        Err((_, message)) => Ok(refused(
            "Targets",
            &viewer,
            target_list(&state, &viewer, Some(&message)).await?,
        )),
    }
}

pub async fn delete_target(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (_, org) = viewer.form(&body)?;
    match crate::http::targets::remove(&state, Some(org), path.into_inner()).await {
        Ok(_) => Ok(back("/targets")),
        Err(e) if e.status_code() == StatusCode::NOT_FOUND => Err(PageError::NotFound),
        Err(e) => Ok(refused(
            "Targets",
            &viewer,
            target_list(&state, &viewer, Some(&e.to_string())).await?,
        )),
    }
}

async fn channel_list(
    state: &State,
    viewer: &Viewer,
    error: Option<&str>,
    sent: bool,
) -> Result<Markup, PageError> {
    let org = viewer.org()?;
    let rows = state.engine.store().list_channels(org).await?;
    Ok(html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if sent { p role="status" { "A test notice is queued; the scheduler delivers it within seconds (its attempts are retried like any notice's)." } }
        @if rows.is_empty() { p.warning { "No notification channels: failures reach nobody." } } @else {
            div.scroll { table {
                thead { tr { th { "Kind" } th { "Configuration" } th { span.visually-hidden { "Actions" } } } }
                tbody { @for c in rows {
                    @let c = crate::http::channels::view(c);
                    tr data-channel=(c.id) {
                        td { (word(c.kind)) }
                        td { pre { (pretty(&c.config)) } }
                        td {
                            form.inline method="post" action={"/channels/" (c.id) "/test"} {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button type="submit" { "Send test notice" }
                            }
                            " "
                            form.inline method="post" action={"/channels/" (c.id) "/delete"} {
                                input type="hidden" name="csrf" value=(viewer.csrf);
                                button.danger type="submit" { "Delete" }
                            }
                        }
                    }
                } }
            } }
        }
        h2 { "New channel" }
        form.stack method="post" action="/channels" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label { "Kind" select name="kind" { @for k in ["email", "webhook", "slack"] { option value=(k) { (k) } } } }
            label { "Configuration (JSON): email {\"to\": [\"ops@example.com\"]}; webhook {\"url\": \"https://…\", \"secret\": \"…\"}; slack {\"url\": \"https://hooks.slack.com/…\"}"
                textarea name="config" rows="4" { "{}" } }
            button type="submit" { "Add the channel" }
        }
    })
}

#[derive(serde::Deserialize)]
pub struct Sent {
    sent: Option<String>,
}

pub async fn channels(
    state: web::Data<State>,
    viewer: Viewer,
    q: web::Query<Sent>,
) -> Result<HttpResponse, PageError> {
    let body = channel_list(&state, &viewer, None, q.sent.is_some()).await?;
    Ok(page("Notifications", Some(&viewer), Refresh::No, body))
}

pub async fn create_channel(
    state: web::Data<State>,
    viewer: Viewer,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (f, org) = viewer.form(&body)?;
    let input: Result<ChannelInput, String> = serde_json::from_str::<Value>(f.get("config"))
        .map_err(|e| format!("config is not JSON: {e}"))
        .and_then(|config| {
            serde_json::from_value(json!({"kind": f.get("kind"), "config": config}))
                .map_err(|e| e.to_string())
        });
    let done = match input {
        Ok(input) => add_channel(&state, org, input)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match done {
        Ok(()) => Ok(back("/channels")),
        Err(message) => Ok(refused(
            "Notifications",
            &viewer,
            channel_list(&state, &viewer, Some(&message), false).await?,
        )),
    }
}

pub async fn delete_channel(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (_, org) = viewer.form(&body)?;
    if !state
        .engine
        .store()
        .delete_channel(org, path.into_inner())
        .await?
    {
        return Err(PageError::NotFound);
    }
    Ok(back("/channels"))
}

/// Queues a test notice for one of the organization's channels.
pub async fn test_channel(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (_, org) = viewer.form(&body)?;
    let id = path.into_inner();
    let store = state.engine.store();
    if !store.channel_ids(org).await?.contains(&id) {
        return Err(PageError::NotFound);
    }
    let notice = vardo_actors::notice::test_notice(org);
    let payload = serde_json::to_value(&notice).map_err(|e| PageError::Internal(e.to_string()))?;
    store
        .enqueue_notices(&[vardo_actors::store::NewNotice {
            channel_id: id,
            event: notice.kind.as_str().to_owned(),
            payload,
        }])
        .await?;
    Ok(back("/channels?sent=1"))
}

//! Restoring from the page: `/backups/{id}/restore` says which volume will be replaced, with
//! what, and that the app is not restarted, and asks for the volume's name typed out; the POST
//! queues the restore (as the API does) and `/restores/{id}` follows its status and log to the end.

use actix_web::http::header::LOCATION;
use actix_web::{web, HttpResponse};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;
use vardo_actors::model::{Status, VolumeKind};

use super::history::owned;
use super::layout::{badge, page, size, time, PageError, Refresh};
use super::session::Viewer;
use crate::http::State;

fn confirm_page(
    viewer: &Viewer,
    b: &vardo_actors::model::Backup,
    error: Option<&str>,
) -> HttpResponse {
    let database = b.volume_kind == VolumeKind::Postgres;
    let body = html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        p {
            "This replaces " strong { @if database { "the Postgres databases of" } @else { "everything in" } }
            " the volume " strong { (b.volume_name) } " of the app " strong { (b.app_name) }
            " with the backup of " (time(b.created_at)) " (" (size(b.size_bytes)) ")."
        }
        p { "The app is not restarted: stop it first if it must not see the change, and start it again afterwards." }
        form.stack method="post" action={"/backups/" (b.id) "/restore"} {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="confirm" { "Type the volume's name, " strong { (b.volume_name) } ", to confirm" }
            input #confirm name="confirm" autocomplete="off" required;
            label { span {
                input type="checkbox" name="safety" value="on" checked;
                " Back up the volume's current contents first, so this restore can be undone"
            } }
            button.danger type="submit" { "Replace the volume's contents" }
        }
    };
    page("Restore", Some(viewer), Refresh::No, body)
}

fn restorable(b: &vardo_actors::model::Backup) -> Result<(), PageError> {
    if b.status != Status::Success {
        return Err(PageError::Conflict(format!(
            "Only a successful backup can be restored; this one is {}.",
            b.status.as_str()
        )));
    }
    Ok(())
}

pub async fn confirm(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let b = owned(&state, viewer.org()?, path.into_inner()).await?;
    restorable(&b)?;
    Ok(confirm_page(&viewer, &b, None))
}

#[derive(Deserialize)]
pub struct Confirm {
    csrf: String,
    confirm: String,
    safety: Option<String>,
}

pub async fn start(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    form: web::Form<Confirm>,
) -> Result<HttpResponse, PageError> {
    viewer.check(&form.csrf)?;
    let org = viewer.org()?;
    let b = owned(&state, org, path.into_inner()).await?;
    restorable(&b)?;
    if form.confirm != b.volume_name {
        let mut response = confirm_page(
            &viewer,
            &b,
            Some("The name typed is not the volume's name; nothing was restored."),
        );
        *response.status_mut() = actix_web::http::StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(response);
    }
    let id = state
        .engine
        .store()
        .insert_restore(org, b.id, form.safety.is_some())
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/restores/{id}")))
        .finish())
}

pub async fn restore_page(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let org = viewer.org()?;
    let id = path.into_inner();
    let store = state.engine.store();
    if store.restore_organization(id).await? != org {
        return Err(PageError::NotFound);
    }
    let r = store.restore(id).await?;
    let b = owned(&state, org, r.backup_id).await?;
    let running = matches!(r.status, Status::Pending | Status::Running);
    let body = html! {
        p #status { (badge(r.status.as_str())) " restore of " strong { (b.app_name) " / " (b.volume_name) }
            " from the backup of " (time(b.created_at)) }
        @if running { p.muted { "This page refreshes itself until the restore ends." } }
        @if let Some(safety) = r.pre_restore_backup_id {
            p { "The contents it replaced were backed up first: "
                a href={"/backups/" (safety) "/restore"} { "restore that backup to undo this restore" } "." }
        }
        h2 { "Log" }
        pre #log { (r.log) }
    };
    let refresh = if running {
        Refresh::Every(2)
    } else {
        Refresh::No
    };
    Ok(page("Restore", Some(&viewer), refresh, body))
}

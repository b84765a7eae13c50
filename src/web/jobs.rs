//! `/jobs/{id}`: a job's settings, its recent history, "Run now" and enable/disable.

use actix_web::http::header::LOCATION;
use actix_web::{web, HttpResponse};
use chrono::Utc;
use maud::html;
use serde::Deserialize;
use uuid::Uuid;
use vardo_actors::model::RunReason;
use vardo_actors::schedule::Schedule;
use vardo_actors::store::{HistoryFilter, JobRecord};

use super::layout::{badge, duration, page, size, time, when, PageError, Refresh};
use super::overview::in_words;
use super::session::{Csrf, Viewer};
use crate::http::State;

pub(super) async fn owned_job(state: &State, org: Uuid, id: Uuid) -> Result<JobRecord, PageError> {
    let record = state.engine.store().job_record(id).await?;
    if record.job.organization_id != org {
        return Err(PageError::NotFound);
    }
    Ok(record)
}

fn retention(r: &vardo_actors::model::RetentionPolicy) -> String {
    if r.keep_all {
        return "keep every backup".to_owned();
    }
    let parts: Vec<String> = [
        ("last", r.keep_last),
        ("hourly", r.keep_hourly),
        ("daily", r.keep_daily),
        ("weekly", r.keep_weekly),
        ("monthly", r.keep_monthly),
        ("yearly", r.keep_yearly),
    ]
    .into_iter()
    .filter_map(|(w, n)| n.map(|n| format!("{n} {w}")))
    .collect();
    if parts.is_empty() {
        "keep every backup".to_owned()
    } else {
        format!("keep {}", parts.join(", "))
    }
}

pub async fn job_page(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let org = viewer.org()?;
    let r = owned_job(&state, org, path.into_inner()).await?;
    let store = state.engine.store();
    let filter = HistoryFilter {
        job_id: Some(r.job.id),
        ..HistoryFilter::default()
    };
    let rows = store.list_history(org, &filter, None, 20).await?;
    let apps = store.app_names(org).await?;
    let j = &r.job;
    let next = j
        .enabled
        .then(|| Schedule::parse(&j.schedule, &j.timezone).ok())
        .flatten()
        .and_then(|s| s.next_after(Utc::now()));
    let running = rows.iter().any(|b| {
        matches!(
            b.status,
            vardo_actors::model::Status::Pending | vardo_actors::model::Status::Running
        )
    });
    let forms = super::job_form::forms(&state, &viewer, &r, None, None).await?;
    let body = html! {
        dl {
            dt { "State" } dd { @if j.enabled { (badge("enabled")) } @else { (badge("disabled")) } @if r.overdue { " " span.badge.overdue { "overdue" } } }
            dt { "Schedule" } dd { (in_words(&j.schedule)) " — " code { (j.schedule) } " in " (j.timezone) }
            dt { "Next run" } dd { @if let Some(t) = next { (when(t)) } @else { "—" } }
            dt { "Last run" } dd { @if let Some(t) = j.last_run_at { (when(t)) } @else { "never" } }
            dt { "Apps" } dd { @for a in &r.app_ids { (apps.get(a).map_or(a.as_str(), String::as_str)) " " } }
            dt { "Retention" } dd { (retention(&j.retention)) }
            dt { "Compression" } dd { (j.compression.as_str()) }
            dt { "Incremental" } dd {
                @if let Some(n) = j.incremental_full_every {
                    "a full backup every " (n) " backups; those between hold what changed (file volumes; database dumps stay full)"
                } @else { "off: every backup is full" }
            }
            dt { "Notifications" } dd {
                "on failure: " (if j.notify_on_failure { "yes" } else { "no" })
                ", on success: " (if j.notify_on_success { "yes" } else { "no" })
            }
            dt { "Restore drills" } dd {
                @if let Some(d) = &j.drill_schedule { (in_words(d)) " — " code { (d) } } @else { "never" }
                @if let (Some(t), Some(o)) = (j.last_drill_at, &j.last_drill_outcome) { "; last " (badge(o)) " " (time(t)) } @else { "; never drilled" }
            }
        }
        p {
            form.inline method="post" action={"/jobs/" (j.id) "/run"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Run now" }
            }
            " "
            form.inline method="post" action={"/jobs/" (j.id) "/enabled"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="enabled" value=(if j.enabled { "false" } else { "true" });
                button type="submit" { (if j.enabled { "Disable" } else { "Enable" }) }
            }
        }
        (forms)
        h2 { "Recent history" }
        p { a href={"/history?job=" (j.id)} { "All of this job's history" } }
        div.scroll { table {
            thead { tr { th { "Created" } th { "App / volume" } th { "Status" } th { "Size" } th { "Duration" } th { span.visually-hidden { "Log" } } } }
            tbody { @for b in &rows { tr data-status=(b.status.as_str()) {
                td { (time(b.created_at)) } td { (b.app_name) " / " (b.volume_name) }
                td { (badge(b.status.as_str())) } td { (size(b.size_bytes)) }
                td { (duration(b.started_at, b.finished_at)) } td { a href={"/backups/" (b.id)} { "Log" } }
            } } }
        } }
    };
    let refresh = if running {
        Refresh::Every(5)
    } else {
        Refresh::No
    };
    Ok(page(&j.name, Some(&viewer), refresh, body))
}

pub async fn run_now(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    form: web::Form<Csrf>,
) -> Result<HttpResponse, PageError> {
    viewer.check(&form.csrf)?;
    let r = owned_job(&state, viewer.org()?, path.into_inner()).await?;
    let run = state
        .engine
        .store()
        .request_run(r.job.id, RunReason::Manual, None)
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/history?run={run}")))
        .finish())
}

#[derive(Deserialize)]
pub struct Enabled {
    csrf: String,
    enabled: bool,
}

pub async fn set_enabled(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    form: web::Form<Enabled>,
) -> Result<HttpResponse, PageError> {
    viewer.check(&form.csrf)?;
    let org = viewer.org()?;
    let id = path.into_inner();
    if !state
        .engine
        .store()
        .set_job_enabled(org, id, form.enabled)
        .await?
    {
        return Err(PageError::NotFound);
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, format!("/jobs/{id}")))
        .finish())
}

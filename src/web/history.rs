//! `/history`: every backup attempt, newest first, paged, filtered by query parameters (`job`,
//! `app`, `volume`, `status`, `from`, `to`, `run`), so a filtered view is a link to share;
//! `/backups/{id}`: one attempt with its timestamped log; `/backups/{id}/download`: its archive.

use actix_web::http::header::LOCATION;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;
use vardo_actors::download::{download as fetch, Download};
use vardo_actors::model::{Backup, BackupKind, Status};
use vardo_actors::store::HistoryFilter;

use super::layout::{badge, duration, page, size, time, PageError, Refresh};
use super::session::Viewer;
use crate::http::State;

const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct Query {
    job: Option<String>,
    app: Option<String>,
    volume: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    run: Option<String>,
    /// `<rfc3339>_<uuid>` of the last row of the previous page.
    before: Option<String>,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn uuid(field: &str, v: &Option<String>) -> Result<Option<Uuid>, PageError> {
    blank(v)
        .map(|s| {
            Uuid::parse_str(s)
                .map_err(|_| PageError::BadRequest(format!("{field} must be an id, not {s:?}")))
        })
        .transpose()
}

/// A day (`2026-12-01`, midnight UTC; for `to` the day is included) or an RFC 3339 time.
fn moment(
    field: &str,
    v: &Option<String>,
    end_of_day: bool,
) -> Result<Option<DateTime<Utc>>, PageError> {
    let Some(s) = blank(v) else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        PageError::BadRequest(format!(
            "{field} must be a date such as 2026-12-01, not {s:?}"
        ))
    })?;
    let day = if end_of_day {
        day.succ_opt().unwrap_or(day)
    } else {
        day
    };
    Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
}

fn filter(q: &Query) -> Result<HistoryFilter, PageError> {
    let status = blank(&q.status)
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                PageError::BadRequest(format!(
                    "status must be pending, running, success, failed or pruned, not {s:?}"
                ))
            })
        })
        .transpose()?;
    Ok(HistoryFilter {
        job_id: uuid("job", &q.job)?,
        app_id: blank(&q.app).map(str::to_owned),
        status,
        volume_name: blank(&q.volume).map(str::to_owned),
        run_id: uuid("run", &q.run)?,
        from: moment("from", &q.from, false)?,
        to: moment("to", &q.to, true)?,
    })
}

fn cursor(q: &Query) -> Result<Option<(DateTime<Utc>, Uuid)>, PageError> {
    let Some(s) = blank(&q.before) else {
        return Ok(None);
    };
    let bad =
        || PageError::BadRequest("the page link is damaged; start from the first page".to_owned());
    let (t, id) = s.rsplit_once('_').ok_or_else(bad)?;
    let t = DateTime::parse_from_rfc3339(t).map_err(|_| bad())?;
    Ok(Some((
        t.with_timezone(&Utc),
        Uuid::parse_str(id).map_err(|_| bad())?,
    )))
}

/// This query string with `before` replaced.
fn next_link(q: &Query, before: &str) -> String {
    let mut pairs = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("job", &q.job),
        ("app", &q.app),
        ("volume", &q.volume),
        ("status", &q.status),
        ("from", &q.from),
        ("to", &q.to),
        ("run", &q.run),
    ] {
        if let Some(v) = blank(v) {
            pairs.append_pair(k, v);
        }
    }
    pairs.append_pair("before", before);
    format!("/history?{}", pairs.finish())
}

pub async fn list(
    state: web::Data<State>,
    viewer: Viewer,
    q: web::Query<Query>,
) -> Result<HttpResponse, PageError> {
    let org = viewer.org()?;
    let q = q.into_inner();
    let f = filter(&q)?;
    let store = state.engine.store();
    let rows = store.list_history(org, &f, cursor(&q)?, PAGE).await?;
    let jobs = store.list_job_records(org, None, 500).await?;
    let running = rows
        .iter()
        .any(|b| matches!(b.status, Status::Pending | Status::Running));
    let selected = |v: &Option<String>, want: &str| blank(v) == Some(want);
    let body = html! {
        form.filters method="get" action="/history" {
            label { "Job" select name="job" {
                option value="" { "any" }
                @for j in &jobs { option value=(j.job.id) selected[selected(&q.job, &j.job.id.to_string())] { (j.job.name) } }
            } }
            label { "App" input name="app" value=(blank(&q.app).unwrap_or_default()); }
            label { "Volume" input name="volume" value=(blank(&q.volume).unwrap_or_default()); }
            label { "Status" select name="status" {
                option value="" { "any" }
                @for s in ["success", "failed", "running", "pending", "pruned"] {
                    option value=(s) selected[selected(&q.status, s)] { (s) }
                }
            } }
            label { "From" input type="date" name="from" value=(blank(&q.from).unwrap_or_default()); }
            label { "To" input type="date" name="to" value=(blank(&q.to).unwrap_or_default()); }
            @if let Some(run) = blank(&q.run) { input type="hidden" name="run" value=(run); }
            button type="submit" { "Filter" }
            a href="/history" { "Clear" }
        }
        @if rows.is_empty() { p { "No backups match." } } @else {
            div.scroll { table {
                thead { tr {
                    th { "Created" } th { "Job" } th { "App / volume" } th { "Status" } th { "Size" }
                    th { "Duration" } th { "Stored as" } th { "Checksum" } th { span.visually-hidden { "Actions" } }
                } }
                tbody { @for b in &rows { tr data-backup=(b.id) data-status=(b.status.as_str()) {
                    td { (time(b.created_at)) }
                    td { (b.job_id.and_then(|id| jobs.iter().find(|j| j.job.id == id)).map_or("—", |j| j.job.name.as_str())) }
                    td { (b.app_name) " / " (b.volume_name) }
                    td { (badge(b.status.as_str())) }
                    td { (size(b.size_bytes))
                        @if b.chain.kind == BackupKind::Incremental {
                            " " small title="Holds what changed since the backup before; restores and downloads read its chain" { "incremental " (b.chain.position) }
                        }
                    }
                    td { (duration(b.started_at, b.finished_at)) }
                    td { @if let Some(p) = &b.storage_path { code { (p) } } @else { "—" } }
                    td { @if let Some(c) = &b.checksum {
                        code title=(c) { (c.strip_prefix("sha256:").unwrap_or(c).get(..12).unwrap_or(c)) "…" }
                    } @else { "—" } }
                    td {
                        a href={"/backups/" (b.id)} { "Log" }
                        @if b.status == Status::Success {
                            " · " a href={"/backups/" (b.id) "/download"} { "Download" }
                            " · " a href={"/backups/" (b.id) "/restore"} { "Restore…" }
                        }
                    }
                } } }
            } }
            @if i64::try_from(rows.len()).unwrap_or(0) == PAGE {
                @if let Some(last) = rows.last() {
                    p { a rel="next" href=(next_link(&q, &format!("{}_{}", last.created_at.to_rfc3339(), last.id))) { "Older →" } }
                }
            }
        }
    };
    let refresh = if running {
        Refresh::Every(5)
    } else {
        Refresh::No
    };
    Ok(page("History", Some(&viewer), refresh, body))
}

/// The organization's backup row, or 404 (another organization's included).
pub async fn owned(state: &State, org: Uuid, id: Uuid) -> Result<Backup, PageError> {
    let backup = state.engine.store().backup(id).await?;
    if backup.organization_id != org {
        return Err(PageError::NotFound);
    }
    Ok(backup)
}

pub async fn backup(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let b = owned(&state, viewer.org()?, path.into_inner()).await?;
    let running = matches!(b.status, Status::Pending | Status::Running);
    let body = html! {
        dl {
            dt { "Status" } dd { (badge(b.status.as_str())) }
            dt { "App / volume" } dd { (b.app_name) " / " (b.volume_name) }
            dt { "Created" } dd { (time(b.created_at)) }
            dt { "Duration" } dd { (duration(b.started_at, b.finished_at)) }
            dt { "Size" } dd { (size(b.size_bytes)) }
            dt { "Kind" } dd {
                @match (b.chain.kind, b.chain.parent_backup_id) {
                    (BackupKind::Incremental, Some(parent)) => {
                        "incremental " (b.chain.position) " of its chain: what changed since "
                        a href={"/backups/" (parent)} { "the backup before" }
                        "; a restore or download reads the chain from its full backup on"
                    }
                    _ if b.chain.manifest_path.is_some() => { "full (the start of a chain of incremental backups)" }
                    _ => { "full" }
                }
            }
            dt { "Stored as" } dd { code { (b.storage_path.as_deref().unwrap_or("—")) } }
            dt { "Checksum" } dd { code { (b.checksum.as_deref().unwrap_or("—")) } }
            dt { "Verified" } dd { (b.verify_outcome.as_deref().unwrap_or("never")) @if let Some(t) = b.verified_at { " " (time(t)) } }
        }
        @if b.status == Status::Success {
            p { a href={"/backups/" (b.id) "/download"} { "Download" } " · " a href={"/backups/" (b.id) "/restore"} { "Restore…" } }
        }
        h2 { "Log" }
        pre #log { (b.log) }
    };
    let refresh = if running {
        Refresh::Every(3)
    } else {
        Refresh::No
    };
    Ok(page("Backup", Some(&viewer), refresh, body))
}

pub async fn download(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, PageError> {
    let b = owned(&state, viewer.org()?, path.into_inner()).await?;
    let fetched = fetch(&state.engine, b.id).await.map_err(|e| match e {
        vardo_actors::download::DownloadError::Store(e) => PageError::from(e),
        vardo_actors::download::DownloadError::Storage(e) => {
            tracing::warn!(backup_id = %b.id, error = %e, "download failed");
            PageError::Conflict(
                "The target could not serve the archive; the engine's log says why.".to_owned(),
            )
        }
        e @ vardo_actors::download::DownloadError::NoArchive(..) => {
            PageError::Conflict(e.to_string())
        }
    })?;
    match fetched {
        Download::Redirect(url) => Ok(HttpResponse::SeeOther()
            .insert_header((LOCATION, url))
            .finish()),
        Download::Stream {
            file_name,
            size,
            body,
        } => Ok(crate::http::history::archive_response(
            file_name, size, body,
        )),
    }
}

//! Editing and deleting a job from its page. The form's fields are turned into the API's job body
//! and go through the API's own checks (`crate::http::jobs::prepare`), so the page accepts and
//! refuses exactly what the API does, with the same messages.

use std::collections::HashMap;

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use serde_json::{json, Value};
use uuid::Uuid;
use vardo_actors::store::JobRecord;

use super::jobs::owned_job;
use super::layout::{page, PageError, Refresh};
use super::session::Viewer;
use crate::http::jobs::{prepare, purge_archives, JobInput};
use crate::http::State;

/// A form's fields, a name possibly repeated (the app checkboxes).
pub struct Fields(HashMap<String, Vec<String>>);

impl Fields {
    pub fn parse(body: &[u8]) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Self(map)
    }

    fn of(r: &JobRecord) -> Self {
        let j = &r.job;
        let p = &j.retention;
        let mut map = HashMap::new();
        let mut one = |k: &str, v: String| {
            map.insert(k.to_owned(), vec![v]);
        };
        one("name", j.name.clone());
        one("schedule", j.schedule.clone());
        one("timezone", j.timezone.clone());
        one(
            "target",
            j.target_id.map(|t| t.to_string()).unwrap_or_default(),
        );
        one("compression", j.compression.as_str().to_owned());
        one("drill", j.drill_schedule.clone().unwrap_or_default());
        one(
            "fullEvery",
            j.incremental_full_every
                .map(|n| n.to_string())
                .unwrap_or_default(),
        );
        for (k, v) in [
            ("keepLast", p.keep_last),
            ("keepHourly", p.keep_hourly),
            ("keepDaily", p.keep_daily),
            ("keepWeekly", p.keep_weekly),
            ("keepMonthly", p.keep_monthly),
            ("keepYearly", p.keep_yearly),
        ] {
            one(k, v.map(|n| n.to_string()).unwrap_or_default());
        }
        for (k, on) in [
            ("keepAll", p.keep_all),
            ("notifyOnSuccess", j.notify_on_success),
            ("notifyOnFailure", j.notify_on_failure),
        ] {
            if on {
                one(k, "on".to_owned());
            }
        }
        map.insert("app".to_owned(), r.app_ids.clone());
        Self(map)
    }

    pub fn get(&self, k: &str) -> &str {
        self.0
            .get(k)
            .and_then(|v| v.first())
            .map_or("", String::as_str)
    }

    /// Whether the form sent the field at all (an empty one counts).
    pub fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map_or(&[], Vec::as_slice)
    }

    fn on(&self, k: &str) -> bool {
        !self.get(k).is_empty()
    }

    /// The API's job body; a number field that is not a number is sent as the text typed, so the
    /// API's own message names it.
    fn body(&self, enabled: bool) -> Value {
        let number = |k: &str| -> Value {
            match self.get(k).trim() {
                "" => Value::Null,
                s => s
                    .parse::<i64>()
                    .map_or_else(|_| Value::String(s.to_owned()), Value::from),
            }
        };
        let text = |k: &str| -> Value {
            match self.get(k).trim() {
                "" => Value::Null,
                s => Value::String(s.to_owned()),
            }
        };
        json!({
            "name": self.get("name"), "schedule": self.get("schedule").trim(),
            "timezone": self.get("timezone").trim(), "enabled": enabled,
            "targetId": text("target"), "appIds": self.all("app"),
            "keepAll": self.on("keepAll"), "keepLast": number("keepLast"),
            "keepHourly": number("keepHourly"), "keepDaily": number("keepDaily"),
            "keepWeekly": number("keepWeekly"), "keepMonthly": number("keepMonthly"),
            "keepYearly": number("keepYearly"), "notifyOnSuccess": self.on("notifyOnSuccess"),
            "notifyOnFailure": self.on("notifyOnFailure"), "compression": self.get("compression"),
            "drillSchedule": text("drill"),
            "incremental": match number("fullEvery") {
                Value::Null => Value::Null,
                n => json!({ "fullEvery": n }),
            },
        })
    }
}

/// The edit form and the delete form of a job.
pub async fn forms(
    state: &State,
    viewer: &Viewer,
    r: &JobRecord,
    submitted: Option<&Fields>,
    error: Option<&str>,
) -> Result<Markup, PageError> {
    let org = viewer.org()?;
    let store = state.engine.store();
    let apps = store.app_names(org).await?;
    let mut apps: Vec<(String, String)> = apps.into_iter().collect();
    apps.sort_by(|a, b| a.1.cmp(&b.1));
    let targets = store.list_target_records(Some(org), None, 500).await?;
    let initial = Fields::of(r);
    let f = submitted.unwrap_or(&initial);
    let id = r.job.id;
    let input = |label: &str, name: &str| {
        html! {
            label { (label) input name=(name) value=(f.get(name)); }
        }
    };
    Ok(html! {
        details open[error.is_some()] {
            summary { "Edit settings" }
            form.stack method="post" action={"/jobs/" (id) "/edit"} {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                input type="hidden" name="csrf" value=(viewer.csrf);
                (input("Name", "name"))
                (input("Schedule (cron: minute hour day month weekday)", "schedule"))
                (input("Time zone (IANA, e.g. Europe/Berlin)", "timezone"))
                label { "Target" select name="target" {
                    option value="" selected[f.get("target").is_empty()] { "the default target" }
                    @for t in &targets { option value=(t.row.id) selected[f.get("target") == t.row.id.to_string()] { (t.row.name) } }
                } }
                fieldset { legend { "Apps" }
                    @for (app_id, name) in &apps {
                        label { span { input type="checkbox" name="app" value=(app_id) checked[f.all("app").contains(app_id)]; " " (name) } }
                    }
                }
                fieldset { legend { "Retention" }
                    label { span { input type="checkbox" name="keepAll" checked[f.on("keepAll")]; " keep every backup" } }
                    @for (label, name) in [("last", "keepLast"), ("hourly", "keepHourly"), ("daily", "keepDaily"), ("weekly", "keepWeekly"), ("monthly", "keepMonthly"), ("yearly", "keepYearly")] {
                        label { "Keep " (label) input name=(name) inputmode="numeric" value=(f.get(name)); }
                    }
                }
                label { "Compression" select name="compression" {
                    @for c in ["gzip", "zstd"] { option value=(c) selected[f.get("compression") == c] { (c) } }
                } }
                (input("Restore drills (cron; empty: never)", "drill"))
                (input("Incremental: a full backup every … backups (empty: every backup is full)", "fullEvery"))
                label { span { input type="checkbox" name="notifyOnFailure" checked[f.on("notifyOnFailure")]; " notify on failure" } }
                label { span { input type="checkbox" name="notifyOnSuccess" checked[f.on("notifyOnSuccess")]; " notify on success" } }
                button type="submit" { "Save" }
            }
        }
        details {
            summary { "Delete this job" }
            form.stack method="post" action={"/jobs/" (id) "/delete"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                p { "Deleting the job stops its schedule. Its history and archives stay: they are still listed under History and can be restored or downloaded. With “also delete its archives”, every archive of the job is deleted from its target first, then its history; that cannot be undone." }
                label { span { input type="checkbox" name="purge"; " also delete its archives and history" } }
                label { "Type the job's name, " strong { (r.job.name) } ", to confirm" input name="confirm" autocomplete="off" required; }
                button.danger type="submit" { "Delete the job" }
            }
        }
    })
}

pub async fn edit(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (f, org) = viewer.form(&body)?;
    let r = owned_job(&state, org, path.into_inner()).await?;
    let prepared = match serde_path_to_error::deserialize::<_, JobInput>(f.body(r.job.enabled)) {
        Ok(input) => prepare(&state, org, input).await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("{}: {}", e.path(), e.inner())),
    };
    match prepared {
        Ok(job) => {
            state.engine.store().update_job(r.job.id, &job).await?;
            Ok(HttpResponse::SeeOther()
                .insert_header((LOCATION, format!("/jobs/{}", r.job.id)))
                .finish())
        }
        Err(message) => {
            let form = forms(&state, &viewer, &r, Some(&f), Some(&message)).await?;
            let mut response = page(&r.job.name, Some(&viewer), Refresh::No, form);
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
    }
}

pub async fn delete(
    state: web::Data<State>,
    viewer: Viewer,
    path: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let (f, org) = viewer.form(&body)?;
    let r = owned_job(&state, org, path.into_inner()).await?;
    if f.get("confirm") != r.job.name {
        return Err(PageError::BadRequest(
            "The name typed is not the job's name; nothing was deleted.".to_owned(),
        ));
    }
    let purge = f.on("purge");
    if purge {
        purge_archives(&state, r.job.id)
            .await
            .map_err(|e| PageError::Conflict(e.to_string()))?;
    }
    if !state
        .engine
        .store()
        .delete_job(org, r.job.id, purge)
        .await?
    {
        return Err(PageError::NotFound);
    }
    Ok(HttpResponse::SeeOther()
        .insert_header((LOCATION, "/"))
        .finish())
}

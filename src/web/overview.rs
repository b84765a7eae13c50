//! `/`: one banner with the worst state across the organization's jobs, then a row per job (last
//! run, next run, last success, overdue, a 30-day strip, the newest size, "Run now"), and the
//! volumes no enabled job backs up. The admin picks the organization here.

use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use chrono::{Duration, NaiveDate, Utc};
use maud::{html, Markup};
use uuid::Uuid;
use vardo_actors::schedule::Schedule;
use vardo_actors::store::{DayOutcome, JobRecord, LastRun, LastSuccess};

use super::layout::{badge, page, size, when, PageError, Refresh};
use super::session::Viewer;
use crate::http::State;

/// A job's state, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Failing,
    Overdue,
    Running,
    Healthy,
    NeverRun,
    Disabled,
}

impl Health {
    pub fn word(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Overdue => "overdue",
            Self::Running => "running",
            Self::Healthy => "healthy",
            Self::NeverRun => "never run",
            Self::Disabled => "disabled",
        }
    }

    fn of(job: &JobRecord, last: Option<&LastRun>) -> Self {
        if !job.job.enabled {
            return Self::Disabled;
        }
        match last.map(|l| l.outcome) {
            Some("failed") => Self::Failing,
            _ if job.overdue => Self::Overdue,
            Some("running") => Self::Running,
            Some(_) => Self::Healthy,
            None => Self::NeverRun,
        }
    }
}

/// The cron expression in words, or the expression itself when it has none.
pub fn in_words(cron: &str) -> String {
    cron_descriptor::cronparser::cron_expression_descriptor::get_description_cron(cron)
        .unwrap_or_else(|_| cron.to_owned())
}

fn strip(days: &[&DayOutcome], timezone: &str) -> Markup {
    let zone: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let today = Utc::now().with_timezone(&zone).date_naive();
    let by_day: HashMap<NaiveDate, &DayOutcome> = days.iter().map(|d| (d.day, *d)).collect();
    let (mut ok, mut failed) = (0, 0);
    let cells: Vec<(NaiveDate, &str)> = (0..30)
        .rev()
        .map(|back| {
            let day = today - Duration::days(back);
            let class = match by_day.get(&day) {
                Some(d) if d.failed && d.succeeded => "mixed",
                Some(d) if d.failed => "fail",
                Some(d) if d.succeeded => "ok",
                _ => "none",
            };
            ok += usize::from(class == "ok");
            failed += usize::from(class == "fail" || class == "mixed");
            (day, class)
        })
        .collect();
    let summary = format!("last 30 days: {ok} days all succeeded, {failed} days with a failure");
    html! {
        span.strip role="img" aria-label=(summary) title=(summary) {
            @for (day, class) in &cells {
                span class=(class) title=(format!("{day}: {class}")) {}
            }
        }
    }
}

pub async fn overview(state: web::Data<State>, viewer: Viewer) -> Result<HttpResponse, PageError> {
    let store = state.engine.store();
    let Some(org) = viewer.organization else {
        return picker(&state, &viewer).await;
    };
    let jobs = store.list_job_records(org, None, 500).await?;
    let last: HashMap<Uuid, LastRun> = store.last_runs(org).await?.into_iter().collect();
    let success: HashMap<Uuid, LastSuccess> =
        store.last_successes(org).await?.into_iter().collect();
    let days = store
        .daily_outcomes(org, Utc::now() - Duration::days(31))
        .await?;
    let apps = store.app_names(org).await?;
    let targets: HashMap<Uuid, String> = store
        .list_target_records(Some(org), None, 500)
        .await?
        .into_iter()
        .map(|t| (t.row.id, t.row.name))
        .collect();
    let unprotected = store.unprotected_volumes(org).await?;

    let healths: Vec<Health> = jobs
        .iter()
        .map(|j| Health::of(j, last.get(&j.job.id)))
        .collect();
    let worst = healths
        .iter()
        .copied()
        .filter(|h| *h <= Health::Healthy)
        .min();
    let named = |h: Health| -> Vec<&str> {
        jobs.iter()
            .zip(&healths)
            .filter(|(_, x)| **x == h)
            .map(|(j, _)| j.job.name.as_str())
            .collect()
    };
    let banner = match worst {
        None if jobs.is_empty() => {
            html! { div.banner.overdue role="status" { "No backup jobs yet: nothing is backed up." } }
        }
        None => html! { div.banner.overdue role="status" { "No enabled job has run yet." } },
        Some(h) => {
            let names = named(h);
            let text = match h {
                Health::Failing => format!("Failing: the last run of {} failed.", names.join(", ")),
                Health::Overdue => format!("Overdue: {} missed a scheduled run.", names.join(", ")),
                Health::Running => format!("Running: {}.", names.join(", ")),
                _ => "Healthy: every enabled job's last run succeeded.".to_owned(),
            };
            html! { div class={"banner " (h.word())} role="status" { (text) } }
        }
    };
    let running = healths.contains(&Health::Running);
    let body = html! {
        @if viewer.admin { p { a href="/organizations" { "Switch organization" } } }
        (banner)
        @if !unprotected.is_empty() {
            section aria-labelledby="unprotected" {
                h2 #unprotected .warning { "Not backed up" }
                p { "No enabled job covers these volumes:" }
                ul { @for u in &unprotected { li { (u.app_name) " / " (u.volume_name) } } }
            }
        }
        h2 { "Jobs" }
        div.scroll { table {
            thead { tr {
                th { "Job" } th { "Apps" } th { "Target" } th { "Schedule" } th { "Last run" }
                th { "Next run" } th { "Last success" } th { "30 days" } th { "Newest size" } th { span.visually-hidden { "Actions" } }
            } }
            tbody {
                @for (j, h) in jobs.iter().zip(&healths) {
                    @let id = j.job.id;
                    @let day_rows: Vec<&DayOutcome> = days.iter().filter(|d| d.job_id == id).collect();
                    tr data-job=(id) {
                        td { a href={"/jobs/" (id)} { (j.job.name) } br; (badge(h.word())) }
                        td { @for a in &j.app_ids { (apps.get(a).map_or(a.as_str(), String::as_str)) br; } }
                        td { (j.job.target_id.and_then(|t| targets.get(&t)).map_or("default", String::as_str)) }
                        td { (in_words(&j.job.schedule)) br; span.muted { code { (j.job.schedule) } " " (j.job.timezone) } }
                        td { @if let Some(l) = last.get(&id) {
                            (badge(l.outcome)) br; (when(l.finished_at.unwrap_or(l.started_at)))
                            br; a href={"/history?run=" (l.run_id)} { "its rows" }
                        } @else { "never" } }
                        td { @if let Some(t) = j.job.enabled.then(|| Schedule::parse(&j.job.schedule, &j.job.timezone).ok()).flatten().and_then(|s| s.next_after(Utc::now())) {
                            (when(t))
                        } @else { "—" }
                          @if j.overdue { br; span.badge.overdue { "overdue" } } }
                        td { @if let Some(s) = success.get(&id) { (when(s.finished_at)) } @else { "never" } }
                        td { (strip(&day_rows, &j.job.timezone)) }
                        td { (size(success.get(&id).map(|s| s.size_bytes))) }
                        td { form.inline method="post" action={"/jobs/" (id) "/run"} {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" aria-label={"Run " (j.job.name) " now"} { "Run now" }
                        } }
                    }
                }
            }
        } }
    };
    let refresh = if running {
        Refresh::Every(5)
    } else {
        Refresh::No
    };
    Ok(page("Backups", Some(&viewer), refresh, body))
}

/// `/organizations`: the admin's organization switcher.
pub async fn organizations(
    state: web::Data<State>,
    viewer: Viewer,
) -> Result<HttpResponse, PageError> {
    picker(&state, &viewer).await
}

/// The admin's organization switcher.
async fn picker(state: &State, viewer: &Viewer) -> Result<HttpResponse, PageError> {
    if !viewer.admin {
        return Err(PageError::NotFound);
    }
    let orgs = state.engine.store().list_organizations(None, 500).await?;
    let body = html! {
        p { "Pick the organization to look at." }
        form.stack method="post" action="/organization" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="organization" { "Organization" }
            select #organization name="organization" {
                @for o in &orgs { option value=(o.id) { (o.name) " (" (o.slug) ")" } }
            }
            button type="submit" { "Show" }
        }
    };
    Ok(page("Organizations", Some(viewer), Refresh::No, body))
}

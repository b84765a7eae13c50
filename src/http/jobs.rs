//! Backup jobs: `/api/v1/organizations/{orgId}/backups/jobs` — schedule (cron in a time zone),
//! target, apps, retention and notification flags, with the computed `lastRunAt`, `nextRunAt` and
//! `overdue`; `POST …/{jobId}/run` asks the scheduler role for a run now.

use std::collections::HashMap;

use actix_web::{delete, get, post, put, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vardo_actors::model::{Compression, RetentionPolicy, RunReason, DEFAULT_DRILL_SCHEDULE};
use vardo_actors::schedule::{Schedule, ScheduleError};
use vardo_actors::storage::TargetStorage;
use vardo_actors::store::{JobRecord, NewJob};

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::{self, ApiJson, ApiQuery};
use super::organizations::{check_name, PageParams};
use super::State;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    #[default]
    Gzip,
    Zstd,
}

fn yes() -> bool {
    true
}

fn utc() -> String {
    "UTC".to_owned()
}

fn weekly_drill() -> Option<String> {
    Some(DEFAULT_DRILL_SCHEDULE.to_owned())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobInput {
    pub name: String,
    /// Five-field cron expression (minute hour day month weekday), e.g. `0 2 * * *`.
    pub schedule: String,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
    /// The organization's or a system target; null follows the resolution order.
    #[serde(default)]
    pub target_id: Option<Uuid>,
    /// Apps of the organization this job backs up.
    #[serde(default)]
    pub app_ids: Vec<String>,
    #[serde(default)]
    pub keep_all: bool,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub keep_last: Option<i64>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub keep_hourly: Option<i64>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub keep_daily: Option<i64>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub keep_weekly: Option<i64>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub keep_monthly: Option<i64>,
    #[schema(minimum = 0, maximum = 2147483647)]
    pub keep_yearly: Option<i64>,
    #[serde(default)]
    pub notify_on_success: bool,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub notify_on_failure: bool,
    /// IANA time zone the schedule is read in.
    #[serde(default = "utc")]
    #[schema(default = "UTC")]
    pub timezone: String,
    #[serde(default)]
    pub compression: CompressionType,
    /// When drills restore the newest backups into scratch places and check them: a five-field
    /// cron in the job's time zone; null turns drills off. Default: Sundays at 04:00.
    #[serde(default = "weekly_drill")]
    #[schema(default = "0 4 * * 0")]
    pub drill_schedule: Option<String>,
    /// Incremental backups: `{"fullEvery": n}` makes every n-th backup of each volume a full
    /// archive and those between hold only what changed since the one before (file volumes;
    /// Postgres dumps stay full). Null or absent: every backup is full.
    #[serde(default)]
    pub incremental: Option<Incremental>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Incremental {
    /// How many backups a chain holds: one full, then `fullEvery - 1` incrementals (1 to 1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub full_every: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub schedule: String,
    pub enabled: bool,
    pub target_id: Option<Uuid>,
    pub app_ids: Vec<String>,
    pub keep_all: bool,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub notify_on_success: bool,
    pub notify_on_failure: bool,
    pub timezone: String,
    pub compression: CompressionType,
    /// When drills run (cron in the job's time zone); null: never.
    pub drill_schedule: Option<String>,
    /// Incremental backups, or null when every backup is full.
    pub incremental: Option<Incremental>,
    /// When the newest drill ended, and how: `ok` or `failed`.
    pub last_drill_at: Option<DateTime<Utc>>,
    pub last_drill_outcome: Option<String>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next firing (null when the job is disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The scheduler found the job late: a firing passed without a run.
    pub overdue: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    pub items: Vec<Job>,
    pub next_cursor: Option<String>,
}

/// The id of the run a request started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also delete the job's history rows and their archives in the targets.
    pub purge: Option<bool>,
}

pub fn view(r: JobRecord) -> Job {
    let j = r.job;
    let next_run_at = j
        .enabled
        .then(|| Schedule::parse(&j.schedule, &j.timezone).ok())
        .flatten()
        .and_then(|s| s.next_after(Utc::now()));
    let p = j.retention;
    Job {
        id: j.id,
        organization_id: j.organization_id,
        name: j.name,
        schedule: j.schedule,
        enabled: j.enabled,
        target_id: j.target_id,
        app_ids: r.app_ids,
        keep_all: p.keep_all,
        keep_last: p.keep_last,
        keep_hourly: p.keep_hourly,
        keep_daily: p.keep_daily,
        keep_weekly: p.keep_weekly,
        keep_monthly: p.keep_monthly,
        keep_yearly: p.keep_yearly,
        notify_on_success: j.notify_on_success,
        notify_on_failure: j.notify_on_failure,
        timezone: j.timezone,
        compression: match j.compression {
            Compression::Gzip => CompressionType::Gzip,
            Compression::Zstd => CompressionType::Zstd,
        },
        drill_schedule: j.drill_schedule,
        incremental: j.incremental_full_every.map(|n| Incremental {
            full_every: i64::from(n),
        }),
        last_drill_at: j.last_drill_at,
        last_drill_outcome: j.last_drill_outcome,
        last_run_at: j.last_run_at,
        next_run_at,
        overdue: r.overdue,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn keep(field: &str, v: Option<i64>) -> Result<Option<u32>, ApiError> {
    v.map(|n| {
        u32::try_from(n)
            .ok()
            .filter(|n| i32::try_from(*n).is_ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!(
                        "{field} must be a non-negative integer (at most {}) or null",
                        i32::MAX
                    ),
                )
            })
    })
    .transpose()
}

/// Checks everything a job write needs and builds the store's input.
pub(crate) async fn prepare(state: &State, org: Uuid, input: JobInput) -> Result<NewJob, ApiError> {
    check_name("name", &input.name)?;
    if let Err(e) = Schedule::parse(&input.schedule, &input.timezone) {
        let field = match e {
            ScheduleError::TimeZone(_) => "timezone",
            ScheduleError::Cron { .. } | ScheduleError::Never(_) => "schedule",
        };
        return Err(ApiError::invalid(field, format!("{field}: {e}")));
    }
    if let Some(drill) = &input.drill_schedule {
        if let Err(e) = Schedule::parse(drill, &input.timezone) {
            return Err(ApiError::invalid(
                "drillSchedule",
                format!("drillSchedule: {e}"),
            ));
        }
    }
    let incremental_full_every = input
        .incremental
        .map(|i| {
            u32::try_from(i.full_every)
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "incremental.fullEvery",
                        "incremental.fullEvery must be an integer from 1 to 1000 (backups per chain: one full, then fullEvery - 1 incrementals)",
                    )
                })
        })
        .transpose()?;
    let retention = RetentionPolicy {
        keep_all: input.keep_all,
        keep_last: keep("keepLast", input.keep_last)?,
        keep_hourly: keep("keepHourly", input.keep_hourly)?,
        keep_daily: keep("keepDaily", input.keep_daily)?,
        keep_weekly: keep("keepWeekly", input.keep_weekly)?,
        keep_monthly: keep("keepMonthly", input.keep_monthly)?,
        keep_yearly: keep("keepYearly", input.keep_yearly)?,
    };
    if let Err(message) = retention.validate() {
        let named = [
            ("keepLast", input.keep_last),
            ("keepHourly", input.keep_hourly),
            ("keepDaily", input.keep_daily),
            ("keepWeekly", input.keep_weekly),
            ("keepMonthly", input.keep_monthly),
            ("keepYearly", input.keep_yearly),
        ];
        let field = named
            .iter()
            .find(|(name, _)| message.starts_with(name))
            .or_else(|| named.iter().find(|(_, v)| v.is_some()))
            .map_or("keepLast", |(name, _)| name);
        return Err(ApiError::invalid(field, message));
    }
    let store = state.engine.store();
    if let Some(target) = input.target_id {
        if !store.target_usable_by(org, target).await? {
            return Err(ApiError::invalid(
                "targetId",
                "targetId: no such target in this organization or the system",
            ));
        }
    }
    let mut app_ids = input.app_ids;
    app_ids.sort();
    app_ids.dedup();
    let foreign = store.foreign_app_ids(org, &app_ids).await?;
    if !foreign.is_empty() {
        return Err(ApiError::invalid(
            "appIds",
            format!(
                "appIds: no such app in this organization: {}",
                foreign.join(", ")
            ),
        ));
    }
    Ok(NewJob {
        organization_id: org,
        name: input.name,
        schedule: input.schedule,
        timezone: input.timezone,
        enabled: input.enabled,
        target_id: input.target_id,
        retention,
        notify_on_success: input.notify_on_success,
        notify_on_failure: input.notify_on_failure,
        compression: match input.compression {
            CompressionType::Gzip => Compression::Gzip,
            CompressionType::Zstd => Compression::Zstd,
        },
        compression_level: None,
        drill_schedule: input.drill_schedule,
        incremental_full_every,
        app_ids,
    })
}

/// The organization's job, or 404.
pub(super) async fn owned(state: &State, org: Uuid, id: Uuid) -> Result<JobRecord, ApiError> {
    let record = state.engine.store().job_record(id).await?;
    if record.job.organization_id != org {
        return Err(ApiError::NotFound("job"));
    }
    Ok(record)
}

/// Lists the organization's jobs, oldest first.
#[utoipa::path(
    tag = "jobs",
    params(("orgId" = Uuid, Path), PageParams),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/jobs")]
pub async fn list_jobs(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    q: ApiQuery<PageParams>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let limit = json::limit(q.0.limit)?;
    let after = json::decode_cursor(q.0.cursor.as_deref())?;
    let rows = state
        .engine
        .store()
        .list_job_records(org, after, limit)
        .await?;
    let next_cursor = json::next_cursor(&rows, limit, |r| {
        json::encode_cursor(r.created_at, r.job.id)
    });
    Ok(HttpResponse::Ok().json(JobList {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }))
}

/// Creates a job.
#[utoipa::path(
    tag = "jobs",
    params(("orgId" = Uuid, Path)),
    request_body = JobInput,
    responses((status = 201, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody))
)]
#[post("/organizations/{orgId}/backups/jobs")]
pub async fn create_job(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    body: ApiJson<JobInput>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let job = prepare(&state, org, body.0).await?;
    let store = state.engine.store();
    let id = store.insert_job(&job).await?;
    Ok(HttpResponse::Created().json(view(store.job_record(id).await?)))
}

/// Reads a job.
#[utoipa::path(
    tag = "jobs",
    params(("orgId" = Uuid, Path), ("jobId" = Uuid, Path)),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/jobs/{jobId}")]
pub async fn get_job(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    Ok(HttpResponse::Ok().json(view(owned(&state, org, id).await?)))
}

/// Replaces a job (every field; omitted ones take their defaults).
#[utoipa::path(
    tag = "jobs",
    params(("orgId" = Uuid, Path), ("jobId" = Uuid, Path)),
    request_body = JobInput,
    responses((status = 200, body = Job), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody))
)]
#[put("/organizations/{orgId}/backups/jobs/{jobId}")]
pub async fn update_job(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
    body: ApiJson<JobInput>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    owned(&state, org, id).await?;
    let job = prepare(&state, org, body.0).await?;
    let store = state.engine.store();
    store.update_job(id, &job).await?;
    Ok(HttpResponse::Ok().json(view(store.job_record(id).await?)))
}

/// Deletes a job. Its history rows and archives stay (listable, restorable) unless `purge=true`,
/// which deletes the archives from their targets and then the rows.
#[utoipa::path(
    tag = "jobs",
    params(("orgId" = Uuid, Path), ("jobId" = Uuid, Path), DeleteParams),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 502, body = ErrorBody))
)]
#[delete("/organizations/{orgId}/backups/jobs/{jobId}")]
pub async fn delete_job(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
    q: ApiQuery<DeleteParams>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    owned(&state, org, id).await?;
    let purge = q.0.purge.unwrap_or(false);
    if purge {
        purge_archives(&state, id).await?;
    }
    if !state.engine.store().delete_job(org, id, purge).await? {
        return Err(ApiError::NotFound("job"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes every archive of the job's history from its target; the first failure stops the
/// purge (the job and its rows stay, so it can be retried).
pub(crate) async fn purge_archives(state: &State, job: Uuid) -> Result<(), ApiError> {
    let store = state.engine.store();
    let archives = store.job_archives(job).await?;
    let mut storages: HashMap<Uuid, TargetStorage> = HashMap::new();
    for a in archives {
        let Some(target_id) = a.target_id else {
            tracing::warn!(backup_id = %a.backup_id, "archive's target was deleted; cannot purge it");
            continue;
        };
        let storage = match storages.entry(target_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let target = store.target(target_id).await?;
                let allow_local = state.engine.settings().allow_local_backups;
                e.insert(
                    TargetStorage::open(&target.config, allow_local)
                        .map_err(|e| ApiError::Storage(format!("target {target_id}: {e}")))?,
                )
            }
        };
        storage.delete(&a.storage_path).await.map_err(|e| {
            tracing::warn!(backup_id = %a.backup_id, error = %e, "purge: delete failed");
            ApiError::Storage(format!(
                "could not delete the archive of backup {} from its target; nothing was deleted from the database",
                a.backup_id
            ))
        })?;
    }
    Ok(())
}

/// Asks for a run of the job now; a scheduler-role instance picks it up. 202 with the run's id
/// (the `runId` of its history rows).
#[utoipa::path(
    tag = "jobs",
    params(("orgId" = Uuid, Path), ("jobId" = Uuid, Path)),
    responses((status = 202, body = Accepted), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[post("/organizations/{orgId}/backups/jobs/{jobId}/run")]
pub async fn run_job(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    owned(&state, org, id).await?;
    let run = state
        .engine
        .store()
        .request_run(id, RunReason::Manual, None)
        .await?;
    Ok(HttpResponse::Accepted().json(Accepted { id: run }))
}

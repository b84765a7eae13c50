//! `GET /api/v1/workers` (admin): what each actor of this process is doing — idle, busy or backing
//! off, how many tasks it finished and how many failed, its last error. Each process answers for
//! its own actors (a `--role web` process has the crew only; a scheduler has the supervisor and
//! the scheduler too), with its instance id so that answers from several replicas can be told apart.

use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use vardo_actors::worker::{WorkerState, WorkerStatus};

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::State;

#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WorkerStateView {
    Idle,
    Busy,
    BackingOff,
    /// The actor did not answer within 2 s, or has stopped.
    Unresponsive,
}

/// One actor's report of itself.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    /// `lock`, `volume-runner`, `uploader`, `pruner`, `supervisor`, `scheduler`, `notifier`.
    pub name: String,
    pub state: WorkerStateView,
    /// Tasks in progress.
    pub busy: u64,
    /// Tasks finished well since the process started.
    pub done: u64,
    /// Tasks that failed since the process started (and failures outside tasks, such as a lock
    /// renewal that Redis did not answer).
    pub errors: u64,
    /// Failures since the last task that finished well.
    pub consecutive_errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// While backing off: when it tries again.
    pub retry_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerList {
    /// This process among the engines sharing the database.
    pub instance: String,
    pub workers: Vec<Worker>,
}

fn view(s: WorkerStatus) -> Worker {
    Worker {
        name: s.name.to_owned(),
        state: match s.state {
            WorkerState::Idle => WorkerStateView::Idle,
            WorkerState::Busy => WorkerStateView::Busy,
            WorkerState::BackingOff => WorkerStateView::BackingOff,
        },
        busy: s.busy as u64,
        done: s.done,
        errors: s.errors,
        consecutive_errors: s.consecutive_errors,
        last_error: s.last_error,
        last_error_at: s.last_error_at,
        retry_at: s.retry_at,
    }
}

/// Reports what each actor of this process is doing.
#[utoipa::path(
    tag = "workers",
    responses((status = 200, body = WorkerList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody))
)]
#[get("/workers")]
pub async fn list_workers(
    state: web::Data<State>,
    who: Principal,
) -> Result<HttpResponse, ApiError> {
    who.admin()?;
    let workers = state
        .crew
        .report()
        .await
        .into_iter()
        .map(|r| match r {
            Ok(status) => view(status),
            Err((name, why)) => Worker {
                name: name.to_owned(),
                state: WorkerStateView::Unresponsive,
                busy: 0,
                done: 0,
                errors: 0,
                consecutive_errors: 0,
                last_error: Some(why),
                last_error_at: None,
                retry_at: None,
            },
        })
        .collect();
    Ok(HttpResponse::Ok().json(WorkerList {
        instance: state.engine.instance().to_owned(),
        workers,
    }))
}

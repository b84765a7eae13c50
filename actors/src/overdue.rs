//! Overdue jobs: after each scheduler tick (scheduler.rs), the jobs whose last success is too old
//! are marked overdue, and each overdue episode's start is announced once, as an "overdue" notice
//! to the organization's channels.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::engine::Engine;
use crate::schedule::Schedule;
use crate::store::{ScheduledJob, StoreError};

/// A job is overdue when its last success (or, never successful, its creation) is older than
/// twice its schedule's interval. Each episode is announced once, by the instance that starts it.
pub async fn check_overdue(
    engine: &Engine,
    jobs: &[ScheduledJob],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let store = engine.store();
    let last_success = store.last_success_by_job().await?;
    for job in jobs {
        let Ok(schedule) = Schedule::parse(&job.schedule, &job.timezone) else {
            continue;
        };
        let Some(interval) = schedule.interval_after(now) else {
            continue;
        };
        let reference = last_success.get(&job.id).copied().unwrap_or(job.created_at);
        let overdue = now - reference > interval * 2;
        if overdue != job.overdue_since.is_some()
            && store.set_overdue(job.id, overdue).await?
            && overdue
        {
            tracing::warn!(job_id = %job.id, job = %job.name, last_success = %reference, "job is overdue");
            job_overdue(engine, job.id).await;
        }
    }
    Ok(())
}

/// Called once when a job's overdue episode starts: an "overdue" notice to the org's channels.
async fn job_overdue(engine: &Engine, job_id: Uuid) {
    if let Err(e) = crate::notify::enqueue_overdue(engine, job_id).await {
        tracing::error!(%job_id, error = %e, "could not enqueue the overdue notice");
    }
}

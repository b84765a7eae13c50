//! What follows every run's end, in order: retention pruning of the job's series, notifications,
//! and the run's event for other systems. Each step records its own failure and never changes the
//! run's rows.

use crate::engine::Engine;
use crate::messages::RunFinished;

/// Called by the supervisor once a run's rows are settled.
pub async fn run_finished(engine: &Engine, finished: &RunFinished) {
    // Retention: prune the job's series; failures stay on the rows for the next prune.
    if finished.skipped.is_none() {
        if let Err(e) = crate::pruner::prune_job(engine, finished.job_id).await {
            tracing::error!(run_id = %finished.run_id, job_id = %finished.job_id, error = %e, "retention pruning failed");
        }
    }
    // Notifications: the run's notices go to the outbox with the run's marker in one transaction;
    // if that fails, the notifier's sweep enqueues them once the database answers.
    if let Err(e) =
        crate::notify::enqueue_run(engine, finished.run_id, finished.job_id, &finished.rows).await
    {
        tracing::error!(run_id = %finished.run_id, error = %e, "could not enqueue the run's notices");
    }
    // Events: the run's result on the backup-events stream (and its answer to a deploy request).
    if engine.settings().events.publish {
        if let Err(e) = crate::events_out::publish_run(engine, finished).await {
            tracing::error!(run_id = %finished.run_id, error = %e, "could not publish the run's events");
        }
    }
}

/// Called once when a job's overdue episode starts: an "overdue" notice to the org's channels.
pub async fn job_overdue(engine: &Engine, job_id: uuid::Uuid) {
    if let Err(e) = crate::notify::enqueue_overdue(engine, job_id).await {
        tracing::error!(%job_id, error = %e, "could not enqueue the overdue notice");
    }
}

//! What follows every run's end, in order: retention pruning of the job's series, then the run's
//! notifications and events for other systems (to their outboxes). Each step records its own
//! failure and never changes the run's rows.

use crate::crew::Crew;
use crate::engine::Engine;
use crate::messages::RunFinished;

/// Called by the supervisor once a run's rows are settled.
pub async fn run_finished(engine: &Engine, crew: &Crew, finished: &RunFinished) {
    // Retention: prune the job's series; failures stay on the rows for the next prune. A run that
    // backed up nothing prunes nothing.
    if finished.failure.is_none() {
        if let Err(e) = crew.prune(finished.job_id).await {
            tracing::error!(run_id = %finished.run_id, job_id = %finished.job_id, error = %e, "retention pruning failed");
        }
    }
    // Notifications and events: the run's notices and its events for other systems (its result
    // on the backup-events stream, its answer to a deploy request) go to the outboxes with the
    // run's marker in one transaction; if that fails, the notifier's sweep enqueues them once the
    // database answers. The publisher and the notifier deliver them.
    if let Err(e) = crate::notify::enqueue_run(engine, &finished.into()).await {
        tracing::error!(run_id = %finished.run_id, error = %e, "could not enqueue the run's notices and events");
    }
}

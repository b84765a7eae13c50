//! What follows every run's end, in order: retention pruning of the job's series, notifications,
//! and the run's event for other systems. Each step records its own failure and never changes the
//! run's rows.

use crate::engine::Engine;
use crate::messages::RunFinished;

/// Called by the supervisor once a run's rows are settled.
pub async fn run_finished(engine: &Engine, finished: &RunFinished) {
    let _ = (engine, finished);
}

//! Graceful shutdown of the scheduler role's work, in order: take nothing new (scheduler,
//! dispatcher, deploy consumer: [`Engine::begin_shutdown`]; the supervisor: [`Drain`]); let the
//! live runs and restores finish within the grace period; then stop those left ([`CancelAll`]),
//! their rows failed "engine shutting down"; wait for the upload tasks to abort their multipart
//! uploads; remove this process's helper containers; mark its instance stopped.

use std::time::Duration;

use actix::Addr;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::messages::{CancelAll, Drain};
use crate::run::RunSupervisor;

/// How long the rows of cancelled work may take to be settled, and uploads to abort, after the
/// grace period. Past it the process ends anyway; the janitor of another instance settles what is
/// left once the lease runs out.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// What a shutdown did, for its log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Runs and restores live when the shutdown began.
    pub live: usize,
    /// Of those, still live when the grace ran out, and so stopped.
    pub cancelled: usize,
    /// Whether everything was settled (rows, uploads) before the limits.
    pub settled: bool,
    /// Helper containers of this process removed at the end.
    pub helpers_removed: usize,
}

/// Drains `supervisor` (may be None: the web role runs none) as the module note says. `hurry`
/// (a second signal) ends the grace period early.
pub async fn drain(
    engine: &Engine,
    supervisor: Option<&Addr<RunSupervisor>>,
    hurry: &CancellationToken,
) -> ShutdownReport {
    engine.begin_shutdown();
    let mut report = ShutdownReport {
        settled: true,
        ..Default::default()
    };
    let Some(supervisor) = supervisor else {
        // No workers ran here (the web role, or a database that never answered): nothing to drain.
        return report;
    };
    let grace = engine.settings().shutdown_grace;
    match supervisor.send(Drain).await {
        Ok(idle) => {
            report.live = idle.live;
            if idle.live > 0 {
                tracing::info!(
                    live = idle.live,
                    grace_s = grace.as_secs(),
                    "waiting for runs and restores to finish"
                );
            }
            let finished = tokio::select! {
                done = idle.settled => done.is_ok(),
                () = tokio::time::sleep(grace) => false,
                () = hurry.cancelled() => false,
            };
            if !finished {
                report.settled = cancel_all(supervisor, &mut report).await;
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "the run supervisor is gone");
            report.settled = false;
        }
    }
    tracing::debug!("runs and restores settled; waiting for the uploads to end");
    if !crate::storage::uploads_settled(SETTLE_LIMIT).await {
        tracing::error!(
            "some uploads did not end within {SETTLE_LIMIT:?}; their multipart uploads may be left"
        );
        report.settled = false;
    }
    tracing::debug!("uploads ended; removing this process's helper containers");
    match crate::instance::remove_own_helpers(engine).await {
        Ok(n) => report.helpers_removed = n,
        Err(e) => {
            tracing::warn!(error = %e, "could not remove this process's helper containers; another instance's janitor does")
        }
    }
    tracing::debug!("helpers removed; marking the instance stopped");
    if let Err(e) = engine.store().stop_instance(engine.instance()).await {
        tracing::warn!(error = %e, "could not mark this instance stopped");
    }
    report
}

/// Stops every live run and restore and waits until their rows are settled.
async fn cancel_all(supervisor: &Addr<RunSupervisor>, report: &mut ShutdownReport) -> bool {
    let Ok(idle) = supervisor.send(CancelAll).await else {
        return false;
    };
    report.cancelled = idle.live;
    tracing::warn!(
        cancelled = idle.live,
        "grace period over: stopping the runs and restores left"
    );
    match tokio::time::timeout(SETTLE_LIMIT, idle.settled).await {
        Ok(Ok(())) => true,
        _ => {
            tracing::error!("some runs or restores were not settled within {SETTLE_LIMIT:?}; a janitor settles them after the lease");
            false
        }
    }
}

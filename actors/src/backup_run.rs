//! BackupRun: one actor per attempt of one run of one job. Its work ([`crate::backup::execute`])
//! runs as a separate task so that a panic is caught and reported; it refreshes the heartbeat of
//! its rows while the work makes progress, and tells its supervisor how it ended ([`RunEnded`]).

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::crew::Crew;
use crate::engine::Engine;
use crate::messages::RunEnded;
use crate::model::RunReason;
use crate::supervision::{panic_message, SHUTTING_DOWN};

/// One attempt of one run. A restarted run is a new `BackupRun` with the same `run_id`, which
/// carries on with the rows the earlier attempt did not settle.
pub struct BackupRun {
    pub(crate) engine: Engine,
    pub(crate) crew: Crew,
    /// Cancelled by the supervisor when a shutdown's grace ran out: the work is aborted.
    pub(crate) cancel: CancellationToken,
    pub(crate) run_id: Uuid,
    pub(crate) job_id: Uuid,
    pub(crate) reason: RunReason,
    pub(crate) scheduled_for: Option<DateTime<Utc>>,
    pub(crate) request_id: Option<String>,
    pub(crate) supervisor: Recipient<RunEnded>,
    /// When the run's first attempt started: its archives' timestamp, kept across restarts.
    pub(crate) started_at: DateTime<Utc>,
    /// Why each earlier attempt stopped (empty for a first attempt).
    pub(crate) restarted: Vec<String>,
}

impl Actor for BackupRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let progress = self.engine.board().start();
        let work = actix::spawn(crate::backup::execute(
            self.engine.clone(),
            self.crew.clone(),
            crate::backup::RunSpec {
                run_id: self.run_id,
                job_id: self.job_id,
                reason: self.reason,
                scheduled_for: self.scheduled_for,
                started: self.started_at,
                restarted: std::mem::take(&mut self.restarted),
            },
            progress.clone(),
        ));
        let every = self.engine.settings().heartbeat_interval;
        ctx.run_interval(every, move |act, _| {
            let (engine, run_id) = (act.engine.clone(), act.run_id);
            // A heartbeat says the run makes progress: a run whose work moves nothing lets it go
            // stale (its watchdog fails it at the stall deadline; the janitor, if that fails too).
            if !progress.is_fresh(engine.settings().stall_deadline) {
                tracing::warn!(%run_id, "no progress: the heartbeat is not refreshed");
                return;
            }
            actix::spawn(async move {
                if let Err(e) = engine.store().heartbeat_run(run_id).await {
                    tracing::warn!(%run_id, error = %e, "heartbeat failed");
                }
            });
        });
        let cancel = self.cancel.clone();
        let grace = self.engine.settings().shutdown_grace;
        let watch = async move {
            let mut work = work;
            // Aborting drops the run's future between two awaits: its upload task aborts the
            // multipart upload, its helper guards remove their containers.
            let joined = tokio::select! {
                joined = &mut work => joined,
                () = cancel.cancelled() => {
                    work.abort();
                    work.await
                }
            };
            // (outcome, whether another attempt may do better)
            match joined {
                Ok(Ok(outcome)) => (Ok(outcome), false),
                Ok(Err(e)) => (Err(format!("run failed: {e}")), true),
                Err(join) if join.is_panic() => (
                    Err(format!("run crashed: {}", panic_message(join.into_panic()))),
                    true,
                ),
                Err(_) => (
                    Err(format!(
                        "{SHUTTING_DOWN}: the run did not finish within the shutdown grace \
                         period ({} s)",
                        grace.as_secs()
                    )),
                    false,
                ),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|(outcome, retry), act, ctx| {
            act.supervisor.do_send(RunEnded {
                run_id: act.run_id,
                job_id: act.job_id,
                reason: act.reason,
                request_id: act.request_id.take(),
                scheduled_for: act.scheduled_for,
                started_at: act.started_at,
                outcome,
                retry: retry && !act.cancel.is_cancelled(),
            });
            ctx.stop();
        }));
    }
}

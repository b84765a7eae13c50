//! BackupRun (one actor per run) and RunSupervisor, which starts runs and restores and records the
//! outcome in the database whatever happened: an error or a panic inside a run marks its unfinished
//! rows `failed` with the reason, so no row is left `running`.
//!
//! Shutdown: [`Drain`] makes the supervisor refuse new work (a run or restore handed to it then is
//! settled `failed` "engine shutting down" at once) and tells when the live ones have all been
//! settled; [`CancelAll`] then stops those still going — a run is aborted (its upload aborts its
//! multipart upload, its helper container is removed), a restore stops where it safely can — and
//! their rows are failed "engine shutting down" before the supervisor reports idle.

use std::collections::HashMap;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::Engine;
use crate::messages::{
    CancelAll, Drain, Idle, RestoreEnded, RunEnded, RunFinished, RunOutcome, StartRestore, StartRun,
};
use crate::model::{Restore, RunFailure, RunFailureReason, RunReason};
use crate::supervision::{panic_message, SHUTTING_DOWN};

pub use crate::backup::BackupError;

/// Starts runs and restores, and settles their rows when they end.
pub struct RunSupervisor {
    engine: Engine,
    run_waiters: HashMap<Uuid, oneshot::Sender<RunFinished>>,
    restore_waiters: HashMap<Uuid, oneshot::Sender<Restore>>,
    /// Runs and restores started and not yet settled, with the token that stops each.
    live: HashMap<Uuid, CancellationToken>,
    /// Set by [`Drain`]: nothing new starts.
    draining: bool,
    /// Told once `live` is empty.
    idle_waiters: Vec<oneshot::Sender<()>>,
}

impl RunSupervisor {
    pub fn start(engine: Engine) -> Addr<Self> {
        Actor::start(Self {
            engine,
            run_waiters: HashMap::new(),
            restore_waiters: HashMap::new(),
            live: HashMap::new(),
            draining: false,
            idle_waiters: Vec::new(),
        })
    }

    /// A receiver told once nothing is live (at once when nothing is).
    fn idle(&mut self) -> Idle {
        let (tx, rx) = oneshot::channel();
        if self.live.is_empty() {
            let _ = tx.send(());
        } else {
            self.idle_waiters.push(tx);
        }
        Idle {
            live: self.live.len(),
            settled: rx,
        }
    }

    fn settled(&mut self, id: Uuid) {
        self.live.remove(&id);
        if self.live.is_empty() {
            for tx in self.idle_waiters.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Handler<Drain> for RunSupervisor {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        MessageResult(self.idle())
    }
}

impl Handler<CancelAll> for RunSupervisor {
    type Result = MessageResult<CancelAll>;

    fn handle(&mut self, _: CancelAll, _: &mut Context<Self>) -> Self::Result {
        for cancel in self.live.values() {
            cancel.cancel();
        }
        MessageResult(self.idle())
    }
}

impl Actor for RunSupervisor {
    type Context = Context<Self>;
}

impl Handler<StartRun> for RunSupervisor {
    type Result = MessageResult<StartRun>;

    fn handle(&mut self, msg: StartRun, ctx: &mut Context<Self>) -> Self::Result {
        let run_id = msg.run_id.unwrap_or_else(Uuid::new_v4);
        if let Some(tx) = msg.on_finish {
            self.run_waiters.insert(run_id, tx);
        }
        let cancel = CancellationToken::new();
        self.live.insert(run_id, cancel.clone());
        if self.draining {
            // Settled like a run that stopped before its rows: recorded, notified, answered.
            ctx.notify(RunEnded {
                run_id,
                job_id: msg.job_id,
                reason: msg.reason,
                request_id: msg.request_id,
                started_at: Utc::now(),
                outcome: Err(format!("{SHUTTING_DOWN}: the run was not started")),
            });
            return MessageResult(run_id);
        }
        BackupRun {
            cancel,
            engine: self.engine.clone(),
            run_id,
            job_id: msg.job_id,
            reason: msg.reason,
            scheduled_for: msg.scheduled_for,
            request_id: msg.request_id,
            supervisor: ctx.address(),
            started_at: Utc::now(),
        }
        .start();
        MessageResult(run_id)
    }
}

impl Handler<RunEnded> for RunSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: RunEnded, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let settle = async move {
            let store = engine.store();
            if let Err(why) = &msg.outcome {
                tracing::error!(run_id = %msg.run_id, job_id = %msg.job_id, %why, "run stopped early");
                if let Err(e) = store.fail_unfinished_run(msg.run_id, why).await {
                    // The janitor's lease sweep settles these rows if the database is away now.
                    tracing::error!(run_id = %msg.run_id, error = %e, "could not settle the run's rows");
                }
            }
            if let Err(e) = store.finish_run_request(msg.run_id).await {
                tracing::warn!(run_id = %msg.run_id, error = %e, "could not mark the run's request finished");
            }
            // Rows that cannot be read now are not taken for no rows: the run is not recorded as
            // rowless, and its waiter gets neither rows nor a failure (the CLI exits 1).
            let (rows, failure) = match store.run_backups(msg.run_id).await {
                Ok(rows) if rows.is_empty() => (rows, Some(rowless_failure(&msg.outcome))),
                Ok(rows) => (rows, None),
                Err(e) => {
                    tracing::error!(run_id = %msg.run_id, error = %e, "could not read the run's rows");
                    (Vec::new(), None)
                }
            };
            if let Some(failure) = &failure {
                record_failure(&engine, &msg, failure).await;
            }
            let finished = RunFinished {
                run_id: msg.run_id,
                job_id: msg.job_id,
                reason: msg.reason,
                request_id: msg.request_id.clone(),
                rows,
                failure,
            };
            crate::after_run::run_finished(&engine, &finished).await;
            finished
        };
        Box::pin(settle.into_actor(self).map(|finished, act, _| {
            act.settled(finished.run_id);
            if let Some(tx) = act.run_waiters.remove(&finished.run_id) {
                let _ = tx.send(finished);
            }
        }))
    }
}

/// Why a run that left no row backed up nothing.
fn rowless_failure(outcome: &Result<RunOutcome, String>) -> RunFailure {
    match outcome {
        Ok(RunOutcome::Skipped(failure)) => failure.clone(),
        Err(why) => RunFailure::new(RunFailureReason::Error, why.clone()),
        Ok(RunOutcome::Finished) => RunFailure::new(
            RunFailureReason::Error,
            "the run ended without recording any volume",
        ),
    }
}

/// Records a run without rows in table `run`, so that the history shows it. A job that no longer
/// exists (or never did) has no organization to show it to: only the log tells.
async fn record_failure(engine: &Engine, msg: &RunEnded, failure: &RunFailure) {
    tracing::warn!(run_id = %msg.run_id, job_id = %msg.job_id, reason = failure.reason.as_str(),
        why = %failure.message, "the run backed up nothing");
    if let Err(e) = engine
        .store()
        .record_run_failure(msg.run_id, msg.job_id, failure, msg.started_at)
        .await
    {
        tracing::error!(run_id = %msg.run_id, error = %e, "could not record the run's failure");
    }
}

impl Handler<StartRestore> for RunSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StartRestore, ctx: &mut Context<Self>) {
        if let Some(tx) = msg.on_finish {
            self.restore_waiters.insert(msg.restore_id, tx);
        }
        let cancel = CancellationToken::new();
        self.live.insert(msg.restore_id, cancel.clone());
        if self.draining {
            ctx.notify(RestoreEnded {
                restore_id: msg.restore_id,
                outcome: Err(format!("{SHUTTING_DOWN}: the restore was not started")),
                ours: true,
            });
            return;
        }
        crate::restore::RestoreRun::new(
            self.engine.clone(),
            msg.restore_id,
            ctx.address().recipient(),
            cancel,
        )
        .start();
    }
}

impl Handler<RestoreEnded> for RunSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: RestoreEnded, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let settle = async move {
            let store = engine.store();
            let outcome = match &msg.outcome {
                Err(why) if !msg.ours => {
                    tracing::warn!(restore_id = %msg.restore_id, %why, "restore left to another engine");
                    Ok(())
                }
                Ok(()) => {
                    store
                        .finish_restore(
                            msg.restore_id,
                            crate::model::Status::Success,
                            "restore complete",
                        )
                        .await
                }
                Err(why) => {
                    store
                        .finish_restore(msg.restore_id, crate::model::Status::Failed, why)
                        .await
                }
            };
            if let Err(e) = outcome {
                tracing::error!(restore_id = %msg.restore_id, error = %e, "could not record the restore's end");
            }
            store.restore(msg.restore_id).await.ok()
        };
        Box::pin(settle.into_actor(self).map(move |restore, act, _| {
            act.settled(msg.restore_id);
            if let (Some(restore), Some(tx)) =
                (restore, act.restore_waiters.remove(&msg.restore_id))
            {
                let _ = tx.send(restore);
            }
        }))
    }
}

/// One run of one job. Its work runs as a separate task so that a panic is caught and reported,
/// and it refreshes the heartbeat of its rows while its work makes progress.
pub struct BackupRun {
    engine: Engine,
    /// Cancelled by the supervisor when a shutdown's grace ran out: the work is aborted.
    cancel: CancellationToken,
    run_id: Uuid,
    job_id: Uuid,
    reason: RunReason,
    scheduled_for: Option<DateTime<Utc>>,
    request_id: Option<String>,
    supervisor: Addr<RunSupervisor>,
    started_at: DateTime<Utc>,
}

impl Actor for BackupRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let progress = crate::progress::Progress::new();
        let work = actix::spawn(crate::backup::execute(
            self.engine.clone(),
            self.run_id,
            self.job_id,
            self.reason,
            self.scheduled_for,
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
            match joined {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(e)) => Err(format!("run failed: {e}")),
                Err(join) if join.is_panic() => {
                    Err(format!("run crashed: {}", panic_message(join.into_panic())))
                }
                Err(_) => Err(format!(
                    "{SHUTTING_DOWN}: the run did not finish within the shutdown grace period \
                     ({} s)",
                    grace.as_secs()
                )),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|outcome, act, ctx| {
            act.supervisor.do_send(RunEnded {
                run_id: act.run_id,
                job_id: act.job_id,
                reason: act.reason,
                request_id: act.request_id.take(),
                started_at: act.started_at,
                outcome,
            });
            ctx.stop();
        }));
    }
}

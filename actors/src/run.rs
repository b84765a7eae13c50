//! RunSupervisor: starts runs (a `BackupRun` actor per attempt, backup_run.rs) and restores, and
//! records the outcome in the database whatever happened.
//!
//! A run that stopped on an error another attempt may not meet (the database went away, its task
//! panicked) is restarted after a backoff, within a budget ([`RESTART_BUDGET`] restarts, waiting
//! [`restart_backoff`]); the new attempt carries on with the rows not yet settled and writes where
//! the first one would have. Once the budget is spent, the run's unfinished rows are marked
//! `failed` with the reason, so no row is left `running`. While it waits, the supervisor reports
//! itself backing off.
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

use crate::backup_run::BackupRun;
use crate::crew::Crew;
use crate::engine::Engine;
use crate::messages::{
    CancelAll, Drain, Idle, Report, RestoreEnded, RunEnded, RunFinished, RunOutcome, StartRestore,
    StartRun, StartVerify, VerifyEnded,
};
use crate::model::{Restore, RunFailure, RunFailureReason, Verification};
use crate::supervision::{restart_backoff, RESTART_BUDGET, SHUTTING_DOWN};
use crate::verify::{Verdict, VerifyRun};
use crate::worker::{Task, WorkerBook};

pub use crate::backup::BackupError;

mod drills;

/// Starts runs and restores, and settles their rows when they end.
pub struct RunSupervisor {
    engine: Engine,
    crew: Crew,
    run_waiters: HashMap<Uuid, oneshot::Sender<RunFinished>>,
    restore_waiters: HashMap<Uuid, oneshot::Sender<Restore>>,
    verify_waiters: HashMap<Uuid, oneshot::Sender<Verification>>,
    drill_waiters: HashMap<Uuid, oneshot::Sender<crate::model::Drill>>,
    /// Runs and restores started and not yet settled, with the token that stops each.
    live: HashMap<Uuid, CancellationToken>,
    /// Set by [`Drain`]: nothing new starts.
    draining: bool,
    /// Told once `live` is empty.
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Why each earlier attempt stopped, per run that has been restarted.
    restarts: HashMap<Uuid, Vec<String>>,
    /// The book's task of each live run and restore.
    tasks: HashMap<Uuid, Task>,
    book: WorkerBook,
}

impl RunSupervisor {
    pub fn start(engine: Engine, crew: Crew) -> Addr<Self> {
        Actor::start(Self {
            engine,
            crew,
            run_waiters: HashMap::new(),
            restore_waiters: HashMap::new(),
            verify_waiters: HashMap::new(),
            drill_waiters: HashMap::new(),
            live: HashMap::new(),
            draining: false,
            idle_waiters: Vec::new(),
            restarts: HashMap::new(),
            tasks: HashMap::new(),
            book: WorkerBook::new("supervisor"),
        })
    }

    /// Starts a live run's next attempt.
    fn attempt(&mut self, run: Attempt, ctx: &mut Context<Self>) {
        let Some(cancel) = self.live.get(&run.run_id).cloned() else {
            return;
        };
        BackupRun {
            cancel,
            engine: self.engine.clone(),
            crew: self.crew.clone(),
            run_id: run.run_id,
            job_id: run.job_id,
            reason: run.reason,
            scheduled_for: run.scheduled_for,
            request_id: run.request_id,
            supervisor: ctx.address().recipient(),
            started_at: run.started_at,
            restarted: self.restarts.get(&run.run_id).cloned().unwrap_or_default(),
        }
        .start();
    }

    /// Schedules the restart of a run that stopped on `why`, when the budget allows; false when
    /// it does not (spent, or a shutdown began).
    fn restart(&mut self, msg: &RunEnded, why: &str, ctx: &mut Context<Self>) -> bool {
        let done = self.restarts.get(&msg.run_id).map_or(0, Vec::len);
        let done = u32::try_from(done).unwrap_or(u32::MAX);
        if !msg.retry || self.draining || done >= RESTART_BUDGET {
            return false;
        }
        let attempt = done + 1;
        let wait = restart_backoff(attempt);
        let line = format!(
            "the run stopped ({why}); restarted after {} s (restart {attempt} of {RESTART_BUDGET})",
            wait.as_secs()
        );
        tracing::warn!(run_id = %msg.run_id, job_id = %msg.job_id, "{line}");
        self.book.error(&line);
        self.book
            .backing_off(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default());
        // The database may be away now: the next attempt writes the line into its rows' logs.
        self.restarts.entry(msg.run_id).or_default().push(line);
        let run = Attempt {
            run_id: msg.run_id,
            job_id: msg.job_id,
            reason: msg.reason,
            scheduled_for: msg.scheduled_for,
            request_id: msg.request_id.clone(),
            started_at: msg.started_at,
        };
        ctx.run_later(wait, move |act, ctx| {
            act.book.retrying();
            let stopped = act.live.get(&run.run_id).is_none_or(|c| c.is_cancelled());
            if act.draining || stopped {
                ctx.notify(RunEnded {
                    run_id: run.run_id,
                    job_id: run.job_id,
                    reason: run.reason,
                    request_id: run.request_id,
                    scheduled_for: run.scheduled_for,
                    started_at: run.started_at,
                    outcome: Err(format!("{SHUTTING_DOWN}: the run was not restarted")),
                    retry: false,
                });
            } else {
                act.attempt(run, ctx);
            }
        });
        true
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

    fn settled(&mut self, id: Uuid, failure: Option<String>) {
        self.live.remove(&id);
        self.restarts.remove(&id);
        if let Some(task) = self.tasks.remove(&id) {
            match failure {
                Some(why) => task.failed(why),
                None => task.ok(),
            }
        }
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

impl Handler<Report> for RunSupervisor {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.status())
    }
}

/// What starting (or restarting) one attempt of a run takes.
struct Attempt {
    run_id: Uuid,
    job_id: Uuid,
    reason: crate::model::RunReason,
    scheduled_for: Option<DateTime<Utc>>,
    request_id: Option<String>,
    started_at: DateTime<Utc>,
}

impl Handler<StartRun> for RunSupervisor {
    type Result = MessageResult<StartRun>;

    fn handle(&mut self, msg: StartRun, ctx: &mut Context<Self>) -> Self::Result {
        let run_id = msg.run_id.unwrap_or_else(Uuid::new_v4);
        if let Some(tx) = msg.on_finish {
            self.run_waiters.insert(run_id, tx);
        }
        self.live.insert(run_id, CancellationToken::new());
        self.tasks.insert(run_id, self.book.begin());
        if self.draining {
            // Settled like a run that stopped before its rows: recorded, notified, answered.
            ctx.notify(RunEnded {
                run_id,
                job_id: msg.job_id,
                reason: msg.reason,
                request_id: msg.request_id,
                scheduled_for: msg.scheduled_for,
                started_at: Utc::now(),
                outcome: Err(format!("{SHUTTING_DOWN}: the run was not started")),
                retry: false,
            });
            return MessageResult(run_id);
        }
        let run = Attempt {
            run_id,
            job_id: msg.job_id,
            reason: msg.reason,
            scheduled_for: msg.scheduled_for,
            request_id: msg.request_id,
            started_at: Utc::now(),
        };
        self.attempt(run, ctx);
        MessageResult(run_id)
    }
}

impl Handler<RunEnded> for RunSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: RunEnded, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(why) = &msg.outcome {
            if self.restart(&msg, &why.clone(), ctx) {
                return Box::pin(fut::ready(()));
            }
        }
        let (engine, crew) = (self.engine.clone(), self.crew.clone());
        let restarts = self.restarts.get(&msg.run_id).map_or(0, Vec::len);
        let settle = async move {
            let store = engine.store();
            if let Err(why) = &msg.outcome {
                tracing::error!(run_id = %msg.run_id, job_id = %msg.job_id, %why, restarts, "run stopped early");
                let why = match restarts {
                    0 => why.clone(),
                    n => format!("{why} (given up after {n} restarts)"),
                };
                if let Err(e) = store.fail_unfinished_run(msg.run_id, &why).await {
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
            crate::after_run::run_finished(&engine, &crew, &finished).await;
            finished
        };
        Box::pin(settle.into_actor(self).map(|finished, act, _| {
            let failure = finished
                .failure
                .as_ref()
                .map(|f| f.message.clone())
                .or_else(|| {
                    let failed = finished
                        .rows
                        .iter()
                        .filter(|r| r.status != crate::model::Status::Success)
                        .count();
                    (failed > 0)
                        .then(|| format!("run {}: {failed} volumes failed", finished.run_id))
                });
            act.settled(finished.run_id, failure);
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
        self.tasks.insert(msg.restore_id, self.book.begin());
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
            self.crew.clone(),
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
        let failure = match &msg.outcome {
            Err(why) if msg.ours => Some(format!("restore {}: {why}", msg.restore_id)),
            _ => None,
        };
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
            act.settled(msg.restore_id, failure);
            if let (Some(restore), Some(tx)) =
                (restore, act.restore_waiters.remove(&msg.restore_id))
            {
                let _ = tx.send(restore);
            }
        }))
    }
}

impl Handler<StartVerify> for RunSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StartVerify, ctx: &mut Context<Self>) {
        let id = msg.verification_id;
        if let Some(tx) = msg.on_finish {
            self.verify_waiters.insert(id, tx);
        }
        let cancel = CancellationToken::new();
        self.live.insert(id, cancel.clone());
        self.tasks.insert(id, self.book.begin());
        if self.draining {
            ctx.notify(VerifyEnded {
                verification_id: id,
                outcome: Err(format!("{SHUTTING_DOWN}: the verification was not started")),
                ours: true,
            });
            return;
        }
        VerifyRun::new(self.engine.clone(), id, ctx.address().recipient(), cancel).start();
    }
}

impl Handler<VerifyEnded> for RunSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: VerifyEnded, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let id = msg.verification_id;
        let failure = match &msg.outcome {
            Ok(Verdict::Damaged(why)) | Err(why) if msg.ours => {
                Some(format!("verification {id}: {why}"))
            }
            _ => None,
        };
        let settle = async move {
            let store = engine.store();
            let recorded = match &msg.outcome {
                _ if !msg.ours => Ok(()),
                Ok(Verdict::Intact(summary)) => {
                    store.finish_verification(id, Some(true), summary).await
                }
                Ok(Verdict::Damaged(why)) => {
                    store
                        .finish_verification(id, Some(false), &format!("failed: {why}"))
                        .await
                }
                // Nothing was found wrong with the backup: its outcome stays as it was.
                Err(why) => {
                    store
                        .finish_verification(id, None, &format!("failed: {why}"))
                        .await
                }
            };
            if let Err(e) = recorded {
                tracing::error!(verification_id = %id, error = %e, "could not record the verification's end");
            }
            store.verification(id).await.ok()
        };
        Box::pin(settle.into_actor(self).map(move |verification, act, _| {
            act.settled(id, failure);
            if let (Some(v), Some(tx)) = (verification, act.verify_waiters.remove(&id)) {
                let _ = tx.send(v);
            }
        }))
    }
}

//! Every message between the engine's actors, one struct each.

use actix::Message;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::model::{Backup, Restore, RunFailure, RunReason};

/// Start a run of a job now (scheduler, HTTP `run`, deploy pipeline, CLI). Answers the run's id.
#[derive(Message)]
#[rtype(result = "Uuid")]
pub struct StartRun {
    /// The id the run gets; a new one when `None` (a claimed request brings its own).
    pub run_id: Option<Uuid>,
    pub job_id: Uuid,
    pub reason: RunReason,
    /// The scheduled minute, for scheduled runs.
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Told the run's summary when it has ended, however it ended.
    pub on_finish: Option<oneshot::Sender<RunFinished>>,
    /// The deploy pipeline's `requestId`, echoed in the run's completion event.
    pub request_id: Option<String>,
}

/// A run's end, as its actor reports it to the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RunEnded {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub reason: RunReason,
    pub request_id: Option<String>,
    /// When the run's actor started.
    pub started_at: DateTime<Utc>,
    /// `Err` carries why the run stopped before finishing its rows (error or crash).
    pub outcome: Result<RunOutcome, String>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// Every volume has its row, each `success` or `failed`.
    Finished,
    /// Nothing was attempted, and why (no target resolves, no persistent volumes).
    Skipped(RunFailure),
}

/// The summary of an ended run, for waiters and notifications.
#[derive(Debug, Clone)]
pub struct RunFinished {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub reason: RunReason,
    pub request_id: Option<String>,
    pub rows: Vec<Backup>,
    /// Set when the run ended without any row (skipped, or stopped before its rows), with why;
    /// such a run is recorded in table `run` and counts as failed.
    pub failure: Option<RunFailure>,
}

/// Perform a restore that has its `pending` row already.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartRestore {
    pub restore_id: Uuid,
    pub on_finish: Option<oneshot::Sender<Restore>>,
}

/// A restore's end, as its actor reports it to the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestoreEnded {
    pub restore_id: Uuid,
    pub outcome: Result<(), String>,
    /// False when this engine found the restore no longer `pending` and left it alone: its row
    /// belongs to whoever started it, and nothing is recorded.
    pub ours: bool,
}

/// Shutdown, first step: the supervisor starts nothing new from now on. Answers how many runs
/// and restores are live, and a receiver told once all of them are settled.
#[derive(Message)]
#[rtype(result = "Idle")]
pub struct Drain;

/// Shutdown, once the grace ran out: stop every live run and restore and settle their rows
/// `failed` "engine shutting down". Answers like [`Drain`].
#[derive(Message)]
#[rtype(result = "Idle")]
pub struct CancelAll;

/// The supervisor's answer to [`Drain`] and [`CancelAll`].
#[derive(Debug)]
pub struct Idle {
    /// Runs and restores live when it answered.
    pub live: usize,
    /// Resolves once none is live, each one's row settled.
    pub settled: oneshot::Receiver<()>,
}

//! Every message between the engine's actors, one struct each.
//!
//! One scheduled run, end to end (README, "Message flow", draws it):
//! `Scheduler` —[`TakeLock`]→ `Lock` (the minute's lock), then [`StartRun`] → `RunSupervisor`,
//! which starts a `BackupRun`. Per volume the run sends [`LockVolume`] → `Lock`,
//! [`OpenArchive`] → `VolumeRunner` (answered with the receiving end of the archive stream) and
//! [`Upload`] → `Uploader` (which takes that stream; answered with the stored object's digest);
//! it ends with [`RunEnded`] → `RunSupervisor`, which settles the rows (or restarts the run, see
//! [`RunEnded`]), sends [`Prune`] → `Pruner`, enqueues the notices that `Notifier` delivers, and
//! answers the `StartRun`'s waiter. Restores: [`StartRestore`] → `RunSupervisor` → `RestoreRun`
//! → [`LockVolume`] → `Lock`, then [`RestoreEnded`]. Every long-lived actor answers [`Report`]
//! with its [`WorkerStatus`].
//!
//! Work that a caller may give up (a stalled backup drops its upload) carries a `stop` token that
//! is cancelled when the caller's ask is dropped (`crate::worker::ask`); the actor drops the work
//! then, as the caller would have.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::Digest;
use crate::lock::redis::{LockError, VolumeLock};
use crate::model::{Backup, Compression, Restore, RunFailure, RunReason, Verification, Volume};
use crate::progress::Progress;
use crate::pruner::plan::{PruneError, PruneReport};
use crate::storage::TargetStorage;
use crate::stream::ByteStream;
use crate::uploader::pipeline::UploadError;
use crate::verify::Verdict;
use crate::volume_runner::archive::{ArchiveOptions, VolumeArchive, VolumeError};
pub use crate::worker::{Report, WorkerStatus};

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
    pub scheduled_for: Option<DateTime<Utc>>,
    /// When the run's first actor started.
    pub started_at: DateTime<Utc>,
    /// `Err` carries why the run stopped before finishing its rows (error or crash).
    pub outcome: Result<RunOutcome, String>,
    /// Set when the run stopped on an error that another attempt may not meet (the database went
    /// away, the run's task crashed): the supervisor restarts it within its restart budget, and
    /// the new attempt carries on with the rows not yet settled. Never set for a run that a
    /// shutdown stopped.
    pub retry: bool,
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

/// Perform a verification that has its `pending` row already (and is claimed by this engine).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartVerify {
    pub verification_id: Uuid,
    pub on_finish: Option<oneshot::Sender<Verification>>,
}

/// A verification's end, as its actor reports it to the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct VerifyEnded {
    pub verification_id: Uuid,
    /// `Err`: it could not verify (the target or the database did not answer, a shutdown).
    pub outcome: Result<Verdict, String>,
    /// False when this engine found the verification no longer `pending`: nothing is recorded.
    pub ours: bool,
}

/// Perform a drill that has its `pending` row already (and is claimed by this engine).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartDrill {
    pub drill_id: Uuid,
    pub on_finish: Option<oneshot::Sender<crate::model::Drill>>,
}

/// A drill's end, as its actor reports it to the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrillEnded {
    pub drill_id: Uuid,
    /// `Ok`: every volume restored and checked (a summary); `Err`: why not.
    pub outcome: crate::drill::DrillOutcome,
    /// False when this engine found the drill no longer `pending`: nothing is recorded.
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

/// Lock: take the lock of one Docker volume for a backup, restore or recovery. The lock is renewed
/// until it is released (or dropped, then it expires), and tells its holder when it is lost.
#[derive(Message)]
#[rtype(result = "Result<VolumeLock, LockError>")]
pub struct LockVolume {
    pub docker_volume: String,
}

/// Lock: take `key` for `ttl` unless someone holds it (a scheduler's `lock:backup:{job}:{minute}`,
/// which simply expires). Answers true when taken.
#[derive(Message)]
#[rtype(result = "Result<bool, LockError>")]
pub struct TakeLock {
    pub key: String,
    pub holder: String,
    pub ttl: Duration,
}

/// Lock: give `key` back if `holder` still holds it.
#[derive(Message)]
#[rtype(result = "Result<(), LockError>")]
pub struct ReleaseLock {
    pub key: String,
    pub holder: String,
}

/// VolumeRunner: open the archive of a Docker volume already found and locked — a tar of its files
/// or a `pg_dump` — answered with the receiving end of its byte stream.
#[derive(Message)]
#[rtype(result = "Result<VolumeArchive, VolumeError>")]
pub struct OpenArchive {
    pub docker_volume: String,
    pub volume: Volume,
    pub options: ArchiveOptions,
    pub stop: CancellationToken,
}

/// Uploader: compress `archive` and stream it to `key` on `storage`, counting on `progress`.
/// Answers the stored object's size and sha256 once the target holds all of it. Stopped before
/// that, the upload is aborted and nothing stays at `key`.
#[derive(Message)]
#[rtype(result = "Result<Digest, UploadError>")]
pub struct Upload {
    pub storage: TargetStorage,
    pub key: String,
    pub archive: ByteStream,
    pub compression: Compression,
    pub level: Option<i32>,
    pub progress: Progress,
    pub stop: CancellationToken,
}

/// Pruner: delete the restores' safety backups older than `restore.keep_pre_restore_days`.
/// Answers how many were deleted.
#[derive(Message)]
#[rtype(result = "Result<usize, PruneError>")]
pub struct PruneSafetyBackups;

/// Pruner: apply a job's retention to each of its series. Prunes of one job never overlap: one
/// asked while another runs waits for it.
#[derive(Message)]
#[rtype(result = "Result<PruneReport, PruneError>")]
pub struct Prune {
    pub job_id: Uuid,
}

//! What the CLI's `backup`, `restore` and `verify` commands do: hand one manual run, restore or
//! verification to a `RunSupervisor` (run.rs) started in this process, and wait for its end.

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::engine::Engine;
use crate::messages::{RunFinished, StartRestore, StartRun, StartVerify};
use crate::model::{Restore, RunReason, Verification};
use crate::run::RunSupervisor;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("the engine stopped before the run ended")]
    Lost,
    #[error("{0}")]
    Refused(String),
}

/// Starts a manual run and waits for its end; returns its rows.
pub async fn run_and_wait(
    supervisor: &Addr<RunSupervisor>,
    job_id: Uuid,
) -> Result<RunFinished, WaitError> {
    let (tx, rx) = oneshot::channel();
    supervisor
        .send(StartRun {
            run_id: None,
            job_id,
            reason: RunReason::Manual,
            scheduled_for: None,
            on_finish: Some(tx),
            request_id: None,
        })
        .await
        .map_err(|_| WaitError::Lost)?;
    rx.await.map_err(|_| WaitError::Lost)
}

/// Records a verification of `backup_id`, performs it here and waits for its end.
pub async fn verify_and_wait(
    engine: &Engine,
    supervisor: &Addr<RunSupervisor>,
    backup_id: Uuid,
) -> Result<Verification, WaitError> {
    let store = engine.store();
    let backup = store
        .backup(backup_id)
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    // Claimed here, so that no scheduler instance takes it too.
    let verification_id = store
        .insert_verification(backup.organization_id, backup.id, Some(engine.instance()))
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    supervisor
        .send(StartVerify {
            verification_id,
            on_finish: Some(tx),
        })
        .await
        .map_err(|_| WaitError::Lost)?;
    rx.await.map_err(|_| WaitError::Lost)
}

/// Records a drill of `job_id`, performs it here and waits for its end.
pub async fn drill_and_wait(
    engine: &Engine,
    supervisor: &Addr<RunSupervisor>,
    job_id: Uuid,
) -> Result<crate::model::Drill, WaitError> {
    let store = engine.store();
    let job = store
        .job(job_id)
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    // Claimed here, so that no scheduler instance takes it too.
    let drill_id = store
        .insert_drill(job.organization_id, job.id, Some(engine.instance()))
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    supervisor
        .send(crate::messages::StartDrill {
            drill_id,
            on_finish: Some(tx),
        })
        .await
        .map_err(|_| WaitError::Lost)?;
    rx.await.map_err(|_| WaitError::Lost)
}

/// Records a restore of `backup_id` (with a safety backup first unless `safety_backup` is
/// false), performs it here and waits for its end.
pub async fn restore_and_wait(
    engine: &Engine,
    supervisor: &Addr<RunSupervisor>,
    backup_id: Uuid,
    safety_backup: bool,
) -> Result<Restore, WaitError> {
    let store = engine.store();
    let backup = store
        .backup(backup_id)
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    let restore_id = store
        .insert_restore(backup.organization_id, backup.id, safety_backup)
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    // Claimed here, so that no scheduler instance takes it too.
    store
        .claim_restore_by_id(restore_id, "cli")
        .await
        .map_err(|e| WaitError::Refused(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    supervisor
        .send(StartRestore {
            restore_id,
            on_finish: Some(tx),
        })
        .await
        .map_err(|_| WaitError::Lost)?;
    rx.await.map_err(|_| WaitError::Lost)
}

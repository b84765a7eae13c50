//! RestoreRun: one actor per restore. It downloads the archive of a `success` backup and puts it
//! back: a file volume through a verified stage and a journaled swap ([`files`], [`swap`]), a
//! Postgres dump through `psql` in one transaction that commits only a dump verified to its end
//! ([`sql`]). A restore that fails at any point, or whose engine dies, leaves the volume (or the
//! database) as it was, or — once recovered after its commit point — exactly as the archive.

pub mod files;
pub mod safety;
pub mod sql;
pub mod sql_replay;
pub mod swap;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::Digest;
use crate::crew::Crew;
use crate::docker::DockerError;
use crate::engine::Engine;
use crate::lock::LockError;
use crate::messages::RestoreEnded;
use crate::model::{Backup, Compression, Status, VolumeKind};
use crate::progress::Progress;
use crate::storage::{StorageError, TargetStorage};
use crate::store::{Store, StoreError};
use crate::task_watch::{self, Ended};
use futures::FutureExt as _;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The restore is not `pending` any more: another engine performs it, or it was failed.
    #[error("the restore was started by another engine or has ended; this engine leaves it alone")]
    NotOurs,
    #[error("backup {id} cannot be restored: {why}")]
    NotRestorable { id: Uuid, why: String },
    #[error(transparent)]
    Ownership(#[from] crate::ownership::OwnershipError),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Stalled(#[from] crate::progress::Stalled),
}

/// Appends timestamped lines to a restore's log (and to the engine's own log).
pub struct Log<'a> {
    pub store: &'a Store,
    pub restore_id: Uuid,
}

impl Log<'_> {
    pub async fn line(&self, line: &str) -> Result<(), StoreError> {
        tracing::info!(restore_id = %self.restore_id, "{line}");
        self.store.append_restore_log(self.restore_id, line).await
    }
}

pub use crate::supervision::SHUTTING_DOWN;

/// One restore; reports its end to the supervisor (`RunSupervisor`), which records it.
pub struct RestoreRun {
    engine: Engine,
    crew: Crew,
    restore_id: Uuid,
    supervisor: Recipient<RestoreEnded>,
    /// Cancelled by the supervisor when a shutdown's grace ran out. The restore stops where it
    /// safely can (see [`files::FileRestore::cancel`]); it is never aborted in the middle.
    cancel: CancellationToken,
}

impl RestoreRun {
    pub fn new(
        engine: Engine,
        crew: Crew,
        restore_id: Uuid,
        supervisor: Recipient<RestoreEnded>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            engine,
            crew,
            restore_id,
            supervisor,
            cancel,
        }
    }
}

impl Actor for RestoreRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let progress = self.engine.board().start();
        let work = actix::spawn(execute(
            self.engine.clone(),
            self.crew.clone(),
            self.restore_id,
            progress.clone(),
            self.cancel.clone(),
        ));
        task_watch::keep_heartbeat(
            ctx,
            self.engine.clone(),
            self.restore_id,
            progress,
            |e, id| async move { e.store().heartbeat_restore(id).await }.boxed(),
        );
        let watch = async move {
            match task_watch::join(work, None).await {
                Ended::Returned(Ok(())) => (Ok(()), true),
                Ended::Returned(Err(e @ RestoreError::NotOurs)) => (Err(e.to_string()), false),
                Ended::Returned(Err(e)) => (Err(format!("restore failed: {e}")), true),
                Ended::Panicked(why) => (Err(format!("restore crashed: {why}")), true),
                Ended::Stopped => (
                    Err(format!("restore was cancelled ({SHUTTING_DOWN})")),
                    true,
                ),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|(outcome, ours), act, ctx| {
            act.supervisor.do_send(RestoreEnded {
                restore_id: act.restore_id,
                outcome,
                ours,
            });
            ctx.stop();
        }));
    }
}

/// A restore's progress record and stall deadline.
#[derive(Clone, Copy)]
pub struct Watch<'a> {
    pub progress: &'a Progress,
    pub deadline: std::time::Duration,
}

/// Where a successful backup's archive is, and what it must be.
pub(crate) struct ArchiveRef {
    pub key: String,
    pub expected: Digest,
    pub compression: Compression,
    pub target_id: Uuid,
}

/// The archive of `backup`, or why it holds none that a restore or a verification can read.
pub(crate) fn archive_of(backup: &Backup) -> Result<ArchiveRef, String> {
    if backup.status != Status::Success {
        return Err(format!(
            "its status is {}; only successful backups hold an archive",
            backup.status.as_str()
        ));
    }
    let key = backup
        .storage_path
        .clone()
        .ok_or("no storage path recorded")?;
    let expected = crate::chain::recorded(backup.size_bytes, backup.checksum.as_deref())
        .ok_or("no checksum recorded")?;
    let compression = Compression::of_key(&key).ok_or("unknown archive format")?;
    let target_id = backup.target_id.ok_or("its target was deleted")?;
    Ok(ArchiveRef {
        key,
        expected,
        compression,
        target_id,
    })
}

/// Performs the restore; one that a shutdown stopped fails saying so.
async fn execute(
    engine: Engine,
    crew: Crew,
    restore_id: Uuid,
    progress: Progress,
    cancel: CancellationToken,
) -> Result<(), RestoreError> {
    match perform(&engine, &crew, restore_id, progress, &cancel).await {
        Err(e @ RestoreError::NotOurs) => Err(e),
        Err(e) if cancel.is_cancelled() => Err(RestoreError::Failed(format!(
            "{SHUTTING_DOWN}: the restore did not finish within the shutdown grace period ({e})"
        ))),
        other => other,
    }
}

#[tracing::instrument(skip(engine, crew, progress, cancel))]
async fn perform(
    engine: &Engine,
    crew: &Crew,
    restore_id: Uuid,
    progress: Progress,
    cancel: &CancellationToken,
) -> Result<(), RestoreError> {
    let store = engine.store();
    if !store.mark_restore_running(restore_id).await? {
        return Err(RestoreError::NotOurs);
    }
    let log = Log { store, restore_id };
    let restore = store.restore(restore_id).await?;
    let backup = store.backup(restore.backup_id).await?;
    if backup.volume_kind == VolumeKind::Engine {
        return Err(RestoreError::NotRestorable {
            id: backup.id,
            why: "it is a backup of the engine's own database: restore it into an empty \
                  database with `vardo-backup restore-self --backup ID --to DATABASE_URL`"
                .to_owned(),
        });
    }
    let ArchiveRef {
        key,
        expected,
        compression,
        target_id,
    } = archive_of(&backup).map_err(|why| RestoreError::NotRestorable { id: backup.id, why })?;
    let target = store.target(target_id).await?;
    let settings = engine.settings();
    let storage = TargetStorage::open_with_step_limit(
        &target.config,
        settings.allow_local_backups,
        settings.stall_deadline,
    )?;
    let storage = engine.equip(storage, &target).await?;
    let format = storage
        .format(&key)
        .and_then(|f| storage.opens(backup.encrypted_to.as_deref()).map(|()| f))
        .map_err(|why| RestoreError::NotRestorable { id: backup.id, why })?;
    let watch = Watch {
        progress: &progress,
        deadline: settings.stall_deadline,
    };
    let chained = crate::chain::resolve(store, &storage, &backup, settings.stall_deadline)
        .await
        .map_err(|e| RestoreError::NotRestorable {
            id: backup.id,
            why: e.to_string(),
        })?;
    let docker = engine.docker().await?;

    let owner = crate::ownership::Owner {
        organization_id: backup.organization_id,
        app_id: &backup.app_id,
        app_name: &backup.app_name,
        volume_name: &backup.volume_name,
    };
    let (volume, existed) = match owner.find(store, docker).await? {
        Some(v) => (v, true),
        None => {
            let [blue, _] = owner.candidates(store).await?;
            docker.create_labelled_volume(&blue, owner.labels()).await?;
            log.line(&format!("no volume existed; created {blue}"))
                .await?;
            (blue, false)
        }
    };
    let safety = store.restore_takes_safety_backup(restore_id).await?;
    log.line(&format!(
        "restoring {key} ({} bytes, sha256:{}) from target {} into volume {volume}",
        expected.size, expected.sha256_hex, target.name
    ))
    .await?;
    if let Some(chained) = &chained {
        log.line(&chained.describe()).await?;
    }
    // The safety backup is written to the target's current recipients: an engine that could not
    // open it could not undo this restore.
    if safety && existed {
        if let Some(recipients) = storage.recipients() {
            storage.opens(Some(&recipients.texts())).map_err(|why| {
                RestoreError::Failed(format!(
                    "the safety backup would be encrypted to the target's recipients, and {why}; \
                         this restore could not be undone, so nothing was changed (add the \
                         identity, or restore without a safety backup)"
                ))
            })?;
        }
    }
    let lock = crew.lock_volume(&volume).await?;
    let (restoring, size) = (
        format!("restoring {}/{}", backup.app_name, backup.volume_name),
        expected.size,
    );
    let safety = SafetyStep {
        wanted: safety && existed,
        backup: safety::SafetyBackup {
            engine,
            crew,
            restore_id,
            of: &backup,
            target: &target,
            storage: &storage,
            compression,
            docker_volume: &volume,
            progress: &progress,
        },
    };
    let result = match backup.volume_kind {
        VolumeKind::Generic => {
            let restore = files::FileRestore {
                docker,
                store,
                storage: &storage,
                key: &key,
                format: format.clone(),
                expected,
                chain: chained.as_ref(),
                volume: &volume,
                restore_id,
                lock: &lock,
                lease: engine.settings().run_lease,
                watch,
                cancel,
            };
            // Recovered first, so that the safety backup reads a volume that is whole.
            async {
                restore.recover_earlier(&log).await?;
                safety.take(&lock, &log).await?;
                progress.describe(restoring.clone(), Some(size));
                restore.run(&log).await
            }
            .await
        }
        VolumeKind::Engine => Err(RestoreError::Failed(
            "a backup of the engine's own database is restored with restore-self".to_owned(),
        )),
        VolumeKind::Postgres => {
            let restore = sql::DumpRestore {
                docker,
                storage: &storage,
                key: &key,
                format,
                expected,
                volume: &volume,
                restore_id,
                watch,
                cancel,
            };
            async {
                safety.take(&lock, &log).await?;
                progress.describe(restoring.clone(), Some(size));
                restore.run(&log).await
            }
            .await
        }
    };
    lock.release().await;
    result
}

/// The safety backup, if this restore takes one (asked for, and a volume existed to back up).
struct SafetyStep<'a> {
    wanted: bool,
    backup: safety::SafetyBackup<'a>,
}

impl SafetyStep<'_> {
    async fn take(
        &self,
        lock: &crate::lock::VolumeLock,
        log: &Log<'_>,
    ) -> Result<(), RestoreError> {
        if !self.wanted {
            return Ok(());
        }
        // A lost lock stops the backup: another engine may be working on the volume now.
        tokio::select! {
            taken = self.backup.take(log) => taken.map(drop),
            () = lock.lost() => Err(RestoreError::Lock(crate::lock::LockError::Lost(format!(
                "lock:volume:{}", self.backup.docker_volume
            )))),
        }
    }
}

//! RestoreRun: one actor per restore. It downloads the archive of a `success` backup and puts it
//! back: a file volume through a verified stage and a journaled swap ([`files`], [`swap`]), a
//! Postgres dump through `psql` in one transaction that commits only a dump verified to its end
//! ([`sql`]). A restore that fails at any point, or whose engine dies, leaves the volume (or the
//! database) as it was, or — once recovered after its commit point — exactly as the archive.

pub mod files;
pub mod sql;
pub mod swap;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::Digest;
use crate::docker::DockerError;
use crate::engine::Engine;
use crate::lock::LockError;
use crate::messages::RestoreEnded;
use crate::model::{Backup, Compression, Status, VolumeKind};
use crate::run::{panic_message, RunSupervisor};
use crate::storage::{StorageError, TargetStorage};
use crate::store::{Store, StoreError};

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
    #[error("backup {id} cannot be restored: {why}")]
    NotRestorable { id: Uuid, why: String },
    #[error(transparent)]
    Ownership(#[from] crate::ownership::OwnershipError),
    #[error("{0}")]
    Failed(String),
}

/// Why a run or restore that a shutdown stopped failed; the row's log says it.
pub const SHUTTING_DOWN: &str = "engine shutting down";

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

/// One restore; reports its end to the supervisor, which records it.
pub struct RestoreRun {
    engine: Engine,
    restore_id: Uuid,
    supervisor: Addr<RunSupervisor>,
    /// Cancelled by the supervisor when a shutdown's grace ran out. The restore stops where it
    /// safely can (see [`files::FileRestore::cancel`]); it is never aborted in the middle.
    cancel: CancellationToken,
}

impl RestoreRun {
    pub fn new(
        engine: Engine,
        restore_id: Uuid,
        supervisor: Addr<RunSupervisor>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            engine,
            restore_id,
            supervisor,
            cancel,
        }
    }
}

impl Actor for RestoreRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let work = actix::spawn(execute(
            self.engine.clone(),
            self.restore_id,
            self.cancel.clone(),
        ));
        let every = self.engine.settings().heartbeat_interval;
        ctx.run_interval(every, |act, _| {
            let (engine, id) = (act.engine.clone(), act.restore_id);
            actix::spawn(async move {
                if let Err(e) = engine.store().heartbeat_restore(id).await {
                    tracing::warn!(restore_id = %id, error = %e, "heartbeat failed");
                }
            });
        });
        let watch = async move {
            match work.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("restore failed: {e}")),
                Err(join) if join.is_panic() => Err(format!(
                    "restore crashed: {}",
                    panic_message(join.into_panic())
                )),
                Err(_) => Err(format!("restore was cancelled ({SHUTTING_DOWN})")),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|outcome, act, ctx| {
            act.supervisor.do_send(RestoreEnded {
                restore_id: act.restore_id,
                outcome,
            });
            ctx.stop();
        }));
    }
}

fn compression_of(key: &str) -> Option<Compression> {
    if key.ends_with(".gz") {
        Some(Compression::Gzip)
    } else if key.ends_with(".zst") {
        Some(Compression::Zstd)
    } else {
        None
    }
}

fn expected_digest(backup: &Backup) -> Option<Digest> {
    Some(Digest {
        size: u64::try_from(backup.size_bytes?).ok()?,
        sha256_hex: backup
            .checksum
            .as_deref()?
            .strip_prefix("sha256:")?
            .to_owned(),
    })
}

/// Performs the restore; one that a shutdown stopped fails saying so.
async fn execute(
    engine: Engine,
    restore_id: Uuid,
    cancel: CancellationToken,
) -> Result<(), RestoreError> {
    match perform(&engine, restore_id, &cancel).await {
        Err(e) if cancel.is_cancelled() => Err(RestoreError::Failed(format!(
            "{SHUTTING_DOWN}: the restore did not finish within the shutdown grace period \
             ({e})"
        ))),
        other => other,
    }
}

#[tracing::instrument(skip(engine, cancel))]
async fn perform(
    engine: &Engine,
    restore_id: Uuid,
    cancel: &CancellationToken,
) -> Result<(), RestoreError> {
    let store = engine.store();
    store.mark_restore_running(restore_id).await?;
    let log = Log { store, restore_id };
    let restore = store.restore(restore_id).await?;
    let backup = store.backup(restore.backup_id).await?;
    let not_restorable = |why: &str| RestoreError::NotRestorable {
        id: backup.id,
        why: why.to_owned(),
    };
    if backup.status != Status::Success {
        return Err(not_restorable(&format!(
            "its status is {}; only successful backups hold an archive",
            backup.status.as_str()
        )));
    }
    let key = backup
        .storage_path
        .clone()
        .ok_or_else(|| not_restorable("no storage path recorded"))?;
    let expected =
        expected_digest(&backup).ok_or_else(|| not_restorable("no checksum recorded"))?;
    let compression =
        compression_of(&key).ok_or_else(|| not_restorable("unknown archive format"))?;
    let target_id = backup
        .target_id
        .ok_or_else(|| not_restorable("its target was deleted"))?;
    let target = store.target(target_id).await?;
    let storage = TargetStorage::open(&target.config, engine.settings().allow_local_backups)?;
    let docker = engine.docker().await?;

    let owner = crate::ownership::Owner {
        organization_id: backup.organization_id,
        app_id: &backup.app_id,
        app_name: &backup.app_name,
        volume_name: &backup.volume_name,
    };
    let volume = match owner.find(store, docker).await? {
        Some(v) => v,
        None => {
            let [blue, _] = owner.candidates(store).await?;
            docker.create_labelled_volume(&blue, owner.labels()).await?;
            log.line(&format!("no volume existed; created {blue}"))
                .await?;
            blue
        }
    };
    log.line(&format!(
        "restoring {key} ({} bytes, sha256:{}) from target {} into volume {volume}",
        expected.size, expected.sha256_hex, target.name
    ))
    .await?;
    let lock = engine.lock_volume(&volume).await?;
    let result = match backup.volume_kind {
        VolumeKind::Generic => {
            files::FileRestore {
                docker,
                store,
                storage: &storage,
                key: &key,
                compression,
                expected,
                volume: &volume,
                restore_id,
                lock: &lock,
                lease: engine.settings().run_lease,
                cancel,
            }
            .run(&log)
            .await
        }
        VolumeKind::Postgres => {
            let archive = sql::DumpArchive {
                storage: &storage,
                key: &key,
                compression,
                expected,
                cancel,
            };
            sql::restore_dump(docker, archive, &volume, &log).await
        }
    };
    lock.release().await;
    result
}

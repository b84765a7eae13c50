//! The crew: the addresses of the actors a run works with — `Lock`, `VolumeRunner`, `Uploader` and
//! `Pruner` — started once per process and handed to the actors that send to them (the
//! supervisor and its runs and restores, the scheduler, the janitor). Its methods are the typed
//! asks, each an error of the asker's own kind when the actor is gone.
//!
//! Every long-lived actor of the process also registers here for [`Report`], so that one place
//! can tell what each is doing (`GET /api/v1/workers`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix::prelude::*;
use uuid::Uuid;

use crate::codec::Digest;
use crate::engine::Engine;
use crate::lock::{Lock, LockError, VolumeLock};
use crate::messages::{
    LockVolume, OpenArchive, Prune, PruneSafetyBackups, ReleaseLock, Report, TakeLock, Upload,
    WorkerStatus,
};
use crate::model::{Compression, Volume};
use crate::progress::Progress;
use crate::pruner::{PruneError, PruneReport, Pruner};
use crate::storage::TargetStorage;
use crate::stream::ByteStream;
use crate::uploader::{UploadError, Uploader};
use crate::volume_runner::{ArchiveOptions, VolumeArchive, VolumeError, VolumeRunner};
use crate::worker::ask;

/// Cheap to clone; clones address the same actors.
#[derive(Clone)]
pub struct Crew {
    lock: Addr<Lock>,
    volume_runner: Addr<VolumeRunner>,
    uploader: Addr<Uploader>,
    pruner: Addr<Pruner>,
    reporters: Reporters,
}

/// The actors that answer [`Report`], by name.
type Reporters = Arc<Mutex<Vec<(&'static str, Recipient<Report>)>>>;

impl Crew {
    /// Starts the four actors on the current arbiter (the process's system arbiter at start-up).
    pub fn start(engine: &Engine) -> Self {
        let crew = Self {
            lock: Lock::new(engine.clone()).start(),
            volume_runner: VolumeRunner::new(engine.clone()).start(),
            uploader: Uploader::new().start(),
            pruner: Pruner::new(engine.clone()).start(),
            reporters: Arc::default(),
        };
        crew.register("lock", crew.lock.clone().recipient());
        crew.register("volume-runner", crew.volume_runner.clone().recipient());
        crew.register("uploader", crew.uploader.clone().recipient());
        crew.register("pruner", crew.pruner.clone().recipient());
        crew
    }

    /// Adds an actor to those [`Crew::report`] asks.
    pub fn register(&self, name: &'static str, actor: Recipient<Report>) {
        self.reporters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, actor));
    }

    /// What each registered actor says it is doing; one that does not answer within two seconds
    /// (or has stopped) is reported as such, never left out.
    pub async fn report(&self) -> Vec<Result<WorkerStatus, (&'static str, String)>> {
        let actors: Vec<_> = self
            .reporters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let asks = actors.into_iter().map(|(name, actor)| async move {
            match tokio::time::timeout(Duration::from_secs(2), actor.send(Report)).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(e)) => Err((name, format!("not running: {e}"))),
                Err(_) => Err((name, "no answer within 2 s".to_owned())),
            }
        });
        futures::future::join_all(asks).await
    }

    pub async fn lock_volume(&self, docker_volume: &str) -> Result<VolumeLock, LockError> {
        let msg = LockVolume {
            docker_volume: docker_volume.to_owned(),
        };
        self.lock
            .send(msg)
            .await
            .map_err(|e| LockError::Unavailable(e.to_string()))?
    }

    pub async fn take_lock(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LockError> {
        let msg = TakeLock {
            key: key.to_owned(),
            holder: holder.to_owned(),
            ttl,
        };
        self.lock
            .send(msg)
            .await
            .map_err(|e| LockError::Unavailable(e.to_string()))?
    }

    pub async fn release_lock(&self, key: &str, holder: &str) -> Result<(), LockError> {
        let msg = ReleaseLock {
            key: key.to_owned(),
            holder: holder.to_owned(),
        };
        self.lock
            .send(msg)
            .await
            .map_err(|e| LockError::Unavailable(e.to_string()))?
    }

    /// Dropping the returned future stops the opening.
    pub async fn open_archive(
        &self,
        docker_volume: &str,
        volume: &Volume,
        options: ArchiveOptions,
    ) -> Result<VolumeArchive, VolumeError> {
        ask(&self.volume_runner, |stop| OpenArchive {
            docker_volume: docker_volume.to_owned(),
            volume: volume.clone(),
            options,
            stop,
        })
        .await
        .map_err(|e| VolumeError::Unavailable(e.to_string()))?
    }

    /// Dropping the returned future aborts the upload.
    pub async fn upload(
        &self,
        storage: &TargetStorage,
        key: &str,
        archive: ByteStream,
        compression: Compression,
        level: Option<i32>,
        progress: &Progress,
    ) -> Result<Digest, UploadError> {
        ask(&self.uploader, |stop| Upload {
            storage: storage.clone(),
            key: key.to_owned(),
            archive,
            compression,
            level,
            progress: progress.clone(),
            stop,
        })
        .await
        .map_err(|e| UploadError::Unavailable {
            key: key.to_owned(),
            why: e.to_string(),
        })?
    }

    /// Deletes the expired safety backups of restores; answers how many.
    pub async fn prune_safety_backups(&self) -> Result<usize, PruneError> {
        self.pruner
            .send(PruneSafetyBackups)
            .await
            .map_err(|e| PruneError::Unavailable(e.to_string()))?
    }

    /// The prune runs to its end even if the asker stops waiting.
    pub async fn prune(&self, job_id: Uuid) -> Result<PruneReport, PruneError> {
        self.pruner
            .send(Prune { job_id })
            .await
            .map_err(|e| PruneError::Unavailable(e.to_string()))?
    }
}

//! What one run does: resolve the target, record a `pending` row per app × persistent volume, then
//! back each volume up in turn — find it, lock it, archive it, upload it — moving its row to
//! `success` only once the target holds the whole object, or to `failed` with the reason.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::codec::Digest;
use crate::crew::Crew;
use crate::docker::DockerError;
use crate::engine::Engine;
use crate::lock::LockError;
use crate::messages::RunOutcome;
use crate::model::{
    App, Compression, Organization, RunFailure, RunFailureReason, RunReason, Status, Target,
    Volume, VolumeKind,
};
use crate::progress::{stage, Progress, Stalled};
use crate::storage::{archive_relative_key, archive_timestamp, TargetStorage};
use crate::store::{NewBackupRow, RunRef, StoreError};
use crate::uploader::UploadError;
use crate::volume_runner::{self, VolumeError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Ownership(#[from] crate::ownership::OwnershipError),
    #[error(
        "an interrupted restore of this volume could not be recovered, so it was not read: {0}"
    )]
    Recovery(String),
    #[error("no free storage key: a thousand archives of this volume share its timestamp")]
    KeyTaken,
    #[error(transparent)]
    Stalled(#[from] Stalled),
    #[error("{0}")]
    Refused(String),
}

/// Which run [`execute`] performs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub run_id: Uuid,
    pub job_id: Uuid,
    pub reason: RunReason,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// When the run's first attempt began.
    pub started: DateTime<Utc>,
    /// For a restarted run: why each earlier attempt stopped, for the rows' logs.
    pub restarted: Vec<String>,
}

/// The whole run. Errors returned here are the run's own (database away); each volume's failure is
/// recorded on its row and does not stop the others. `progress` is the run's watchdog record,
/// shared with the run actor's heartbeat. `started` is when the run's first attempt began (the
/// archives' timestamp).
///
/// A restarted run (its rows exist) records no new rows: it carries on with its rows still
/// `pending` or `running`, in the same storage keys, and leaves settled ones alone.
#[tracing::instrument(skip_all, fields(run_id = %run.run_id, job_id = %run.job_id))]
pub async fn execute(
    engine: Engine,
    crew: Crew,
    run: RunSpec,
    progress: Progress,
) -> Result<RunOutcome, BackupError> {
    let RunSpec {
        run_id,
        job_id,
        reason,
        scheduled_for,
        started,
        restarted,
    } = run;
    let store = engine.store();
    let job = store.job(job_id).await?;
    let org = store.organization(job.organization_id).await?;
    let Some(target) = store.resolve_target(org.id, job.target_id).await? else {
        let why = format!(
            "job {} ({}) skipped: no backup target resolves for organization {}",
            job.name, job.id, org.slug
        );
        tracing::warn!("{why}");
        return Ok(RunOutcome::Skipped(RunFailure::new(
            RunFailureReason::NoTarget,
            why,
        )));
    };
    let work: Vec<(App, Volume)> = store
        .job_apps(job_id)
        .await?
        .into_iter()
        .flat_map(|app| {
            let persistent: Vec<Volume> = app
                .volumes
                .iter()
                .filter(|v| v.persistent)
                .cloned()
                .collect();
            persistent.into_iter().map(move |v| (app.clone(), v))
        })
        .collect();
    if work.is_empty() {
        return Ok(RunOutcome::Skipped(RunFailure::new(
            RunFailureReason::NoVolumes,
            format!(
                "job {} ({}) skipped: it covers no persistent volume",
                job.name, job.id
            ),
        )));
    }
    let earlier = store.run_backups(run_id).await?;
    let (ids, work) = if earlier.is_empty() {
        let rows: Vec<NewBackupRow> = work
            .iter()
            .map(|(app, v)| NewBackupRow {
                app_id: app.id.clone(),
                app_name: app.name.clone(),
                volume_name: v.name.clone(),
                volume_kind: v.kind,
            })
            .collect();
        let ids = store
            .insert_pending_backups(
                RunRef {
                    run_id,
                    job_id,
                    organization_id: org.id,
                    target_id: target.id,
                    reason,
                    scheduled_for,
                },
                &rows,
            )
            .await?;
        store.touch_job_last_run(job_id).await?;
        (ids, work)
    } else {
        let resumed = resumed(store, &earlier, work, target.id).await?;
        for line in &restarted {
            store.log_unfinished_run(run_id, line).await?;
        }
        resumed
    };
    // Rows stay `pending` (their heartbeat kept fresh by the run actor) until a slot is free.
    let _slot = engine.run_slot().await;

    let settings = engine.settings();
    let storage = match TargetStorage::open_with_step_limit(
        &target.config,
        settings.allow_local_backups,
        settings.stall_deadline,
    ) {
        Ok(s) => s,
        Err(e) => {
            for id in &ids {
                store
                    .mark_backup_failed(*id, &format!("target {} cannot be used: {e}", target.name))
                    .await?;
            }
            return Ok(RunOutcome::Finished);
        }
    };
    let storage = engine.equip(storage, &target).await?;
    for (id, (app, volume)) in ids.into_iter().zip(work) {
        let ctx = VolumeJob {
            engine: &engine,
            crew: &crew,
            storage: &storage,
            target: &target,
            org: &org,
            compression: job.compression,
            level: job.compression_level,
            app: &app,
            volume: &volume,
            started,
            row: id,
            progress: &progress,
            incremental: job
                .incremental_full_every
                .map(|full_every| crate::backup_chain::Incremental { job_id, full_every }),
        };
        ctx.run().await?;
    }
    Ok(RunOutcome::Finished)
}

/// The rows a restarted run carries on with, each with its volume: those not yet settled. A row
/// whose app or volume left the job meanwhile is failed saying so.
async fn resumed(
    store: &crate::store::Store,
    earlier: &[crate::model::Backup],
    mut work: Vec<(App, Volume)>,
    target_id: Uuid,
) -> Result<(Vec<Uuid>, Vec<(App, Volume)>), StoreError> {
    let (mut ids, mut kept) = (Vec::new(), Vec::new());
    for row in earlier
        .iter()
        .filter(|r| matches!(r.status, Status::Pending | Status::Running))
    {
        // The row names its target and kind: a restart that would write elsewhere, or another
        // kind of archive, fails the row instead of recording an object where it is not.
        if row.target_id != Some(target_id) {
            store
                .mark_backup_failed(
                    row.id,
                    "failed: the job's target changed before the run was restarted",
                )
                .await?;
            continue;
        }
        let found = work.iter().position(|(app, v)| {
            app.id == row.app_id && v.name == row.volume_name && v.kind == row.volume_kind
        });
        match found {
            Some(i) => {
                ids.push(row.id);
                kept.push(work.swap_remove(i));
            }
            None => {
                store
                    .mark_backup_failed(
                        row.id,
                        "failed: the run was restarted and this volume is no longer in the job \
                         (or its kind changed)",
                    )
                    .await?;
            }
        }
    }
    Ok((ids, kept))
}

/// One volume of one app in a run (or a restore's safety backup of it, `restore/safety.rs`).
pub(crate) struct VolumeJob<'a> {
    pub engine: &'a Engine,
    pub crew: &'a Crew,
    pub storage: &'a TargetStorage,
    pub target: &'a Target,
    pub org: &'a Organization,
    pub compression: Compression,
    pub level: Option<i32>,
    pub app: &'a App,
    pub volume: &'a Volume,
    /// When the run began: the archives' timestamp.
    pub started: DateTime<Utc>,
    pub row: Uuid,
    pub progress: &'a Progress,
    /// The job's incremental backups, if it has them on.
    pub incremental: Option<crate::backup_chain::Incremental>,
}

impl VolumeJob<'_> {
    pub(crate) async fn log(&self, line: &str) -> Result<(), StoreError> {
        self.engine.store().append_backup_log(self.row, line).await
    }

    /// Records the volume's outcome on its row; only a database failure is returned.
    async fn run(&self) -> Result<(), StoreError> {
        self.mark_running().await?;
        let result = self.archive_and_upload().await;
        self.settle(result).await.map(drop)
    }

    /// [`VolumeJob::run`] for a Docker volume the caller found, owns and holds the lock of (a
    /// restore taking its safety backup); true when the row ended `success`.
    pub(crate) async fn run_locked(&self, docker_volume: &str) -> Result<bool, StoreError> {
        self.mark_running().await?;
        let result = async {
            let docker = self.engine.docker().await?;
            self.archive_watched(docker, docker_volume).await
        }
        .await;
        self.settle(result).await
    }

    async fn mark_running(&self) -> Result<(), StoreError> {
        self.progress.describe(
            format!("backing up {}/{}", self.app.name, self.volume.name),
            None,
        );
        let store = self.engine.store();
        store
            .mark_backup_running(
                self.row,
                &format!(
                    "backing up {}/{} ({}) to target {} ({})",
                    self.app.name,
                    self.volume.name,
                    self.volume.kind.as_str(),
                    self.target.name,
                    self.target.kind.as_str()
                ),
            )
            .await
    }

    /// Records `result` on the row; true only when the row is `success` now (an upload that ended
    /// after the row had been failed does not count, and its object is removed).
    async fn settle(
        &self,
        result: Result<(String, Digest), BackupError>,
    ) -> Result<bool, StoreError> {
        let store = self.engine.store();
        match result {
            Ok((key, digest)) => {
                let settled = store
                    .mark_backup_success(
                        self.row,
                        digest.size,
                        &key,
                        &digest.sha256_hex,
                        &format!(
                            "success: {} bytes stored at {key}, sha256:{}",
                            digest.size, digest.sha256_hex
                        ),
                    )
                    .await?;
                if !settled {
                    // The row was failed meanwhile (its engine seemed gone): it stays failed,
                    // and the object nobody records is removed.
                    let removed = match self.storage.delete(&key).await {
                        Ok(()) => "removed".to_owned(),
                        Err(e) => format!("could not be removed ({e})"),
                    };
                    if self.incremental.is_some() {
                        let manifest = crate::chain::manifest_key(&key, self.compression);
                        if let Err(e) = self.storage.delete(&manifest).await {
                            tracing::warn!(%manifest, error = %e, "could not remove the manifest of a failed row");
                        }
                    }
                    self.log(&format!(
                        "the upload finished after this row had been failed; its object {key} {removed}"
                    ))
                    .await?;
                }
                Ok(settled)
            }
            Err(BackupError::Store(e)) => Err(e),
            Err(e) => {
                tracing::warn!(app = %self.app.name, volume = %self.volume.name, error = %e, "volume backup failed");
                store
                    .mark_backup_failed(self.row, &format!("failed: {e}"))
                    .await
                    .map(|()| false)
            }
        }
    }

    async fn archive_and_upload(&self) -> Result<(String, Digest), BackupError> {
        if self.volume.kind == VolumeKind::Engine {
            return self.engine_database().await;
        }
        let docker = self.engine.docker().await?;
        let owner = crate::ownership::Owner {
            organization_id: self.org.id,
            app_id: &self.app.id,
            app_name: &self.app.name,
            volume_name: &self.volume.name,
        };
        let docker_volume = match owner.find(self.engine.store(), docker).await? {
            Some(v) => v,
            None => {
                let [blue, green] = owner.candidates(self.engine.store()).await?;
                return Err(VolumeError::NotFound { blue, green }.into());
            }
        };
        self.log(&format!("found Docker volume {docker_volume}"))
            .await?;
        let lock = self.crew.lock_volume(&docker_volume).await?;
        let work = async {
            self.recover_first(docker, &docker_volume).await?;
            self.archive_watched(docker, &docker_volume).await
        };
        // A lost lock stops the backup (the upload is aborted as the work is dropped): another
        // engine may be restoring this volume now.
        let result = tokio::select! {
            result = work => result,
            () = lock.lost() => Err(BackupError::Lock(crate::lock::LockError::Lost(format!(
                "lock:volume:{docker_volume}"
            )))),
        };
        lock.release().await;
        result
    }

    /// The engine's own database (`self_backup`): `pg_dump` of DATABASE_URL on this host, under
    /// its own lock; only the system organization's job may do it.
    async fn engine_database(&self) -> Result<(String, Digest), BackupError> {
        if self.org.id != crate::self_backup::SYSTEM_ORG_ID {
            return Err(BackupError::Refused(
                "only the system organization backs up the engine's database; nothing was read"
                    .to_owned(),
            ));
        }
        let lock = self.crew.lock_volume("vardo-engine-database").await?;
        let work = async {
            let (stream, source) = crate::self_backup::dump(&self.engine.settings().database_url)
                .map_err(BackupError::Refused)?;
            let archive = volume_runner::VolumeArchive {
                docker_volume: "vardo-engine-database".to_owned(),
                extension: "sql",
                stream,
                source,
                host_read: None,
                session: None,
                manifest: None,
            };
            self.upload_archive(None, archive, None).await
        };
        let result = tokio::select! {
            result = work => result,
            () = lock.lost() => Err(BackupError::Lock(crate::lock::LockError::Lost(
                "lock:volume:vardo-engine-database".to_owned()
            ))),
        };
        lock.release().await;
        result
    }

    /// Reads, compresses and uploads the volume under the stall deadline. Work that stalls is
    /// dropped: the upload then aborts and removes what it wrote (in the background, see
    /// `storage::upload`), the Docker stream is closed (an export's helper container removed), and
    /// a `pg_dump` session is ended on the server, since the dump, blocked on a lock, would not
    /// notice that nobody reads it.
    async fn archive_watched(
        &self,
        docker: &crate::docker::DockerClient,
        docker_volume: &str,
    ) -> Result<(String, Digest), BackupError> {
        let settings = self.engine.settings();
        let deadline = settings.stall_deadline;
        let stages = self.stages();
        self.engine.store().clear_backup_chain(self.row).await?;
        let chain = self.chain_plan().await?;
        let options = volume_runner::ArchiveOptions {
            from_host: settings.read_volumes_from_host,
            stall_deadline: deadline,
            session_name: format!("vardo-backup {}", self.row),
            chain: chain.as_ref().map(|c| c.walk.clone()),
            read_meter: Some(self.progress.meter(stage::VOLUME_READ)),
        };
        let opened = self.progress.deadline(
            deadline,
            &stages,
            self.crew.open_archive(docker_volume, self.volume, options),
        );
        let archive = opened.await??;
        self.upload_archive(Some(docker), archive, chain).await
    }

    /// The stages a backup of this volume watches.
    fn stages(&self) -> [&'static str; 3] {
        let source = match self.volume.kind {
            VolumeKind::Postgres | VolumeKind::Engine => stage::PG_DUMP,
            VolumeKind::Generic => stage::VOLUME_READ,
        };
        [source, stage::COMPRESSION, stage::UPLOAD]
    }

    /// Compresses and uploads an opened archive under the stall deadline; a `pg_dump` session
    /// of a failed upload is ended on the server.
    async fn upload_archive(
        &self,
        docker: Option<&crate::docker::DockerClient>,
        mut archive: volume_runner::VolumeArchive,
        chain: Option<crate::backup_chain::ChainPlan>,
    ) -> Result<(String, Digest), BackupError> {
        let deadline = self.engine.settings().stall_deadline;
        let stages = self.stages();
        let source = stages[0];
        let session = archive.session.take();
        let result = async {
            self.log(&archive.source).await?;
            let manifest = archive.manifest.take();
            let chain = match (chain, &manifest) {
                (Some(plan), Some(_)) => Some(plan),
                (Some(_), None) => {
                    self.log(
                        "this volume's read gives no manifest, so this backup is a full one outside any chain",
                    )
                    .await?;
                    None
                }
                (None, _) => None,
            };
            let marker = chain.as_ref().map_or("", |c| c.marker());
            let extension = format!(
                "{marker}{}.{}{}",
                archive.extension,
                self.compression.suffix(),
                self.storage.sealed_suffix()
            );
            let key = self.reserve_key(&extension).await?;
            let recipients = self.storage.recipients().map(|r| r.texts());
            self.engine
                .store()
                .set_backup_encryption(self.row, recipients.as_deref())
                .await?;
            let sealed = match &recipients {
                Some(r) => format!(
                    ", encrypted with age to {}",
                    r.iter()
                        .map(|r| crate::encryption::fingerprint(r))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            self.log(&format!(
                "uploading to {key} ({} compression{sealed})",
                self.compression.as_str()
            ))
            .await?;
            let stream = self.progress.meter(source).stream(archive.stream);
            let upload = self.crew.upload(
                self.storage,
                &key,
                stream,
                self.compression,
                self.level,
                self.progress,
            );
            let digest = self.progress.deadline(deadline, &stages, upload).await??;
            if let Some((folder, _)) = key.rsplit_once('/') {
                match self.storage.remove_partials(folder).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.log(&format!(
                            "removed {n} partial files that cut-off uploads of this volume had left"
                        ))
                        .await?
                    }
                    Err(e) => {
                        self.log(&format!("could not remove partial files: {e}"))
                            .await?
                    }
                }
            }
            let changes = match archive.host_read {
                Some(report) => report.await.ok().and_then(|r| r.changes()),
                None => None,
            };
            if let Some(line) = changes {
                self.log(&line).await?;
            }
            if let (Some(plan), Some(manifest)) = (chain, manifest) {
                self.store_manifest(&key, plan, manifest).await?;
            }
            Ok((key, digest))
        }
        .await;
        if let (Err(_), Some(session), Some(docker)) = (&result, session, docker) {
            session.end(docker).await;
        }
        result
    }

    /// A volume that an interrupted restore left mid-swap is recovered before it is read, so that
    /// an archive never holds half of two trees or a restore's reserved folders.
    async fn recover_first(
        &self,
        docker: &crate::docker::DockerClient,
        docker_volume: &str,
    ) -> Result<(), BackupError> {
        let store = self.engine.store();
        let lease = self.engine.settings().run_lease;
        let (ids, live) = store.volume_recoveries(docker_volume, lease).await?;
        if live {
            return Err(BackupError::Recovery(
                "a restore of this volume is still running".to_owned(),
            ));
        }
        if ids.is_empty() {
            return Ok(());
        }
        match crate::restore::files::recover_in_helper(docker, store, docker_volume, &ids, lease)
            .await
        {
            Ok(done) => {
                for (id, what) in done {
                    self.log(&format!(
                        "recovered the volume first: restore {id}: {}",
                        what.describe()
                    ))
                    .await?;
                }
                Ok(())
            }
            Err(e) => Err(BackupError::Recovery(e.to_string())),
        }
    }

    /// The storage key of this volume's archive, reserved for this row: when another row's object
    /// has the key already (another run in the same millisecond, another target writing to the same
    /// place), the next millisecond is taken, so an upload never overwrites another row's object.
    async fn reserve_key(&self, extension: &str) -> Result<String, BackupError> {
        for ms in 0..1000 {
            let timestamp = archive_timestamp(self.started + chrono::Duration::milliseconds(ms));
            let key = self.storage.object_key(&archive_relative_key(
                &self.org.slug,
                &self.app.name,
                &self.volume.name,
                &timestamp,
                extension,
            ));
            let location = self.storage.location(&key);
            if self
                .engine
                .store()
                .reserve_object(&location, self.row)
                .await?
            {
                return Ok(key);
            }
        }
        Err(BackupError::KeyTaken)
    }
}

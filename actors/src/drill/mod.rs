//! DrillRun: one actor per drill of a job. For each volume the job backs up, the newest
//! successful backup is restored into a scratch place that never touches live data — a new,
//! labelled Docker volume for files ([`files`]: then its tree is compared with the archive's
//! listing), a scratch container from the app's database image for a dump ([`database`]: replayed
//! with `ON_ERROR_STOP`, then each table's rows counted) — and the scratch place is removed
//! ([`scratch`]). Its end goes to the supervisor ([`DrillEnded`]), which records it on the drill
//! and the job and sends the failure notice.
//!
//! A drill holds this process's run slot while it works and, per volume, the drill lock of that
//! volume (`lock:volume:drill:{app}/{volume}`): never two drills of one volume at once.

mod database;
mod files;
pub mod scratch;
mod tree;

use std::time::Duration;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::{self, Digest};
use crate::crew::Crew;
use crate::docker::DockerClient;
use crate::engine::Engine;
use crate::messages::DrillEnded;
use crate::model::{Backup, VolumeKind};
use crate::progress::Progress;
use crate::storage::TargetStorage;
use crate::store::StoreError;
use crate::supervision::SHUTTING_DOWN;
use crate::task_watch::{self, Ended};
use futures::FutureExt as _;

/// How long a drill waits for another drill of the same volume to end.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// What a drill found: every volume restored and checked, or the first reason one was not.
pub type DrillOutcome = Result<String, String>;

pub struct DrillRun {
    engine: Engine,
    crew: Crew,
    drill_id: Uuid,
    supervisor: Recipient<DrillEnded>,
    cancel: CancellationToken,
}

impl DrillRun {
    pub fn new(
        engine: Engine,
        crew: Crew,
        drill_id: Uuid,
        supervisor: Recipient<DrillEnded>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            engine,
            crew,
            drill_id,
            supervisor,
            cancel,
        }
    }
}

impl Actor for DrillRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let progress = self.engine.board().start();
        let work = actix::spawn(execute(
            self.engine.clone(),
            self.crew.clone(),
            self.drill_id,
            progress.clone(),
        ));
        task_watch::keep_heartbeat(
            ctx,
            self.engine.clone(),
            self.drill_id,
            progress,
            |e, id| async move { e.store().heartbeat_drill(id).await }.boxed(),
        );
        let cancel = self.cancel.clone();
        let watch = async move {
            match task_watch::join(work, Some(cancel)).await {
                Ended::Returned(Ok(outcome)) => (outcome, true),
                Ended::Returned(Err(DrillError::NotOurs)) => (Err("not pending".to_owned()), false),
                Ended::Returned(Err(e)) => (Err(format!("could not drill: {e}")), true),
                Ended::Panicked(why) => (Err(format!("drill crashed: {why}")), true),
                Ended::Stopped => (Err(format!("{SHUTTING_DOWN}: the drill was stopped")), true),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|(outcome, ours), act, ctx| {
            act.supervisor.do_send(DrillEnded {
                drill_id: act.drill_id,
                outcome,
                ours,
            });
            ctx.stop();
        }));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the drill is not pending")]
    NotOurs,
}

/// What the volume drills share.
pub(crate) struct Ctx<'a> {
    pub engine: &'a Engine,
    pub docker: &'a DockerClient,
    pub drill_id: Uuid,
    pub progress: &'a Progress,
    pub deadline: Duration,
}

impl Ctx<'_> {
    async fn log(&self, line: &str) -> Result<(), String> {
        tracing::info!(drill_id = %self.drill_id, "{line}");
        self.engine
            .store()
            .append_drill_log(self.drill_id, line)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The backup a volume drill restores.
pub(crate) struct Source {
    /// `app/volume`.
    pub name: String,
    pub storage: TargetStorage,
    pub key: String,
    pub expected: Digest,
    pub format: codec::Format,
    /// The app's Docker volume, when it exists (ownership checked): a dump's drill takes the
    /// image of the database container that mounts it.
    pub live_volume: Option<String>,
    /// For an incremental backup: its chain, read as one tree.
    pub chain: Option<crate::chain::Chained>,
}

impl Source {
    /// The backup's tree as a checked tar stream (the archive, or its chain's archives in turn),
    /// each archive verified against its recorded sha256 as it is read.
    pub async fn tar(
        &self,
        progress: &crate::progress::Progress,
    ) -> Result<
        (
            crate::stream::ByteStream,
            tokio::sync::oneshot::Receiver<Vec<crate::tar_guard::HeldSymlink>>,
        ),
        crate::storage::StorageError,
    > {
        let meter = progress.meter(crate::progress::stage::DOWNLOAD);
        Ok(match &self.chain {
            Some(chain) => codec::guard(chain.tree(
                &self.storage,
                crate::chain::ReadWatch {
                    meter: Some(meter),
                    ..Default::default()
                },
            )),
            None => codec::unpack(
                meter.stream(self.storage.download(&self.key).await?),
                self.format.clone(),
                codec::Payload::Tar,
                self.expected.clone(),
            ),
        })
    }
}

/// Performs one drill (claimed by this engine, `pending`).
pub async fn execute(
    engine: Engine,
    crew: Crew,
    drill_id: Uuid,
    progress: Progress,
) -> Result<DrillOutcome, DrillError> {
    let store = engine.store();
    if !store.mark_drill_running(drill_id).await? {
        return Err(DrillError::NotOurs);
    }
    let drill = store.drill(drill_id).await?;
    let backups = store.newest_backups_of_job(drill.job_id).await?;
    // Every volume the job backs up is drilled; one that was never backed up fails the drill.
    let mut failed = Vec::new();
    for app in store.job_apps(drill.job_id).await? {
        for volume in app.volumes.iter().filter(|v| v.persistent) {
            let drilled = backups
                .iter()
                .any(|b| b.app_id == app.id && b.volume_name == volume.name);
            if !drilled {
                failed.push(format!(
                    "{}/{}: no successful backup to drill",
                    app.name, volume.name
                ));
            }
        }
    }
    if backups.is_empty() {
        failed.push("the job has no successful backup to drill yet".to_owned());
        return Ok(Err(failed.join("; ")));
    }
    let _slot = engine.run_slot().await;
    let docker = match engine.docker().await {
        Ok(d) => d,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let ctx = Ctx {
        engine: &engine,
        docker,
        drill_id,
        progress: &progress,
        deadline: engine.settings().stall_deadline,
    };
    let mut done = Vec::new();
    for (n, backup) in backups.iter().enumerate() {
        let name = format!("{}/{}", backup.app_name, backup.volume_name);
        let outcome = drill_volume(&ctx, &crew, backup, n).await;
        match outcome {
            Ok(line) => {
                ctx.log(&line).await.ok();
                done.push(name);
            }
            Err(why) => {
                ctx.log(&format!("{name}: failed: {why}")).await.ok();
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    Ok(if failed.is_empty() {
        Ok(format!(
            "drilled {} volume{}: {}",
            done.len(),
            if done.len() == 1 { "" } else { "s" },
            done.join(", ")
        ))
    } else {
        Err(failed.join("; "))
    })
}

/// One volume: lock, scratch place, restore and check, scratch place removed.
async fn drill_volume(
    ctx: &Ctx<'_>,
    crew: &Crew,
    backup: &Backup,
    n: usize,
) -> Result<String, String> {
    let source = source_of(ctx, backup).await?;
    ctx.progress.describe(
        format!("drilling {}/{}", backup.app_name, backup.volume_name),
        backup.size_bytes.and_then(|s| u64::try_from(s).ok()),
    );
    let key = format!("drill:{}/{}", backup.app_id, backup.volume_name);
    let started = std::time::Instant::now();
    let _lock = loop {
        match crew.lock_volume(&key).await {
            Ok(lock) => break lock,
            Err(crate::lock::LockError::Busy(_)) if started.elapsed() < LOCK_WAIT => {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(format!("could not take the volume's drill lock: {e}")),
        }
    };
    ctx.log(&format!(
        "{}: restoring backup {} ({}) into a scratch place",
        source.name, backup.id, source.key
    ))
    .await?;
    let mut scratch = scratch::Scratch::create(ctx.docker, ctx.drill_id, n)
        .await
        .map_err(|e| format!("could not create the scratch volume: {e}"))?;
    let outcome = match backup.volume_kind {
        VolumeKind::Generic => files::drill(ctx, &source, &scratch).await,
        VolumeKind::Postgres => database::drill(ctx, &source, &mut scratch).await,
        VolumeKind::Engine => Err(
            "the engine's own database is not drilled (verify it, or restore-self it into a \
             scratch database)"
                .to_owned(),
        ),
    };
    let volume = scratch.volume.clone();
    match scratch.remove().await {
        Ok(()) => ctx.log(&format!("scratch volume {volume} removed")).await?,
        Err(e) => {
            ctx.log(&format!(
                "could not remove scratch volume {volume} ({e}); the janitor removes it"
            ))
            .await?
        }
    }
    outcome
}

async fn source_of(ctx: &Ctx<'_>, backup: &Backup) -> Result<Source, String> {
    let store = ctx.engine.store();
    let archive = crate::restore::archive_of(backup).map_err(|e| e.to_string())?;
    let target = store
        .target(archive.target_id)
        .await
        .map_err(|e| e.to_string())?;
    let settings = ctx.engine.settings();
    let storage = TargetStorage::open_with_step_limit(
        &target.config,
        settings.allow_local_backups,
        settings.stall_deadline,
    )
    .map_err(|e| e.to_string())?;
    let storage = ctx
        .engine
        .equip(storage, &target)
        .await
        .map_err(|e| e.to_string())?;
    let live_volume = if backup.volume_kind == VolumeKind::Postgres {
        let owner = crate::ownership::Owner {
            organization_id: backup.organization_id,
            app_id: &backup.app_id,
            app_name: &backup.app_name,
            volume_name: &backup.volume_name,
        };
        owner
            .find(store, ctx.docker)
            .await
            .map_err(|e| e.to_string())?
    } else {
        None
    };
    storage.opens(backup.encrypted_to.as_deref())?;
    let chain = crate::chain::resolve(store, &storage, backup, settings.stall_deadline)
        .await
        .map_err(|e| e.to_string())?;
    let format = storage.format(&archive.key)?;
    Ok(Source {
        name: format!("{}/{}", backup.app_name, backup.volume_name),
        storage,
        key: archive.key,
        expected: archive.expected,
        format,
        live_volume,
        chain,
    })
}

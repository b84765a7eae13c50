//! A file volume's restore: recover what earlier restores of the volume left unfinished, stage the
//! verified archive inside the volume, then swap it in through the journaled steps of
//! [`super::swap`], each only after the volume lock is confirmed. Any failure before the swap's
//! commit point brings the old contents back; the database knows, from the moment anything is
//! written into the volume until it is clean again, that the volume may need recovery
//! (`restore.recovery_pending`), so another engine recovers it if this one dies or loses its lock.

use std::time::Duration;

use uuid::Uuid;

use super::swap::{self, Fence as _, Recovered, SwapNames};
use super::{Log, RestoreError};
use crate::codec::{self, Digest, Payload};
use crate::docker::{DockerClient, HelperContainer};
use crate::lock::VolumeLock;
use crate::progress::stage;
use crate::storage::TargetStorage;
use crate::store::Store;

/// What a file restore needs.
pub struct FileRestore<'a> {
    pub docker: &'a DockerClient,
    pub store: &'a Store,
    pub storage: &'a TargetStorage,
    pub key: &'a str,
    pub format: crate::codec::Format,
    pub expected: Digest,
    /// For an incremental backup: its chain, read as one tree instead of `key` alone.
    pub chain: Option<&'a crate::chain::Chained>,
    pub volume: &'a str,
    pub restore_id: Uuid,
    /// The volume lock this restore holds; confirmed before every step that changes the volume.
    pub lock: &'a VolumeLock,
    /// The engine's run lease: a restore whose heartbeat is older is dead.
    pub lease: Duration,
    /// Cancelled by a shutdown whose grace ran out: the download ends (and the stage is rolled
    /// back) or, once the swap began, the swap runs to its end first — a step is never cut.
    pub cancel: &'a tokio_util::sync::CancellationToken,
    /// Staging fails as stalled when it moves nothing for the deadline; the swap (a few execs in
    /// the helper) is not watched.
    pub watch: super::Watch<'a>,
}

impl FileRestore<'_> {
    /// Recovers what earlier restores of the volume left unfinished (before anything reads the
    /// volume: the safety backup, the swap); refuses while another restore of it runs.
    pub async fn recover_earlier(&self, log: &Log<'_>) -> Result<(), RestoreError> {
        let (earlier, live) = self
            .store
            .volume_recoveries(self.volume, self.lease)
            .await?;
        if live {
            return Err(RestoreError::Failed(format!(
                "another restore of {} is still running; nothing was changed",
                self.volume
            )));
        }
        if !earlier.is_empty() {
            self.lock.still_held().await.map_err(RestoreError::Failed)?;
            let recovered =
                recover_in_helper(self.docker, self.store, self.volume, &earlier, self.lease)
                    .await
                    .map_err(|e| {
                        RestoreError::Failed(format!(
                            "an earlier restore of {} was interrupted and could not be recovered, \
                         so nothing was changed: {e}",
                            self.volume
                        ))
                    })?;
            for (id, what) in recovered {
                log.line(&format!(
                    "recovery of the earlier restore {id}: {}",
                    what.describe()
                ))
                .await?;
            }
        }
        Ok(())
    }

    pub async fn run(&self, log: &Log<'_>) -> Result<(), RestoreError> {
        self.recover_earlier(log).await?;
        let names = SwapNames::of(self.restore_id);
        // From here on the volume holds something of this restore until it is clean again.
        self.store
            .set_restore_recovery(self.restore_id, self.volume, true)
            .await?;
        let helper = self.docker.start_helper(self.volume, false).await?;
        // A stalled download or extraction is dropped (Docker stops extracting when its upload is
        // cut) and fails like any other staging failure: the recovery below removes the staging.
        let staged = self
            .watch
            .progress
            .deadline(
                self.watch.deadline,
                &[stage::DOWNLOAD, stage::EXTRACTION],
                self.stage(&helper, &names, log),
            )
            .await
            .unwrap_or_else(|stalled| Err(stalled.into()));
        let swapped = match staged {
            Ok(()) if self.cancel.is_cancelled() => Err(swap::Failure {
                step: None,
                error: format!("{} before the swap began", super::SHUTTING_DOWN),
                lock_lost: false,
            }),
            Ok(()) => {
                log.line("archive downloaded, sha256 verified and staged; replacing the volume's contents")
                    .await?;
                swap::run(&helper, &names, self.lock, None).await
            }
            Err(e) => Err(swap::Failure {
                step: None,
                error: e.to_string(),
                lock_lost: false,
            }),
        };
        // Removed before any recovery, so that no step of this helper still runs meanwhile.
        if let Err(e) = helper.remove().await {
            tracing::warn!(error = %e, "could not remove the helper container");
        }
        let failure = match swapped {
            Ok(()) => {
                self.clear_mark().await;
                return Ok(());
            }
            Err(failure) => failure,
        };
        let cause = failure.to_string();
        if failure.lock_lost {
            return Err(RestoreError::Failed(format!(
                "{cause}; the volume is left to the engine that holds its lock now, or to the \
                 janitor, to recover"
            )));
        }
        if let Err(e) = self.lock.still_held().await {
            return Err(RestoreError::Failed(format!(
                "{cause}; the volume lock was lost before rolling back ({e}); the janitor \
                 recovers the volume"
            )));
        }
        let outcome = recover_in_helper(
            self.docker,
            self.store,
            self.volume,
            &[self.restore_id],
            self.lease,
        )
        .await
        .map(|done| {
            done.into_iter()
                .find(|(id, _)| *id == self.restore_id)
                .map_or(Recovered::Nothing, |(_, what)| what)
        });
        match outcome {
            Ok(Recovered::Completed) => {
                log.line(&format!(
                    "the swap had committed; cleaning up failed at first ({cause}) and was completed"
                ))
                .await?;
                Ok(())
            }
            Ok(what) => Err(RestoreError::Failed(format!(
                "{cause}; recovery {}",
                what.describe()
            ))),
            Err(e) => Err(RestoreError::Failed(format!(
                "{cause}; recovery did not finish ({e}); the next restore or backup of this \
                 volume, or any engine's janitor, finishes it"
            ))),
        }
    }

    async fn clear_mark(&self) {
        if let Err(e) = self
            .store
            .set_restore_recovery(self.restore_id, self.volume, false)
            .await
        {
            // The volume is clean; a later recovery of this id finds nothing and clears it.
            tracing::warn!(error = %e, "could not clear the restore's recovery mark");
        }
    }

    /// Downloads, verifies and extracts the archive into the staging folder.
    async fn stage(
        &self,
        helper: &HelperContainer,
        names: &SwapNames,
        log: &Log<'_>,
    ) -> Result<(), RestoreError> {
        let staging = format!("/volume/{}", names.staging);
        let out = helper.sh(&format!("mkdir '{staging}'")).await?;
        if out.exit_code != 0 {
            return Err(RestoreError::Failed(format!(
                "could not create the staging folder: {}",
                out.stderr.trim()
            )));
        }
        let progress = self.watch.progress;
        let (tar, verified) = match self.chain {
            Some(chain) => codec::guard(crate::stream::until_cancelled(
                chain.tree(
                    self.storage,
                    crate::chain::ReadWatch {
                        meter: Some(progress.meter(stage::DOWNLOAD)),
                        ..Default::default()
                    },
                ),
                self.cancel.clone(),
                super::SHUTTING_DOWN,
            )),
            None => {
                let download = crate::stream::until_cancelled(
                    self.storage.download(self.key).await?,
                    self.cancel.clone(),
                    super::SHUTTING_DOWN,
                );
                codec::unpack(
                    progress.meter(stage::DOWNLOAD).stream(download),
                    self.format.clone(),
                    Payload::Tar,
                    self.expected.clone(),
                )
            }
        };
        let tar = progress.meter(stage::EXTRACTION).stream(tar);
        let put = helper.put_archive(&staging, tar).await;
        let verified = verified.await;
        match (put, verified) {
            (Ok(()), Ok(held)) if held.is_empty() => Ok(()),
            (Ok(()), Ok(held)) => {
                helper.create_symlinks(&staging, &held).await?;
                log.line(&format!(
                    "created {} symlinks that point outside the volume after extraction",
                    held.len()
                ))
                .await?;
                Ok(())
            }
            (Err(e), _) => Err(RestoreError::Failed(format!(
                "extracting the archive failed: {e}"
            ))),
            (Ok(()), Err(_)) => Err(RestoreError::Failed(
                "the archive could not be verified to its end (see the checksum above)".into(),
            )),
        }
    }
}

/// Recovers the swaps of restores `ids` of `volume` in a helper container of its own, for a
/// volume whose lock the caller holds, and clears their database marks. Returns what recovery did
/// for each. Recovery waits (fails, to be retried) while a command still runs in another helper
/// on the volume, except in those of engine instances that are gone: those are removed first
/// (see [`settle_helpers`]).
pub async fn recover_in_helper(
    docker: &DockerClient,
    store: &Store,
    volume: &str,
    ids: &[Uuid],
    lease: Duration,
) -> Result<Vec<(Uuid, Recovered)>, RestoreError> {
    settle_helpers(docker, store, volume, lease).await?;
    let helper = docker.start_helper(volume, false).await?;
    let result = swap::recover(&helper, ids).await;
    if let Err(e) = helper.remove().await {
        tracing::warn!(error = %e, "could not remove the helper container");
    }
    let done = result.map_err(|e| RestoreError::Failed(e.to_string()))?;
    store.clear_restore_recovery(ids).await?;
    Ok(done)
}

/// A swap step runs as a `docker exec` in a helper container, and a command that Docker runs goes
/// on when the engine that started it dies (killed, or its host's network cut): a step of a dead
/// engine may still be moving entries when another engine comes to recover the volume, and a
/// recovery beside it would undo half a move. So before recovery acts, no command may still run in
/// any helper on the volume: the helpers of instances this database knows as gone (stopped, or no
/// heartbeat within `lease`) are removed, which ends their commands; any other busy helper (a
/// live engine's, another deployment's, an unlabelled one) makes recovery wait for the next try.
async fn settle_helpers(
    docker: &DockerClient,
    store: &Store,
    volume: &str,
    lease: Duration,
) -> Result<(), RestoreError> {
    let busy: Vec<_> = docker
        .helpers_on_volume(volume)
        .await?
        .into_iter()
        .filter(|h| h.busy)
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    let instances: Vec<String> = busy.iter().filter_map(|h| h.instance.clone()).collect();
    let alive = store.instances_alive(&instances, lease).await?;
    for helper in &busy {
        let gone = helper
            .instance
            .as_ref()
            .is_some_and(|i| alive.get(i) == Some(&false));
        if !gone {
            return Err(RestoreError::Failed(format!(
                "a command still runs in the helper container {} on the volume {volume} ({}); \
                 recovery waits until it ends",
                short(&helper.id),
                helper.instance.as_deref().map_or_else(
                    || "not labelled with an engine instance".to_owned(),
                    |i| format!("engine instance {i}")
                )
            )));
        }
        docker.remove_helper(&helper.id).await?;
        tracing::warn!(
            %volume,
            container = %helper.id,
            instance = helper.instance.as_deref().unwrap_or_default(),
            "removed a stopped engine's helper container that still ran a command on the volume, before recovering it"
        );
    }
    if let Some(left) = docker
        .helpers_on_volume(volume)
        .await?
        .into_iter()
        .find(|h| h.busy)
    {
        return Err(RestoreError::Failed(format!(
            "a command still runs in the helper container {} on the volume {volume}; recovery \
             waits until it ends",
            short(&left.id)
        )));
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

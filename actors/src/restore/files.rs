//! A file volume's restore: recover what an earlier restore left unfinished, stage the verified
//! archive inside the volume, then swap it in through the journaled steps of [`super::swap`]. Any
//! failure before the swap's commit point brings the old contents back; the database knows, from
//! the moment anything is written into the volume until it is clean again, that the volume may
//! need recovery (`restore.recovery_pending`), so another engine recovers it if this one dies.

use uuid::Uuid;

use super::swap::{self, Step, SwapNames};
use super::{Log, RestoreError};
use crate::codec::{self, Digest, Payload};
use crate::docker::{DockerClient, HelperContainer};
use crate::model::Compression;
use crate::storage::TargetStorage;
use crate::store::Store;

/// What a file restore needs.
pub struct FileRestore<'a> {
    pub docker: &'a DockerClient,
    pub store: &'a Store,
    pub storage: &'a TargetStorage,
    pub key: &'a str,
    pub compression: Compression,
    pub expected: Digest,
    pub volume: &'a str,
    pub restore_id: Uuid,
}

impl FileRestore<'_> {
    pub async fn run(&self, log: &Log<'_>) -> Result<(), RestoreError> {
        let helper = self.docker.start_helper(self.volume, false).await?;
        let result = self.run_in(&helper, log).await;
        if let Err(e) = helper.remove().await {
            tracing::warn!(error = %e, "could not remove the helper container");
        }
        result
    }

    async fn run_in(&self, helper: &HelperContainer, log: &Log<'_>) -> Result<(), RestoreError> {
        recover_logged(helper, self.store, self.volume, Some(self.restore_id), log)
            .await
            .map_err(|e| {
                RestoreError::Failed(format!(
                    "an earlier restore of {} was interrupted and could not be recovered, so \
                     nothing was changed: {e}",
                    self.volume
                ))
            })?;
        let names = SwapNames::of(self.restore_id);
        // From here on the volume holds something of this restore until it is clean again.
        self.store
            .set_restore_recovery(self.restore_id, self.volume, true)
            .await?;
        let staged = self.stage(helper, &names, log).await;
        let swapped = match staged {
            Ok(()) => {
                log.line("archive downloaded, sha256 verified and staged; replacing the volume's contents")
                    .await?;
                swap::run(helper, &names, None).await
            }
            Err(e) => Err(swap::Failure {
                step: None,
                error: e.to_string(),
            }),
        };
        match swapped {
            Ok(()) => {
                self.store
                    .set_restore_recovery(self.restore_id, self.volume, false)
                    .await?;
                Ok(())
            }
            Err(failure) => {
                let cause = failure.to_string();
                let committed = failure.step.is_some_and(Step::committed);
                // A fresh helper: the failure may have been this one's end.
                let recovered = match recover_in_helper(self.docker, self.store, self.volume).await
                {
                    Ok(lines) => {
                        for line in lines {
                            log.line(&format!("recovery: {line}")).await?;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                match (committed, recovered) {
                    (true, Ok(())) => {
                        log.line(&format!("the archive is in place; cleaning up failed at first ({cause}) and was completed")).await?;
                        Ok(())
                    }
                    (true, Err(e)) => {
                        log.line(&format!("the archive is in place, but the old entries could not be removed yet ({cause}; {e}); the next restore or backup of this volume removes them")).await?;
                        Ok(())
                    }
                    (false, Ok(())) => Err(RestoreError::Failed(format!(
                        "{cause}; the volume holds its old contents"
                    ))),
                    (false, Err(e)) => Err(RestoreError::Failed(format!(
                        "{cause}; rolling back did not finish ({e}); the next restore or backup \
                         of this volume, or any engine's janitor, finishes it"
                    ))),
                }
            }
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
        let download = self.storage.download(self.key).await?;
        let (tar, verified) = codec::unpack(
            download,
            self.compression,
            Payload::Tar,
            self.expected.clone(),
        );
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

/// Finishes or rolls back whatever interrupted restores left in the volume, and clears the
/// database's recovery marks of the volume's restores (but `except`'s). Returns what it did, one
/// line per thing.
pub async fn recover_volume(
    helper: &HelperContainer,
    store: &Store,
    volume: &str,
    except: Option<Uuid>,
) -> Result<Vec<String>, RestoreError> {
    let lines = swap::recover(helper)
        .await
        .map_err(|e| RestoreError::Failed(e.to_string()))?;
    store.clear_volume_recovery(volume, except).await?;
    Ok(lines)
}

/// [`recover_volume`] in a helper container of its own, for a volume whose lock the caller holds.
pub async fn recover_in_helper(
    docker: &DockerClient,
    store: &Store,
    volume: &str,
) -> Result<Vec<String>, RestoreError> {
    let helper = docker.start_helper(volume, false).await?;
    let result = recover_volume(&helper, store, volume, None).await;
    if let Err(e) = helper.remove().await {
        tracing::warn!(error = %e, "could not remove the helper container");
    }
    result
}

async fn recover_logged(
    helper: &HelperContainer,
    store: &Store,
    volume: &str,
    except: Option<Uuid>,
    log: &Log<'_>,
) -> Result<(), RestoreError> {
    for line in recover_volume(helper, store, volume, except).await? {
        log.line(&format!("recovery: {line}")).await?;
    }
    Ok(())
}

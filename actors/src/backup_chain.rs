//! The incremental part of a volume's backup (`backup.rs`): which chain the backup continues, or
//! that it starts a new one, and the manifest stored beside its archive once the archive is.

use std::sync::Arc;

use bytes::Bytes;
use uuid::Uuid;

use crate::backup::{BackupError, VolumeJob};
use crate::chain;
use crate::chain::manifest::{Entry, Manifest};
use crate::host_volume::{ChainWalk, TarReport};
use crate::model::{Backup, BackupKind, ChainLink, VolumeKind};

/// A job's incremental backups: every `full_every`-th backup of a series is a full one.
#[derive(Debug, Clone, Copy)]
pub struct Incremental {
    pub job_id: Uuid,
    pub full_every: u32,
}

/// Where this backup goes in its series' chain.
pub struct ChainPlan {
    pub walk: ChainWalk,
    pub parent: Option<Uuid>,
}

impl ChainPlan {
    /// The marker in the storage key: `full.` or `incr.` before `tar`.
    pub fn marker(&self) -> &'static str {
        if self.parent.is_some() {
            "incr."
        } else {
            "full."
        }
    }

    fn full() -> Self {
        Self {
            walk: ChainWalk {
                position: 0,
                previous: None,
            },
            parent: None,
        }
    }
}

impl VolumeJob<'_> {
    /// The chain this backup continues (its parent's manifest read and verified), or a new one; `None`
    /// when the job has no incremental backups or the volume is a database.
    pub(crate) async fn chain_plan(&self) -> Result<Option<ChainPlan>, BackupError> {
        let Some(incremental) = self.incremental else {
            return Ok(None);
        };
        if self.volume.kind != VolumeKind::Generic {
            self.log("a database dump has no cheap increment: this backup is a full dump")
                .await?;
            return Ok(None);
        }
        let store = self.engine.store();
        let parent = store
            .chain_parent(incremental.job_id, &self.app.id, &self.volume.name)
            .await?;
        let Some(parent) = parent else {
            self.log("the first backup of this volume: it starts a chain (full)")
                .await?;
            return Ok(Some(ChainPlan::full()));
        };
        let limit = self.engine.settings().stall_deadline;
        let why = match self.cannot_continue(&parent, incremental.full_every) {
            Some(why) => Some(why),
            None => self.broken_chain(&parent, limit).await?,
        };
        if let Some(why) = why {
            self.log(&format!("this backup starts a new chain (full): {why}"))
                .await?;
            return Ok(Some(ChainPlan::full()));
        }
        match chain::load_manifest(self.storage, &parent, limit).await {
            Ok(manifest) => {
                let position = u32::try_from(parent.chain.position + 1).unwrap_or(u32::MAX);
                self.log(&format!(
                    "incremental backup {position} of the chain since backup {}: only what \
                     changed since backup {} ({} entries in its manifest) is stored",
                    parent.id,
                    parent.id,
                    manifest.entries.len()
                ))
                .await?;
                Ok(Some(ChainPlan {
                    walk: ChainWalk {
                        position,
                        previous: Some(Arc::new(manifest.by_path())),
                    },
                    parent: Some(parent.id),
                }))
            }
            Err(e) => {
                self.log(&format!("this backup starts a new chain (full): {e}"))
                    .await?;
                Ok(Some(ChainPlan::full()))
            }
        }
    }

    /// Why the backup cannot continue `parent`'s chain, if it cannot.
    fn cannot_continue(&self, parent: &Backup, full_every: u32) -> Option<String> {
        let next = u32::try_from(parent.chain.position + 1).unwrap_or(u32::MAX);
        if parent.chain.manifest_path.is_none() {
            return Some(format!("the last backup {} has no manifest", parent.id));
        }
        if next >= full_every {
            return Some(format!(
                "the chain holds {next} backups, the job's fullEvery is {full_every}"
            ));
        }
        if parent.target_id != Some(self.target.id) {
            return Some(format!(
                "the last backup {} is on another target",
                parent.id
            ));
        }
        let compression = parent
            .storage_path
            .as_deref()
            .and_then(crate::model::Compression::of_key);
        if compression != Some(self.compression) {
            return Some(format!(
                "the last backup {} has another compression",
                parent.id
            ));
        }
        None
    }

    /// Why the chain `parent` belongs to cannot take another backup, if it cannot: a backup of it
    /// is no longer a success, failed its last verification, or its archive is not on the target
    /// at its recorded size (a purge that stopped half-way, an object removed by hand).
    async fn broken_chain(
        &self,
        parent: &Backup,
        limit: std::time::Duration,
    ) -> Result<Option<String>, BackupError> {
        // A chain is encrypted to one set of recipients: a change of the target's encryption
        // starts a new chain, so that what is written from now on is all under the new setting.
        let now = self.storage.recipients().map(|r| r.texts());
        if parent.encrypted_to != now {
            return Ok(Some(
                "the target's encryption changed since the chain's last backup".to_owned(),
            ));
        }
        if let Err(why) = self.storage.opens(parent.encrypted_to.as_deref()) {
            return Ok(Some(format!("its manifest cannot be read: {why}")));
        }
        let chain = match chain::ancestry(self.engine.store(), parent).await {
            Ok(chain) => chain,
            Err(chain::ChainError::Store(e)) => return Err(e.into()),
            Err(e) => return Ok(Some(e.to_string())),
        };
        for b in &chain {
            if b.verify_outcome.as_deref() == Some("failed") {
                return Ok(Some(format!(
                    "backup {} of the chain failed its verification",
                    b.id
                )));
            }
            let Some(key) = b.storage_path.as_deref() else {
                return Ok(Some(format!("backup {} of the chain has no archive", b.id)));
            };
            let stat = tokio::time::timeout(limit, self.storage.stat(key)).await;
            let size = b.size_bytes.and_then(|s| u64::try_from(s).ok());
            match stat {
                Ok(Ok(found)) if found.is_some() && found == size => {}
                Ok(Ok(found)) => {
                    return Ok(Some(format!(
                        "the archive {key} of the chain is {} on the target",
                        found.map_or("missing".to_owned(), |n| format!("{n} bytes, not {size:?}"))
                    )))
                }
                Ok(Err(e)) => {
                    return Ok(Some(format!("the archive {key} could not be checked: {e}")))
                }
                Err(_) => {
                    return Ok(Some(format!(
                        "the archive {key} could not be checked within {limit:?}"
                    )))
                }
            }
        }
        Ok(None)
    }

    /// Stores the manifest of the archive just uploaded to `key` and records the row's place in
    /// its chain. On failure the archive is removed too: a chain archive without its manifest is
    /// of no use to a restore.
    pub(crate) async fn store_manifest(
        &self,
        key: &str,
        plan: ChainPlan,
        read: tokio::sync::oneshot::Receiver<(TarReport, Vec<Entry>)>,
    ) -> Result<(), BackupError> {
        let manifest_key = chain::manifest_key(key, self.compression);
        let result = self.upload_manifest(&manifest_key, plan, read).await;
        if result.is_err() {
            for k in [key, manifest_key.as_str()] {
                if let Err(e) = self.storage.delete(k).await {
                    tracing::warn!(key = %k, error = %e, "could not remove an object of a failed backup");
                }
            }
        }
        result
    }

    async fn upload_manifest(
        &self,
        manifest_key: &str,
        plan: ChainPlan,
        read: tokio::sync::oneshot::Receiver<(TarReport, Vec<Entry>)>,
    ) -> Result<(), BackupError> {
        let (report, entries) = read.await.map_err(|_| {
            BackupError::Refused("the volume read ended without its manifest".to_owned())
        })?;
        if let Some(line) = report.changes() {
            self.log(&line).await?;
        }
        let position = plan.walk.position;
        let stored = entries.iter().filter(|e| e.origin == position).count();
        let manifest = Manifest {
            backup_id: self.row,
            position,
            entries,
        };
        let total = manifest.entries.len();
        let bytes = Bytes::from(manifest.to_bytes());
        let stream: crate::stream::ByteStream =
            Box::pin(futures::stream::once(async move { Ok(bytes) }));
        let limit = self.engine.settings().stall_deadline;
        let upload = self.crew.upload(
            self.storage,
            manifest_key,
            stream,
            self.compression,
            self.level,
            self.progress,
        );
        let digest = tokio::time::timeout(limit, upload).await.map_err(|_| {
            BackupError::Refused(format!(
                "the manifest upload to {manifest_key} did not finish within {limit:?}"
            ))
        })??;
        let link = ChainLink {
            kind: if plan.parent.is_some() {
                BackupKind::Incremental
            } else {
                BackupKind::Full
            },
            parent_backup_id: plan.parent,
            position: i32::try_from(position).unwrap_or(i32::MAX),
            manifest_path: Some(manifest_key.to_owned()),
            manifest_checksum: Some(format!("sha256:{}", digest.sha256_hex)),
            manifest_size: Some(i64::try_from(digest.size).unwrap_or(i64::MAX)),
        };
        self.engine
            .store()
            .set_backup_chain(self.row, &link)
            .await?;
        self.log(&format!(
            "manifest of {total} entries stored at {manifest_key} ({} bytes, sha256:{}); this \
             archive holds {stored} of them{}",
            digest.size,
            digest.sha256_hex,
            if plan.parent.is_some() {
                " (the rest are unchanged, in earlier archives of the chain) and a folder \
                 listing of every folder"
            } else {
                ""
            }
        ))
        .await?;
        Ok(())
    }
}

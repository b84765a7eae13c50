//! Incremental backups: a series of backups as chains of one full archive and incrementals that
//! hold what changed since their parent, each with a [`manifest`] of the whole tree beside it.
//! [`tree`] turns a chain back into one tar of the tree at any of its backups, for restores,
//! downloads, verifications and drills.
//!
//! The full archive of a chain is a plain tar of the whole volume (readable as any other
//! backup); an incremental one is in GNU tar's incremental format, so that `tar
//! --listed-incremental=/dev/null -x` applied to the full archive and then to each incremental
//! in turn gives the tree too (README, "Restoring a chain by hand").

pub mod export;
pub mod manifest;
#[cfg(test)]
mod tests;
pub mod tree;

/// Entries changed (by ctime or mtime) at or after this second, Unix time, are racy: a second
/// before now (see [`manifest::Entry::racy`]).
pub fn racy_from() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    now - 1
}

use std::collections::HashMap;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use uuid::Uuid;

use crate::codec::{self, Digest, Payload};
use crate::model::{Backup, BackupKind, Compression, Status};
use crate::storage::TargetStorage;
use crate::store::{Store, StoreError};
use manifest::Manifest;
pub use tree::{Part, ReadWatch};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the chain of backup {id} is broken: {why}")]
    Broken { id: Uuid, why: String },
    /// The manifest is missing or damaged.
    #[error("the manifest {key} cannot be read: {why}")]
    Manifest { key: String, why: String },
    /// The target did not give the manifest (it says nothing about the backup).
    #[error("the manifest {key} could not be downloaded: {why}")]
    Unreachable { key: String, why: String },
}

impl ChainError {
    /// Whether the error says the backup cannot be restored (rather than that a service did not
    /// answer).
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::Broken { .. } | Self::Manifest { .. })
    }
}

/// The storage key of the manifest beside the archive `key` (`….incr.tar.gz` →
/// `….incr.manifest.jsonl.gz`); the manifest of an encrypted archive is encrypted too
/// (`….tar.gz.age` → `….manifest.jsonl.gz.age`): it holds every file name.
pub fn manifest_key(key: &str, compression: Compression) -> String {
    let sealed = crate::encryption::SUFFIX;
    let (plain, suffix) = match key.strip_suffix(sealed) {
        Some(plain) => (plain, sealed),
        None => (key, ""),
    };
    let archive = format!(".tar.{}", compression.suffix());
    let stem = plain.strip_suffix(&archive).unwrap_or(plain);
    format!("{stem}.manifest.jsonl.{}{suffix}", compression.suffix())
}

/// The size and sha256 a row records (`size`, `sha256:…`).
pub fn recorded(size: Option<i64>, checksum: Option<&str>) -> Option<Digest> {
    Some(Digest {
        size: u64::try_from(size?).ok()?,
        sha256_hex: checksum?.strip_prefix("sha256:")?.to_owned(),
    })
}

/// Downloads, verifies (size and sha256 from the row) and reads a backup's manifest.
/// A manifest whose download moves nothing for `limit` is given up (as unreachable).
pub async fn load_manifest(
    storage: &TargetStorage,
    backup: &Backup,
    limit: Duration,
) -> Result<Manifest, ChainError> {
    let link = &backup.chain;
    let key = link
        .manifest_path
        .clone()
        .ok_or_else(|| ChainError::Broken {
            id: backup.id,
            why: "no manifest is recorded".to_owned(),
        })?;
    let failed = |why: String| ChainError::Manifest {
        key: key.clone(),
        why,
    };
    let expected = recorded(link.manifest_size, link.manifest_checksum.as_deref())
        .ok_or_else(|| failed("no checksum is recorded".to_owned()))?;
    let format = storage.format(&key).map_err(failed)?;
    let unreachable = |why: String| ChainError::Unreachable {
        key: key.clone(),
        why,
    };
    let download = tokio::time::timeout(limit, storage.download(&key))
        .await
        .map_err(|_| unreachable(format!("no answer within {limit:?}")))?
        .map_err(|e| match e {
            crate::storage::StorageError::NotFound { .. } => failed(e.to_string()),
            other => unreachable(other.to_string()),
        })?;
    // Whether the download itself failed: then a read error says nothing about the manifest.
    let cut = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&cut);
    let download = crate::stream::stalls_after(download, limit);
    let download: crate::stream::ByteStream = Box::pin(download.inspect(move |chunk| {
        if chunk.is_err() {
            seen.store(true, Ordering::Relaxed);
        }
    }));
    let (decoded, _) = codec::unpack(download, format, Payload::Raw, expected);
    let read = tokio::task::spawn_blocking(move || {
        Manifest::read(BufReader::new(codec::blocking_reader(decoded)))
    })
    .await
    .map_err(|e| failed(e.to_string()))?;
    let manifest = read.map_err(|e| {
        if cut.load(Ordering::Relaxed) {
            unreachable(e.to_string())
        } else {
            failed(e.to_string())
        }
    })?;
    if manifest.backup_id != backup.id {
        return Err(failed(format!(
            "it is the manifest of backup {}, not of {}",
            manifest.backup_id, backup.id
        )));
    }
    Ok(manifest)
}

/// The backups `backup` needs, the full one first and `backup` last; every one must still be a
/// `success` on the same target, at the position its child expects.
pub async fn ancestry(store: &Store, backup: &Backup) -> Result<Vec<Backup>, ChainError> {
    let mut chain = vec![backup.clone()];
    loop {
        let child = chain.last().expect("never empty");
        let broken = |why: String| ChainError::Broken { id: backup.id, why };
        if child.status != Status::Success {
            return Err(broken(format!(
                "backup {} of the chain is {}",
                child.id,
                child.status.as_str()
            )));
        }
        match (child.chain.kind, child.chain.parent_backup_id) {
            (BackupKind::Full, _) => break,
            (BackupKind::Incremental, None) => {
                return Err(broken(format!(
                    "backup {} has no parent recorded",
                    child.id
                )))
            }
            (BackupKind::Incremental, Some(parent)) => {
                let parent = store.backup(parent).await?;
                if parent.chain.position + 1 != child.chain.position
                    || parent.target_id != child.target_id
                {
                    return Err(broken(format!(
                        "backup {} does not continue backup {}",
                        child.id, parent.id
                    )));
                }
                chain.push(parent);
            }
        }
    }
    chain.reverse();
    Ok(chain)
}

/// What reading the tree at an incremental backup takes: its chain's archives and the origin of
/// every path, from its manifest.
#[derive(Debug, Clone)]
pub struct Chained {
    pub parts: Vec<Part>,
    pub origins: HashMap<Vec<u8>, u32>,
    /// The root folder as the backup recorded it.
    pub root: Option<manifest::Entry>,
    /// The chain's backups, the full one first.
    pub backups: Vec<Uuid>,
}

impl Chained {
    /// One tar of the whole tree at the backup (see [`tree::tree`]), read as `watch` says.
    pub fn tree(
        &self,
        storage: &TargetStorage,
        watch: tree::ReadWatch,
    ) -> crate::stream::ByteStream {
        tree::tree(
            storage.clone(),
            self.parts.clone(),
            self.origins.clone(),
            self.root.clone(),
            watch,
        )
    }

    /// How the log names what is read.
    pub fn describe(&self) -> String {
        format!(
            "an incremental backup: the tree is read from {} archives of its chain (the full \
             backup {} and {} incrementals), each verified against its recorded sha256",
            self.parts.len(),
            self.backups[0],
            self.parts.len() - 1
        )
    }
}

/// For an incremental backup, its chain; `None` for a full backup, whose archive is the whole
/// tree by itself.
pub async fn resolve(
    store: &Store,
    storage: &TargetStorage,
    backup: &Backup,
    limit: Duration,
) -> Result<Option<Chained>, ChainError> {
    if backup.chain.kind == BackupKind::Full {
        return Ok(None);
    }
    let chain = ancestry(store, backup).await?;
    let mut parts = Vec::with_capacity(chain.len());
    for b in &chain {
        let broken = |why: &str| ChainError::Broken {
            id: backup.id,
            why: format!("backup {}: {why}", b.id),
        };
        let key = b
            .storage_path
            .clone()
            .ok_or_else(|| broken("no storage path"))?;
        parts.push(Part {
            format: storage.format(&key).map_err(|why| broken(&why))?,
            expected: recorded(b.size_bytes, b.checksum.as_deref())
                .ok_or_else(|| broken("no checksum"))?,
            key,
        });
    }
    let manifest = load_manifest(storage, backup, limit).await?;
    if usize::try_from(manifest.position).ok() != Some(chain.len() - 1) {
        return Err(ChainError::Broken {
            id: backup.id,
            why: format!(
                "its manifest is at position {}, its chain has {} backups",
                manifest.position,
                chain.len()
            ),
        });
    }
    Ok(Some(Chained {
        parts,
        origins: manifest.origins(),
        root: manifest.entries.iter().find(|e| e.path.is_empty()).cloned(),
        backups: chain.iter().map(|b| b.id).collect(),
    }))
}

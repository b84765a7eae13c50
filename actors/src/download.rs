//! Downloads of a backup's archive: a pre-signed GET URL (valid one hour) for S3-compatible
//! targets; for ssh and local targets the object streams through the engine. An encrypted
//! archive downloads as it is stored (`….tar.gz.age`: `age -d -i key.txt … | tar xz`).

use std::time::Duration;

use uuid::Uuid;

use crate::engine::Engine;
use crate::model::Status;
use crate::storage::{StorageError, TargetStorage};
use crate::store::StoreError;
use crate::stream::ByteStream;

/// How long a pre-signed download URL stays valid.
pub const PRESIGN_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("backup {0} has no archive to download: {1}")]
    NoArchive(Uuid, String),
}

pub enum Download {
    /// Send the client here (pre-signed, expires after [`PRESIGN_TTL`]).
    Redirect(String),
    /// Stream these bytes, offered under `file_name`.
    Stream {
        file_name: String,
        size: Option<u64>,
        body: ByteStream,
    },
}

/// The download of a successful backup's archive.
pub async fn download(engine: &Engine, backup_id: Uuid) -> Result<Download, DownloadError> {
    let store = engine.store();
    let backup = store.backup(backup_id).await?;
    let none = |why: &str| DownloadError::NoArchive(backup_id, why.to_owned());
    if backup.status != Status::Success {
        return Err(none(&format!("its status is {}", backup.status.as_str())));
    }
    let key = backup
        .storage_path
        .clone()
        .ok_or_else(|| none("no storage path"))?;
    let target_id = backup
        .target_id
        .ok_or_else(|| none("its target was deleted"))?;
    let target = store.target(target_id).await?;
    let storage = TargetStorage::open(&target.config, engine.settings().allow_local_backups)?;
    let storage = engine.equip(storage, &target).await?;
    // An incremental backup downloads as one archive of the whole tree at that backup, streamed
    // from its chain and compressed as the chain is; an encrypted one needs the identity.
    if backup.chain.kind == crate::model::BackupKind::Incremental {
        storage
            .opens(backup.encrypted_to.as_deref())
            .map_err(|why| none(&why))?;
    }
    let chained = crate::chain::resolve(store, &storage, &backup, engine.settings().stall_deadline)
        .await
        .map_err(|e| match e {
            crate::chain::ChainError::Store(e) => DownloadError::Store(e),
            other => none(&other.to_string()),
        })?;
    if let Some(chain) = chained {
        let compression = crate::model::Compression::of_key(&key).unwrap_or_default();
        // An encrypted chain is read with the engine's identities and downloads encrypted again,
        // to the recipients its backup was encrypted to: a download is never plainer than the
        // objects on the target.
        let recipients = match &backup.encrypted_to {
            Some(texts) => Some(std::sync::Arc::new(
                crate::encryption::Recipients::from_texts(texts).map_err(|why| none(&why))?,
            )),
            None => None,
        };
        let sealed = if recipients.is_some() {
            crate::encryption::SUFFIX
        } else {
            ""
        };
        let (body, _) = crate::codec::pack(
            chain.tree(&storage, crate::chain::ReadWatch::default()),
            compression,
            None,
            recipients,
        );
        let stamp = key.rsplit('/').next().unwrap_or("archive");
        let stamp = stamp.split('.').next().unwrap_or(stamp);
        return Ok(Download::Stream {
            file_name: format!(
                "{}-{}-{stamp}.tar.{}{sealed}",
                backup.app_name,
                backup.volume_name,
                compression.suffix()
            ),
            size: None,
            body,
        });
    }
    if let Some(url) = storage.presign_read(&key, PRESIGN_TTL).await? {
        return Ok(Download::Redirect(url));
    }
    // `{app}-{volume}-{timestamp}.tar.gz`: readable in a downloads folder.
    let file_name = format!(
        "{}-{}-{}",
        backup.app_name,
        backup.volume_name,
        key.rsplit('/').next().unwrap_or("archive")
    );
    Ok(Download::Stream {
        file_name,
        size: backup.size_bytes.and_then(|s| u64::try_from(s).ok()),
        body: storage.download(&key).await?,
    })
}

//! What the `Uploader` actor (uploader/mod.rs) does: compresses an archive stream and streams it to
//! a target, with its size and SHA-256 computed on the way; succeeds only when the target holds the
//! whole object.

use crate::codec::{self, Digest};
use crate::model::Compression;
use crate::progress::{stage, Progress};
use crate::storage::TargetStorage;
use crate::stream::ByteStream;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("upload to {key} failed: {source}")]
    Storage {
        key: String,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("upload to {key} failed: the compression stage ended early")]
    Incomplete { key: String },
    #[error("upload to {key} failed: the target holds {stored} bytes, {sent} were sent")]
    SizeMismatch { key: String, stored: u64, sent: u64 },
    #[error("upload to {key} given up: it was aborted")]
    GivenUp { key: String },
    #[error("upload to {key} failed: the uploader is not running ({why})")]
    Unavailable { key: String, why: String },
}

/// Compresses `archive` (and encrypts it, for a target with age encryption: see
/// [`TargetStorage::sealing_to`]), uploads it to `key` and returns the stored object's digest;
/// the bytes compressed and the bytes the target accepted are counted on `progress`.
#[tracing::instrument(skip(storage, archive, progress))]
pub async fn upload(
    storage: &TargetStorage,
    key: &str,
    archive: ByteStream,
    compression: Compression,
    level: Option<i32>,
    progress: &Progress,
) -> Result<Digest, UploadError> {
    let (packed, digest) = codec::pack(archive, compression, level, storage.recipients().cloned());
    let packed = progress.meter(stage::COMPRESSION).stream(packed);
    let stored = storage
        .upload_metered(key, packed, Some(progress.meter(stage::UPLOAD)))
        .await
        .map_err(|source| UploadError::Storage {
            key: key.to_owned(),
            source,
        })?;
    let digest = digest.await.map_err(|_| UploadError::Incomplete {
        key: key.to_owned(),
    })?;
    if digest.size != stored {
        // The storage layer already compares; a second look costs nothing and guards `success`.
        let _ = storage.delete(key).await;
        return Err(UploadError::SizeMismatch {
            key: key.to_owned(),
            stored,
            sent: digest.size,
        });
    }
    Ok(digest)
}

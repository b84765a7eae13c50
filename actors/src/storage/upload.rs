//! Streaming an archive to a target: S3 multipart in 8 MiB parts, plain streaming writes for SFTP
//! and local folders. Memory stays bounded whatever the object's size; a failed, refused or
//! cancelled upload leaves no object behind; a successful one is confirmed by its stored size.
//!
//! Why one S3 part in flight, not four: in opendal 0.55 a concurrent writer keeps every part that
//! finished uploading (its bytes included) until the writer is closed, as long as the source is
//! slower than the upload — the usual case for a compressed volume — so `concurrent(4)` would hold
//! the whole archive in memory (`ConcurrentTasks` with a fixed prefetch of 8192; fixed upstream by
//! apache/opendal#8224 and #8327). Raise [`S3_PARTS_IN_FLIGHT`] with an opendal that has them.

use futures::StreamExt;
use opendal::{ErrorKind, Writer};

use super::target_storage::{StorageKind, TargetStorage};
use super::StorageError;
use crate::stream::ByteStream;

/// The size of one S3 multipart part (S3's minimum is 5 MiB; 10,000 parts make 80 GiB at most).
pub const S3_PART_SIZE: usize = 8 * 1024 * 1024;
/// How many S3 parts are sent at once; see the module note before raising it.
pub const S3_PARTS_IN_FLIGHT: usize = 1;

/// Where an upload failed, which decides the cleanup.
enum Failure {
    /// The archive stream ended with an error.
    Body(std::io::Error),
    /// The backend refused a write.
    Write(opendal::Error),
    /// The backend refused to finish the object (S3: complete the multipart upload or the single
    /// PUT of a small object) — it may exist anyway.
    Close(opendal::Error),
}

impl TargetStorage {
    /// Streams `body` to `key` and returns the stored size, confirmed by a stat after the close.
    ///
    /// S3 kinds: multipart upload in [`S3_PART_SIZE`] parts (a single PUT below one part).
    /// ssh/local: a streaming write. On any error — from `body` or from the backend — the write is
    /// aborted (S3: the multipart upload is aborted; ssh/local: the partial file is removed) and the
    /// error returned. If the future is dropped half way the same cleanup runs in the background.
    #[tracing::instrument(skip(self, body), fields(kind = self.kind.as_str()))]
    pub async fn upload(&self, key: &str, mut body: ByteStream) -> Result<u64, StorageError> {
        let writer = match self.kind {
            StorageKind::S3 => {
                self.op
                    .writer_with(key)
                    .chunk(S3_PART_SIZE)
                    .concurrent(S3_PARTS_IN_FLIGHT)
                    .await
            }
            StorageKind::Ssh | StorageKind::Local => self.op.writer(key).await,
        }
        .map_err(|e| self.backend_error("upload", key, e))?;

        let mut pending = Pending {
            storage: self.clone(),
            key: key.to_owned(),
            writer: Some(writer),
        };
        let mut sent: u64 = 0;
        if let Err(failure) = pending.send_all(&mut body, &mut sent).await {
            let may_exist = matches!(failure, Failure::Close(_));
            pending.discard(may_exist).await;
            return Err(match failure {
                Failure::Body(source) => StorageError::Body {
                    key: key.to_owned(),
                    source,
                },
                Failure::Write(e) | Failure::Close(e) => self.backend_error("upload", key, e),
            });
        }
        pending.writer = None;
        drop(pending);
        tracing::debug!(sent, "upload closed");

        match self.stat(key).await? {
            Some(stored) if stored == sent => Ok(stored),
            Some(stored) => {
                self.remove_quietly(key).await;
                Err(StorageError::SizeMismatch {
                    key: key.to_owned(),
                    sent,
                    stored,
                })
            }
            None => Err(StorageError::MissingAfterUpload {
                kind: self.kind.as_str(),
                key: key.to_owned(),
            }),
        }
    }

    /// Deletes `key`, logging a failure: used on paths that already return another error.
    async fn remove_quietly(&self, key: &str) {
        if let Err(e) = self.delete(key).await {
            tracing::warn!(key, error = %e, "could not remove a failed upload");
        }
    }
}

/// An upload whose writer is not closed yet. Dropping it while the writer is still there (the
/// upload's future was cancelled) cleans up in the background.
struct Pending {
    storage: TargetStorage,
    key: String,
    writer: Option<Writer>,
}

impl Pending {
    async fn send_all(&mut self, body: &mut ByteStream, sent: &mut u64) -> Result<(), Failure> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Failure::Body)?;
            if chunk.is_empty() {
                continue;
            }
            let len = chunk.len() as u64;
            writer.write(chunk).await.map_err(Failure::Write)?;
            *sent += len;
        }
        writer.close().await.map_err(Failure::Close)?;
        Ok(())
    }

    /// Aborts the write and removes what it may have left: the partial file of ssh/local targets,
    /// and for S3 the object when the failure came at the close (it may have been created). An S3
    /// failure before the close leaves only the multipart upload, which the abort removes; the key
    /// is not touched then, so a failed upload never deletes an object it did not write.
    async fn discard(&mut self, may_exist: bool) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        cleanup(self.storage.clone(), self.key.clone(), writer, may_exist).await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(key = %self.key, "upload cancelled outside a runtime; partial object left");
            return;
        };
        tracing::warn!(key = %self.key, "upload cancelled; removing the partial object");
        runtime.spawn(cleanup(
            self.storage.clone(),
            self.key.clone(),
            writer,
            true,
        ));
    }
}

async fn cleanup(storage: TargetStorage, key: String, mut writer: Writer, may_exist: bool) {
    match writer.abort().await {
        Ok(()) => {}
        // SFTP and fs (without an atomic write folder) cannot abort: the file is removed below.
        Err(e) if e.kind() == ErrorKind::Unsupported => {}
        Err(e) => {
            let e = storage.backend_error("abort upload", &key, e);
            tracing::warn!(key, error = %e, "could not abort a failed upload");
        }
    }
    drop(writer);
    if may_exist || storage.kind != StorageKind::S3 {
        storage.remove_quietly(&key).await;
    }
}

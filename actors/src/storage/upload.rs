//! Streaming an archive to a target: S3 multipart in 8 MiB parts, plain streaming writes for SFTP
//! and local folders. Memory stays bounded whatever the object's size; a failed, refused or
//! cancelled upload leaves no object behind; a successful one is confirmed by its stored size.
//!
//! Why one S3 part in flight, not four: in opendal 0.55 a concurrent writer keeps every part that
//! finished uploading (its bytes included) until the writer is closed, as long as the source is
//! slower than the upload — the usual case for a compressed volume — so `concurrent(4)` holds the
//! whole archive in memory (measured: 417 MiB peak for a 400 MiB upload, 34 MiB with one part in
//! flight). The cause is `ConcurrentTasks`' fixed prefetch of 8192, fixed upstream by
//! apache/opendal#8224 and #8327; raise [`S3_PARTS_IN_FLIGHT`] with an opendal that has them.
//!
//! Why the writing runs in its own task: a write future dropped half way loses opendal's writer
//! (`RetryLayer` holds it inside the pending future), after which the S3 multipart upload can no
//! longer be aborted and stays on the bucket, unseen and billed. The task is never dropped mid-write:
//! when the caller goes away it stops between two writes, aborts and removes what it wrote.
//! The tasks are tracked ([`uploads_settled`]), so that a process that shuts down waits for those
//! aborts instead of tearing the runtime down under them.

use futures::StreamExt;
use opendal::{ErrorKind, Writer};
use tokio::sync::oneshot;
use tracing::Instrument as _;

use super::target_storage::{StorageKind, TargetStorage};
use super::StorageError;
use crate::stream::ByteStream;

/// The size of one S3 multipart part (S3's minimum is 5 MiB; 10,000 parts make 80 GiB at most).
pub const S3_PART_SIZE: usize = 8 * 1024 * 1024;
/// How many S3 parts are sent at once; see the module note before raising it.
pub const S3_PARTS_IN_FLIGHT: usize = 1;

/// Every writing task of this process. Process-wide on purpose: a task outlives the upload (and
/// the storage value) that started it, and the process must not end before it has aborted.
static UPLOADS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Waits, at most `limit`, until every upload's writing task has ended (its multipart upload
/// completed or aborted, its partial object removed); false if some were still running.
pub async fn uploads_settled(limit: std::time::Duration) -> bool {
    UPLOADS.close();
    let settled = tokio::time::timeout(limit, UPLOADS.wait()).await.is_ok();
    UPLOADS.reopen();
    settled
}

/// How the writing task ended.
enum Outcome {
    Closed {
        sent: u64,
    },
    Failed(StorageError),
    /// The caller dropped `upload` before the end; nobody reads this.
    Cancelled,
}

impl TargetStorage {
    /// Streams `body` to `key` and returns the stored size, confirmed by a stat after the close.
    ///
    /// S3 kinds: multipart upload in [`S3_PART_SIZE`] parts (a single PUT below one part).
    /// ssh/local: a streaming write. On any error — from `body` or from the backend — the write is
    /// aborted (S3: the multipart upload is aborted; ssh/local: the partial file is removed) and the
    /// error returned. If this future is dropped half way the same cleanup runs in the background.
    #[tracing::instrument(skip(self, body), fields(kind = self.kind.as_str()))]
    pub async fn upload(&self, key: &str, body: ByteStream) -> Result<u64, StorageError> {
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

        // Dropping `_cancel` (this future dropped) is what tells the task to stop.
        let (_cancel, cancelled) = oneshot::channel::<()>();
        let task = UPLOADS.spawn(
            write_all(self.clone(), key.to_owned(), writer, body, cancelled)
                .instrument(tracing::Span::current()),
        );
        let sent = match task.await {
            Ok(Outcome::Closed { sent }) => sent,
            Ok(Outcome::Failed(e)) => return Err(e),
            Ok(Outcome::Cancelled) => return Err(self.task_error(key, "was cancelled")),
            Err(join) => return Err(self.task_error(key, &format!("task failed: {join}"))),
        };
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

    fn task_error(&self, key: &str, what: &str) -> StorageError {
        StorageError::Backend {
            kind: self.kind.as_str(),
            op: "upload",
            key: key.to_owned(),
            message: format!("the upload {what}"),
            retryable: true,
        }
    }

    /// Deletes `key`, logging a failure: used on paths that already return another error.
    async fn remove_quietly(&self, key: &str) {
        if let Err(e) = self.delete(key).await {
            tracing::warn!(key, error = %e, "could not remove a failed upload");
        }
    }
}

/// Feeds `body` to `writer` and closes it. A write or close is never interrupted; between writes,
/// the end of `cancelled` (the caller is gone) stops the upload.
async fn write_all(
    storage: TargetStorage,
    key: String,
    mut writer: Writer,
    mut body: ByteStream,
    mut cancelled: oneshot::Receiver<()>,
) -> Outcome {
    let mut sent: u64 = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut cancelled => {
                tracing::warn!(key, sent, "upload cancelled; removing the partial object");
                discard(&storage, &key, writer, true).await;
                return Outcome::Cancelled;
            }
            next = body.next() => next,
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(source)) => {
                discard(&storage, &key, writer, false).await;
                return Outcome::Failed(StorageError::Body { key, source });
            }
        };
        if chunk.is_empty() {
            continue;
        }
        let len = chunk.len() as u64;
        if let Err(e) = writer.write(chunk).await {
            let e = storage.backend_error("upload", &key, e);
            discard(&storage, &key, writer, false).await;
            return Outcome::Failed(e);
        }
        sent += len;
    }
    if let Err(e) = writer.close().await {
        let e = storage.backend_error("upload", &key, e);
        // S3: the complete (or the single PUT) may have created the object anyway.
        discard(&storage, &key, writer, true).await;
        return Outcome::Failed(e);
    }
    Outcome::Closed { sent }
}

/// Aborts the write and removes what it may have left: the partial file of ssh/local targets, and
/// for S3 the object when it may exist (`may_exist`: failure at the close, or cancellation). An S3
/// failure before the close leaves only the multipart upload, which the abort removes; the key is
/// not touched then, so a failed upload does not delete an object it did not write.
async fn discard(storage: &TargetStorage, key: &str, mut writer: Writer, may_exist: bool) {
    tracing::debug!(key, "aborting the upload");
    match writer.abort().await {
        Ok(()) => {}
        // SFTP and fs (without an atomic write folder) cannot abort: the file is removed below.
        Err(e) if e.kind() == ErrorKind::Unsupported => {}
        Err(e) => {
            let e = storage.backend_error("abort upload", key, e);
            tracing::warn!(key, error = %e, "could not abort a failed upload");
        }
    }
    drop(writer);
    tracing::debug!(key, "upload aborted");
    if may_exist || storage.kind != StorageKind::S3 {
        storage.remove_quietly(key).await;
    }
}

//! Streaming an archive to a target: S3 multipart in parts that start at 8 MiB and grow with the
//! archive (see [`s3_part_size`]), plain streaming writes for SFTP and local folders. Memory stays bounded whatever the object's size; a failed, refused or
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
use crate::progress::Meter;
use crate::stream::ByteStream;

/// The size of the first S3 multipart parts (S3's minimum is 5 MiB).
pub const S3_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3 allows 10,000 parts of at most 5 GiB in one upload, and objects of at most 5 TiB.
#[cfg(test)]
const S3_MAX_PARTS: usize = 10_000;
/// Parts per size tier: the part size doubles after every this many parts.
const PARTS_PER_TIER: usize = 1_000;

/// The size of part `index` (0-based) of an S3 upload: 8 MiB for the first 1,000 parts (8 GiB,
/// so memory stays at two parts for everyday archives), then doubling every 1,000 parts, so that
/// 10,000 parts hold more than S3's 5 TiB object limit without a part over 5 GiB. The archive's
/// size is not known in advance (it is streamed), hence a schedule rather than one size.
pub fn s3_part_size(index: usize) -> usize {
    let tier = u32::try_from(index / PARTS_PER_TIER).unwrap_or(u32::MAX);
    S3_PART_SIZE.saturating_mul(1usize.checked_shl(tier).unwrap_or(usize::MAX))
}
/// How many S3 parts are sent at once; see the module note before raising it.
pub const S3_PARTS_IN_FLIGHT: usize = 1;

/// The suffix of a file being written to an ssh or local target.
const PARTIAL_SUFFIX: &str = ".partial";

fn partial_key(key: &str) -> String {
    format!("{key}{PARTIAL_SUFFIX}")
}

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
    /// S3 kinds: multipart upload in [`s3_part_size`] parts (a single PUT below one part); the
    /// object appears only when the upload completes.
    /// ssh/local: a streaming write to `{key}.partial`, renamed to `key` once closed, so a file at
    /// `key` is always whole — a connection cut mid-write can leave only a `.partial` file, which
    /// [`TargetStorage::remove_partials`] sweeps later. On any error — from `body` or from the backend — the write is
    /// aborted (S3: the multipart upload is aborted; ssh/local: the partial file is removed) and the
    /// error returned. If this future is dropped half way the same cleanup runs in the background.
    pub async fn upload(&self, key: &str, body: ByteStream) -> Result<u64, StorageError> {
        self.upload_metered(key, body, None).await
    }

    /// [`Self::upload`], counting what the target accepted on `meter` (after each write returns:
    /// for S3, whole parts) and marking it done once the object is closed.
    #[tracing::instrument(skip(self, body, meter), fields(kind = self.kind.as_str()))]
    pub async fn upload_metered(
        &self,
        key: &str,
        body: ByteStream,
        meter: Option<Meter>,
    ) -> Result<u64, StorageError> {
        let writer = match self.kind {
            StorageKind::S3 => {
                // No `chunk`: every `write` is one part, cut by `write_all` to `s3_part_size`.
                self.op
                    .writer_with(key)
                    .concurrent(S3_PARTS_IN_FLIGHT)
                    .await
            }
            StorageKind::Ssh | StorageKind::Local => self.op.writer(&partial_key(key)).await,
        }
        .map_err(|e| self.backend_error("upload", key, e))?;
        let write_key = match self.kind {
            StorageKind::S3 => key.to_owned(),
            StorageKind::Ssh | StorageKind::Local => partial_key(key),
        };

        // Dropping `_cancel` (this future dropped) is what tells the task to stop.
        let (_cancel, cancelled) = oneshot::channel::<()>();
        let task = UPLOADS.spawn(
            write_all(
                self.clone(),
                write_key.clone(),
                writer,
                body,
                cancelled,
                meter,
            )
            .instrument(tracing::Span::current()),
        );
        let sent = match task.await {
            Ok(Outcome::Closed { sent }) => sent,
            Ok(Outcome::Failed(e)) => return Err(e),
            Ok(Outcome::Cancelled) => return Err(self.task_error(key, "was cancelled")),
            Err(join) => return Err(self.task_error(key, &format!("task failed: {join}"))),
        };
        tracing::debug!(sent, "upload closed");
        if write_key != key {
            if let Err(e) = self.op.rename(&write_key, key).await {
                self.remove_quietly(&write_key).await;
                return Err(self.backend_error("rename the uploaded file", key, e));
            }
        }

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

    /// Removes the `.partial` files below `prefix` (uploads to ssh/local targets that were cut off
    /// before their close, whose removal could not reach the target then). Call it only while
    /// no upload below `prefix` runs (the volume lock); returns how many were removed.
    pub async fn remove_partials(&self, prefix: &str) -> Result<usize, StorageError> {
        if self.kind == StorageKind::S3 {
            return Ok(0);
        }
        let mut removed = 0;
        for key in self.list(prefix).await? {
            if key.ends_with(PARTIAL_SUFFIX) {
                self.delete(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes `key`, logging a failure: used on paths that already return another error.
    async fn remove_quietly(&self, key: &str) {
        if let Err(e) = self.delete(key).await {
            tracing::warn!(key, error = %e, "could not remove a failed upload");
        }
    }
}

/// Feeds `body` to `writer` and closes it. A write or close is never interrupted; between writes,
/// and once the close returns, the end of `cancelled` (the caller is gone: a stalled run dropped
/// it) stops the upload and removes what it wrote — even an object the close completed, since
/// nobody will record it.
async fn write_all(
    storage: TargetStorage,
    key: String,
    mut writer: Writer,
    mut body: ByteStream,
    mut cancelled: oneshot::Receiver<()>,
    meter: Option<Meter>,
) -> Outcome {
    let mut sent: u64 = 0;
    let mut part = Part::new(storage.kind == StorageKind::S3);
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
        let Some(ready) = part.push(chunk) else {
            continue;
        };
        let len = ready.len() as u64;
        if let Err(e) = writer.write(ready).await {
            let e = storage.backend_error("upload", &key, e);
            discard(&storage, &key, writer, false).await;
            return Outcome::Failed(e);
        }
        sent += len;
    }
    if let Some(rest) = part.rest() {
        let len = rest.len() as u64;
        if let Err(e) = writer.write(rest).await {
            let e = storage.backend_error("upload", &key, e);
            discard(&storage, &key, writer, false).await;
            return Outcome::Failed(e);
        }
        sent += len;
        if let Some(m) = &meter {
            m.add(len);
        }
    }
    if let Err(e) = writer.close().await {
        let e = storage.backend_error("upload", &key, e);
        // S3: the complete (or the single PUT) may have created the object anyway.
        discard(&storage, &key, writer, true).await;
        return Outcome::Failed(e);
    }
    if matches!(
        cancelled.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    ) {
        tracing::warn!(
            key,
            sent,
            "upload cancelled during its close; removing the object"
        );
        storage.remove_quietly(&key).await;
        return Outcome::Cancelled;
    }
    if let Some(m) = &meter {
        m.done();
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

/// Gathers chunks into S3 parts of [`s3_part_size`] (without copying them); for other targets
/// every chunk is written as it comes.
struct Part {
    s3: bool,
    index: usize,
    chunks: Vec<bytes::Bytes>,
    len: usize,
}

impl Part {
    fn new(s3: bool) -> Self {
        Self {
            s3,
            index: 0,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Adds a chunk; returns a buffer to write when a part is complete (every chunk, off S3).
    fn push(&mut self, chunk: bytes::Bytes) -> Option<opendal::Buffer> {
        if !self.s3 {
            return Some(opendal::Buffer::from(chunk));
        }
        self.len += chunk.len();
        self.chunks.push(chunk);
        if self.len < s3_part_size(self.index) {
            return None;
        }
        self.index += 1;
        self.len = 0;
        Some(opendal::Buffer::from(std::mem::take(&mut self.chunks)))
    }

    /// The last, possibly short, part.
    fn rest(&mut self) -> Option<opendal::Buffer> {
        (!self.chunks.is_empty()).then(|| opendal::Buffer::from(std::mem::take(&mut self.chunks)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn ten_thousand_parts_hold_more_than_five_tebibytes_without_a_part_over_five_gibibytes() {
        let sizes: Vec<u64> = (0..S3_MAX_PARTS).map(|i| s3_part_size(i) as u64).collect();
        assert!(
            sizes.iter().all(|s| *s >= 5 * MIB && *s <= 5 * 1024 * MIB),
            "{sizes:?}"
        );
        assert!(sizes.iter().sum::<u64>() >= 5 * 1024 * 1024 * MIB);
        assert_eq!(
            sizes[..1000].iter().sum::<u64>(),
            8000 * MIB,
            "8 MiB parts up to 8 GiB"
        );
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn parts_gather_chunks_to_the_part_size_and_keep_every_byte() {
        let mut part = Part::new(true);
        let chunk = bytes::Bytes::from(vec![7u8; 1024 * 1024]);
        let mut written = Vec::new();
        for _ in 0..20 {
            if let Some(b) = part.push(chunk.clone()) {
                written.push(b.len());
            }
        }
        if let Some(b) = part.rest() {
            written.push(b.len());
        }
        assert_eq!(
            written,
            vec![8 * 1024 * 1024, 8 * 1024 * 1024, 4 * 1024 * 1024]
        );
        let mut plain = Part::new(false);
        assert_eq!(
            plain.push(chunk.clone()).map(|b| b.len()),
            Some(chunk.len())
        );
        assert!(plain.rest().is_none());
    }
}

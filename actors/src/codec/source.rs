//! The input of a blocking stage: a stream's chunks, read ahead by a task on the runtime and taken
//! in batches on the blocking thread.
//!
//! Why read ahead: HTTP bodies (Docker's archive, an S3 download) arrive in chunks of about
//! 16–32 KiB, and hyper reads the next one only when asked. Polling the stream from the blocking
//! thread made every chunk a round trip between two threads — about 50 000 of them per GiB, which
//! cost more CPU than the hashing and, worse, left both cores idle while each waited for the other.
//! The task on the runtime drains the socket as fast as it fills, up to a byte budget, and the
//! blocking thread picks up whatever has arrived in one go.

use std::io::{self, BufRead, Read};
use std::sync::Arc;

use bytes::{Buf as _, Bytes};
use futures::StreamExt as _;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::stream::ByteStream;

/// Bytes read ahead of the stage, at most (a chunk larger than this still passes, alone).
const READ_AHEAD: usize = 2 * 1024 * 1024;
/// Chunks taken from the stream in one go when they are ready together.
const BATCH: usize = 32;

/// Chunks that arrived together, and the share of the read-ahead budget they hold.
struct Batch {
    chunks: Vec<io::Result<Bytes>>,
    budget: OwnedSemaphorePermit,
}

/// A stream's chunks for a blocking thread — as they are ([`ChunkSource::next_chunk`], no copy),
/// or through `Read` / `BufRead`.
pub(super) struct ChunkSource {
    batches: mpsc::Receiver<Batch>,
    /// What is left of the batch being consumed, with its budget (released with it).
    batch: std::vec::IntoIter<io::Result<Bytes>>,
    held: Option<OwnedSemaphorePermit>,
    current: Bytes,
}

impl ChunkSource {
    /// Starts reading `stream` ahead on the current runtime (the caller's, which drives the
    /// stream's I/O). Dropping the source stops the reading and drops the stream.
    pub(super) fn new(stream: ByteStream) -> Self {
        let (tx, batches) = mpsc::channel(64);
        let budget = Arc::new(Semaphore::new(READ_AHEAD / 1024));
        Handle::current().spawn(read_ahead(stream, tx, budget));
        Self {
            batches,
            batch: Vec::new().into_iter(),
            held: None,
            current: Bytes::new(),
        }
    }

    /// The next non-empty chunk, `None` at the end of the stream, or the stream's error.
    /// Blocks: call it from a blocking thread only.
    pub(super) fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        loop {
            match self.batch.next() {
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => return Ok(Some(chunk)),
                Some(Err(e)) => return Err(e),
                None => {
                    // The batch is handed on: its budget goes back to the reading task.
                    self.held = None;
                    match self.batches.blocking_recv() {
                        Some(Batch { chunks, budget }) => {
                            self.batch = chunks.into_iter();
                            self.held = Some(budget);
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }
}

/// Forwards `stream` to `tx` in batches, within `budget` (in KiB); ends at the stream's end or
/// error, or when the receiver is gone.
async fn read_ahead(stream: ByteStream, tx: mpsc::Sender<Batch>, budget: Arc<Semaphore>) {
    let mut batches = stream.ready_chunks(BATCH);
    let most = u32::try_from(READ_AHEAD / 1024).unwrap_or(u32::MAX);
    while let Some(chunks) = batches.next().await {
        let bytes: usize = chunks
            .iter()
            .map(|c| c.as_ref().map_or(0, Bytes::len))
            .sum();
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(most)
            .clamp(1, most);
        let Ok(permit) = Arc::clone(&budget).acquire_many_owned(kib).await else {
            return;
        };
        let failed = chunks.iter().any(Result::is_err);
        let sent = tx
            .send(Batch {
                chunks,
                budget: permit,
            })
            .await;
        if sent.is_err() || failed {
            return;
        }
    }
}

impl BufRead for ChunkSource {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.current.is_empty() {
            if let Some(chunk) = self.next_chunk()? {
                self.current = chunk;
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n.min(self.current.len()));
    }
}

impl Read for ChunkSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

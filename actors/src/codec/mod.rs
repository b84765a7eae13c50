//! The CPU stages of a backup and a restore: compression with hashing on the way out, verification
//! and decompression on the way back. Each runs on blocking threads, joined to the async stages by
//! bounded channels, so memory stays flat and the actors' threads stay free.
//!
//! Throughput (see BENCHMARKS.md): gzip is compressed in parallel into independent members
//! ([`gzip_parallel`], libdeflate), zstd with the library's own worker threads; a stage's input is
//! read ahead in batches by a task on the runtime and reaches it without copying ([`source`]), its
//! output leaves in 1 MiB chunks; a restore hashes the download on a thread of its own while
//! another one decompresses and checks the tar. A Postgres restore fingerprints the archive block by
//! block before it replays it, and replays only blocks identical to those ([`blocks`]).

mod blocks;
mod gzip_parallel;
mod sealed;
mod source;

use std::any::Any;
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::encryption::{Keyring, Recipients};
use crate::model::Compression;
use crate::stream::ByteStream;
use crate::tar_guard::HeldSymlink;
use source::ChunkSource;

pub use blocks::{block_size, fingerprint, same_blocks, Fingerprint};
pub use gzip_parallel::DEFAULT_LEVEL as DEFAULT_GZIP_LEVEL;

/// The zstd level used when a job sets none (the `zstd` command's default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Size of the chunks handed between stages (a gzip member is about this size or less).
pub const CHUNK: usize = 1024 * 1024;
/// Size of the chunks a [`blocking_source`] hands on: its consumer reads up to 2 MiB ahead, and
/// smaller chunks keep what waits between the two close to that (measured: 1 MiB chunks raised a
/// host-folder backup's peak RSS by several MiB).
const SOURCE_CHUNK: usize = 256 * 1024;
/// Chunks in flight between two stages. The S3 upload sends one 8 MiB part at a time and takes no
/// input while it does; 4 MiB of room lets compression run on for about as long as a part takes
/// to reach a nearby S3 server. (opendal itself holds up to two parts, 16 MiB, meanwhile; that
/// and zstd's buffers are most of a backup's memory.)
const DEPTH: usize = 4;
/// Input of one zstd job (one worker's unit of work). zstd's own choice at level 3 is 8 MiB,
/// which holds about 70 MiB in buffers with two workers; 1 MiB jobs hold about 10 MiB and make
/// the archive about 3 % larger (measured on the benchmark's volume).
const ZSTD_JOB: u32 = 1024 * 1024;

/// Size and SHA-256 of a byte sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub sha256_hex: String,
}

/// The output of a blocking stage: hands out chunks on a bounded channel (blocking while the
/// consumer lags), hashing what it hands out if asked to. Written-to data is gathered into
/// [`CHUNK`]-sized chunks.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// Size of the chunks handed on.
    chunk: usize,
    buf: Vec<u8>,
    hasher: Option<Sha256>,
    size: u64,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>, hash: bool) -> Self {
        Self {
            tx,
            chunk: CHUNK,
            buf: Vec::new(),
            hasher: hash.then(Sha256::new),
            size: 0,
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.send_chunk(chunk)
    }

    fn send_chunk(&mut self, chunk: Bytes) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.size += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the next stage stopped"))
    }

    /// Sends what is buffered; the size and hash (empty unless hashing) of everything sent.
    fn finish(&mut self) -> io::Result<Digest> {
        self.send_buffer()?;
        let sha = self.hasher.take().map(|h| hex::encode(h.finalize()));
        Ok(Digest {
            size: self.size,
            sha256_hex: sha.unwrap_or_default(),
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.chunk);
        }
        let room = self.chunk - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == self.chunk {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `work` on a blocking thread, feeding it `input` and collecting its output as a stream;
/// an error from `work` — or a panic — ends the stream with an error, never with a clean end.
fn blocking_stage<T, F>(
    input: ByteStream,
    hash: bool,
    work: F,
) -> (ByteStream, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce(&mut ChunkSource, &mut ChannelWriter) -> io::Result<T> + Send + 'static,
{
    let mut source = ChunkSource::new(input);
    spawn_writing(DEPTH, CHUNK, hash, move |writer| work(&mut source, writer))
}

/// Runs `work` on a blocking thread and streams what it writes, in [`SOURCE_CHUNK`]-sized chunks,
/// one in flight: the consuming stage reads ahead on its own (see [`source`]). An error from `work`
/// (or a panic) ends the stream with an error; if the stream is dropped, `work`'s next write fails
/// and it stops. The receiver yields `work`'s value once everything it wrote was handed on.
pub fn blocking_source<T, F>(work: F) -> (ByteStream, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> io::Result<T> + Send + 'static,
{
    spawn_writing(1, SOURCE_CHUNK, false, move |writer| {
        let value = work(&mut *writer)?;
        writer.finish()?;
        Ok(value)
    })
}

/// The thread behind both: `work` writes into a [`ChannelWriter`] of `depth` chunks of `chunk`
/// bytes; its value goes to the receiver, its error (or panic) to the end of the stream.
fn spawn_writing<T, F>(
    depth: usize,
    chunk: usize,
    hash: bool,
    work: F,
) -> (ByteStream, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce(&mut ChannelWriter) -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(depth);
    let (done_tx, done_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx.clone(), hash);
        writer.chunk = chunk;
        let outcome = catch_unwind(AssertUnwindSafe(|| work(&mut writer)))
            .unwrap_or_else(|panic| Err(crashed(panic.as_ref())));
        match outcome {
            Ok(value) => {
                let _ = done_tx.send(value);
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    (Box::pin(ReceiverStream::new(rx)), done_rx)
}

fn crashed(panic: &(dyn Any + Send)) -> io::Error {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned());
    io::Error::other(format!("a compression stage crashed: {why}"))
}

/// Compresses `input`; the receiver yields the size and SHA-256 of the compressed output once the
/// stream has ended successfully. gzip: independent members compressed on every core, readable
/// by any gzip; zstd: one frame compressed by the library's worker threads.
pub fn compress(
    input: ByteStream,
    compression: Compression,
    level: Option<i32>,
) -> (ByteStream, oneshot::Receiver<Digest>) {
    pack(input, compression, level, None)
}

/// Compresses `input` and, with `recipients`, encrypts the compressed stream to them on the same
/// thread (age's STREAM format, 64 KiB chunks: no stage, no buffer more than the plain
/// pipeline's); the receiver yields the size and SHA-256 of what comes out (the object to store).
pub fn pack(
    input: ByteStream,
    compression: Compression,
    level: Option<i32>,
    recipients: Option<Arc<Recipients>>,
) -> (ByteStream, oneshot::Receiver<Digest>) {
    let workers = gzip_parallel::default_workers();
    blocking_stage(input, true, move |source, writer| {
        match recipients {
            None => compress_into(source, &mut *writer, compression, level, workers)?,
            Some(recipients) => {
                let encryptor = recipients
                    .encryptor()
                    .map_err(|e| io::Error::other(format!("age encryption cannot start: {e}")))?;
                let mut sealed = encryptor.wrap_output(&mut *writer)?;
                compress_into(source, &mut sealed, compression, level, workers)?;
                sealed.finish()?;
            }
        }
        writer.finish()
    })
}

/// Compresses everything `source` gives into `out`: gzip in independent members on `workers`
/// threads, zstd as one frame with the library's worker threads.
fn compress_into<W: Write>(
    source: &mut ChunkSource,
    out: &mut W,
    compression: Compression,
    level: Option<i32>,
    workers: usize,
) -> io::Result<()> {
    match compression {
        Compression::Gzip => gzip_parallel::compress(
            || source.next_chunk(),
            |member| out.write_all(member),
            level.unwrap_or(DEFAULT_GZIP_LEVEL),
            workers,
        ),
        Compression::Zstd => {
            let level = level.unwrap_or(DEFAULT_ZSTD_LEVEL).clamp(1, 19);
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            enc.multithread(u32::try_from(workers).unwrap_or(2))?;
            enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB))?;
            while let Some(chunk) = source.next_chunk()? {
                enc.write_all(&chunk)?;
            }
            enc.finish().map(drop)
        }
    }
}

/// How a stored object is to be read: its compression and, for an encrypted one (`….age`), the
/// identities to decrypt it with.
#[derive(Debug, Clone)]
pub struct Format {
    pub compression: Compression,
    pub keyring: Option<Arc<Keyring>>,
}

impl From<Compression> for Format {
    /// A plain (unencrypted) object.
    fn from(compression: Compression) -> Self {
        Self {
            compression,
            keyring: None,
        }
    }
}

/// What an archive holds once decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A tar of a volume's files: checked entry by entry before it is let through.
    Tar,
    /// A plain SQL dump.
    Sql,
    /// Anything, let through as it is once decompressed (an archive of a chain, filtered and
    /// checked by [`crate::chain::tree`] and [`guard`]).
    Raw,
}

/// Verifies and decompresses a downloaded archive. The SHA-256 and size of the downloaded bytes are
/// checked against `expected` when the input ends, and a mismatch ends the output with an error, so
/// a consumer that only commits on a clean end never commits a damaged archive. The receiver
/// yields only when everything was read, verified and handed on: a consumer that stops reading
/// early (having seen the end of the tar) must still wait for it. It yields the symlinks that the
/// tar check held back (see [`crate::tar_guard`]), for the consumer to create.
pub fn unpack(
    input: ByteStream,
    format: Format,
    payload: Payload,
    expected: Digest,
) -> (ByteStream, oneshot::Receiver<Vec<HeldSymlink>>) {
    // Hashing (and decrypting) on a thread of its own: the decompressing thread is the
    // restore's bottleneck.
    let verified = verify(input, expected, format.keyring);
    blocking_stage(verified, false, move |source, writer| {
        let mut decoded: Box<dyn Read + '_> = match format.compression {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut *source)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(&mut *source)?),
        };
        let held = match payload {
            Payload::Tar => crate::tar_guard::check_and_forward(&mut decoded, &mut *writer)?,
            Payload::Sql | Payload::Raw => pump(&mut decoded, writer).map(|()| Vec::new())?,
        };
        // Read to the very end so that the checksum is always checked.
        io::copy(&mut decoded, &mut io::sink())?;
        drop(decoded);
        while source.next_chunk()?.is_some() {}
        writer.finish()?;
        Ok(held)
    })
}

/// Checks an uncompressed tar stream with [`crate::tar_guard`], as [`unpack`] does with
/// [`Payload::Tar`]; the receiver yields the symlinks held back once everything passed.
pub fn guard(input: ByteStream) -> (ByteStream, oneshot::Receiver<Vec<HeldSymlink>>) {
    blocking_stage(input, false, move |source, writer| {
        let held = crate::tar_guard::check_and_forward(&mut *source, &mut *writer)?;
        while source.next_chunk()?.is_some() {}
        writer.finish()?;
        Ok(held)
    })
}

/// A stream as a blocking reader, read ahead on the current runtime: for a blocking thread that
/// reads several streams in turn.
pub fn blocking_reader(input: ByteStream) -> impl io::BufRead + Send {
    ChunkSource::new(input)
}

/// Passes `input` on unchanged while hashing it on a blocking thread (decrypted with `keyring`
/// when it is given); at the end of the input, a size or SHA-256 other than `expected` ends the
/// output with an error instead of a clean end.
fn verify(input: ByteStream, expected: Digest, keyring: Option<Arc<Keyring>>) -> ByteStream {
    let hash = keyring.is_none();
    let (verified, _) = blocking_stage(input, hash, move |source, writer| {
        if let Some(keyring) = keyring {
            sealed::verify_and_decrypt(&mut *source, writer, &expected, &keyring)?;
            writer.finish()?;
            return Ok(());
        }
        // Gathered into CHUNK-sized chunks: fewer, larger hand-overs to the decompressing thread.
        while let Some(chunk) = source.next_chunk()? {
            writer.write_all(&chunk)?;
        }
        let actual = writer.finish()?;
        if actual != expected {
            return Err(mismatch(&actual, &expected));
        }
        Ok(())
    });
    verified
}

/// The error of an archive whose bytes are not those its backup recorded.
fn mismatch(actual: &Digest, expected: &Digest) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "checksum mismatch: the archive has {} bytes with sha256:{}, the backup recorded {} bytes with sha256:{}",
            actual.size, actual.sha256_hex, expected.size, expected.sha256_hex
        ),
    )
}

/// Copies `from` to `to` in large reads.
fn pump(from: &mut dyn Read, to: &mut ChannelWriter) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sets its flag when dropped: tells a blocking task that nobody waits for it any more.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Hashes a whole stream without keeping it: for verifying an archive before any change is made.
/// Dropping the future stops the hashing (and the reading) at the next chunk.
pub async fn digest(input: ByteStream) -> io::Result<Digest> {
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let mut source = ChunkSource::new(input);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = source.next_chunk()? {
            if cancelled.load(Ordering::Relaxed) {
                return Err(io::Error::other("hashing cancelled"));
            }
            hasher.update(&chunk);
            size += chunk.len() as u64;
        }
        Ok(Digest {
            size,
            sha256_hex: hex::encode(hasher.finalize()),
        })
    });
    hashing
        .await
        .map_err(|_| io::Error::other("the hashing stage stopped"))?
}

#[cfg(test)]
pub(crate) mod tests;

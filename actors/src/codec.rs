//! The CPU stages of a backup and a restore: compression with hashing on the way out, verification
//! and decompression on the way back. Each runs on a blocking thread, joined to the async stages by
//! bounded channels, so memory stays flat and the actors' threads stay free.

use std::io::{self, Read, Write};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::model::Compression;
use crate::stream::ByteStream;

/// Size of the chunks handed between stages.
pub const CHUNK: usize = 256 * 1024;
/// Chunks in flight between two stages.
const DEPTH: usize = 8;

/// Size and SHA-256 of a byte sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub sha256_hex: String,
}

/// A `Write` that hands out chunks on a bounded channel (blocking when the consumer lags) and can
/// hash what it hands out.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    hasher: Option<Sha256>,
    size: u64,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>, hash: bool) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            hasher: hash.then(Sha256::new),
            size: 0,
        }
    }

    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        if let Some(h) = self.hasher.as_mut() {
            h.update(&chunk);
        }
        self.size += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the next stage stopped"))
    }

    fn finish(mut self) -> io::Result<Digest> {
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
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `work` on a blocking thread, feeding it `input` as a `Read` and collecting its output as a
/// stream; an error from `work` ends the stream with that error.
fn blocking_stage<T, F>(
    input: ByteStream,
    hash: bool,
    work: F,
) -> (ByteStream, oneshot::Receiver<T>)
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read, &mut ChannelWriter) -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(DEPTH);
    let (done_tx, done_rx) = oneshot::channel();
    let mut reader = SyncIoBridge::new(StreamReader::new(input));
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx.clone(), hash);
        match work(&mut reader, &mut writer) {
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

/// Compresses `input`; the receiver yields the size and SHA-256 of the compressed output once the
/// stream has ended successfully.
pub fn compress(
    input: ByteStream,
    compression: Compression,
    level: Option<i32>,
) -> (ByteStream, oneshot::Receiver<Digest>) {
    blocking_stage(input, true, move |reader, writer| {
        match compression {
            Compression::Gzip => {
                let level = level.unwrap_or(6).clamp(0, 9) as u32;
                let mut enc =
                    flate2::write::GzEncoder::new(&mut *writer, flate2::Compression::new(level));
                io::copy(reader, &mut enc)?;
                enc.finish()?;
            }
            Compression::Zstd => {
                let level = level.unwrap_or(3).clamp(1, 19);
                let mut enc = zstd::stream::write::Encoder::new(&mut *writer, level)?;
                enc.multithread(2)?;
                io::copy(reader, &mut enc)?;
                enc.finish()?;
            }
        }
        take_digest(writer)
    })
}

fn take_digest(writer: &mut ChannelWriter) -> io::Result<Digest> {
    let placeholder = ChannelWriter::new(writer.tx.clone(), false);
    std::mem::replace(writer, placeholder).finish()
}

/// A `Read` that hashes what passes and, at end of input, fails unless it matches `expected`.
struct VerifyingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
    size: u64,
    expected: Option<Digest>,
}

impl Read for VerifyingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            self.size += n as u64;
        } else if let Some(expected) = self.expected.take() {
            let actual = hex::encode(self.hasher.clone().finalize());
            if expected.size != self.size || expected.sha256_hex != actual {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "checksum mismatch: the archive has {} bytes with sha256:{actual}, the backup recorded {} bytes with sha256:{}",
                        self.size, expected.size, expected.sha256_hex
                    ),
                ));
            }
        }
        Ok(n)
    }
}

/// What an archive holds once decompressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A tar of a volume's files: checked entry by entry before it is let through.
    Tar,
    /// A plain SQL dump.
    Sql,
}

/// Verifies and decompresses a downloaded archive. The SHA-256 and size of the downloaded bytes are
/// checked against `expected` when the input ends, and a mismatch ends the output with an error, so
/// a consumer that only commits on a clean end never commits a damaged archive. The receiver
/// yields `()` only when everything was read, verified and handed on: a consumer that stops reading
/// early (having seen the end of the tar) must still wait for it.
pub fn unpack(
    input: ByteStream,
    compression: Compression,
    payload: Payload,
    expected: Digest,
) -> (ByteStream, oneshot::Receiver<()>) {
    blocking_stage(input, false, move |reader, writer| {
        let mut verifying = VerifyingReader {
            inner: reader,
            hasher: Sha256::new(),
            size: 0,
            expected: Some(expected),
        };
        let mut decoded: Box<dyn Read + '_> = match compression {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut verifying)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut verifying)?),
        };
        match payload {
            Payload::Tar => crate::tar_guard::check_and_forward(&mut decoded, &mut *writer)?,
            Payload::Sql => {
                io::copy(&mut decoded, &mut *writer)?;
            }
        }
        // Read to the very end so that the checksum is always checked.
        io::copy(&mut decoded, &mut io::sink())?;
        drop(decoded);
        io::copy(&mut verifying, &mut io::sink())?;
        take_digest(writer).map(drop)
    })
}

/// Hashes a whole stream without keeping it: for verifying an archive before any change is made.
pub async fn digest(input: ByteStream) -> io::Result<Digest> {
    use futures::StreamExt as _;
    let (mut stream, done) = blocking_stage(input, true, |reader, writer| {
        io::copy(reader, &mut *writer)?;
        take_digest(writer)
    });
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    done.await
        .map_err(|_| io::Error::other("the hashing stage stopped"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    fn stream_of(data: Vec<u8>) -> ByteStream {
        let chunks: Vec<io::Result<Bytes>> = data
            .chunks(10_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    async fn collect(mut s: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn sample() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[tokio::test]
    async fn gzip_and_zstd_round_trip_with_matching_digests() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            let data = sample();
            let (out, digest) = compress(stream_of(data.clone()), compression, None);
            let packed = collect(out).await.expect("compresses");
            let digest = digest.await.expect("digest");
            assert_eq!(digest.size, packed.len() as u64);
            assert_eq!(digest.sha256_hex, hex::encode(Sha256::digest(&packed)));
            let back = collect(unpack(stream_of(packed), compression, Payload::Sql, digest).0)
                .await
                .expect("unpacks");
            assert_eq!(back, data);
        }
    }

    #[tokio::test]
    async fn a_changed_byte_fails_the_unpack() {
        let (out, digest) = compress(stream_of(sample()), Compression::Gzip, Some(1));
        let mut packed = collect(out).await.expect("compresses");
        let digest = digest.await.expect("digest");
        let mid = packed.len() / 2;
        packed[mid] ^= 0xff;
        let err = collect(unpack(stream_of(packed), Compression::Gzip, Payload::Sql, digest).0)
            .await
            .expect_err("damaged");
        assert!(!err.to_string().is_empty());
    }

    #[tokio::test]
    async fn a_wrong_checksum_fails_even_when_the_data_decodes() {
        let (out, digest) = compress(stream_of(sample()), Compression::Gzip, None);
        let packed = collect(out).await.expect("compresses");
        let mut wrong = digest.await.expect("digest");
        wrong.sha256_hex = "0".repeat(64);
        let err = collect(unpack(stream_of(packed), Compression::Gzip, Payload::Sql, wrong).0)
            .await
            .expect_err("mismatch");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[tokio::test]
    async fn digest_hashes_a_stream() {
        let data = sample();
        let d = digest(stream_of(data.clone())).await.expect("digest");
        assert_eq!(d.size, data.len() as u64);
        assert_eq!(d.sha256_hex, hex::encode(Sha256::digest(&data)));
    }
}

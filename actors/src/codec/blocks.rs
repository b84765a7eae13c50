//! Block fingerprints: the SHA-256 of an archive and of each of its blocks, taken while it is
//! downloaded once ([`fingerprint`]), so that a second download of the same object can be let
//! through block by block, each only once it is identical to the block verified the first time
//! ([`same_blocks`]). Only the hashes are kept — 32 bytes a block, never the data — and a block is
//! held in memory only while it is checked, so a verified replay needs no staging copy.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::source::ChunkSource;
use super::{blocking_stage, CancelOnDrop, Digest, CHUNK};
use crate::stream::ByteStream;

/// At most this many block hashes are kept (2 MiB of them); larger archives get larger blocks.
const MAX_BLOCKS: u64 = 65_536;

/// The size of the blocks of an archive of `size` bytes: [`CHUNK`] (1 MiB), or the multiple of it
/// that keeps the number of blocks at most [`MAX_BLOCKS`] (16 MiB blocks for a 1 TiB archive).
pub fn block_size(size: u64) -> usize {
    let chunk = CHUNK as u64;
    let chunks = size.div_ceil(MAX_BLOCKS).div_ceil(chunk).max(1);
    usize::try_from(chunks.saturating_mul(chunk)).unwrap_or(usize::MAX)
}

/// What one download of an archive was: its size and SHA-256, and the SHA-256 of each block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub digest: Digest,
    block: usize,
    hashes: Vec<[u8; 32]>,
}

/// Hashes a whole stream, and each of its `block`-byte blocks, without keeping it. Dropping the
/// future stops the hashing (and the reading) at the next chunk.
pub async fn fingerprint(input: ByteStream, block: usize) -> io::Result<Fingerprint> {
    let block = block.max(1);
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let mut source = ChunkSource::new(input);
    let hashing = tokio::task::spawn_blocking(move || {
        let mut whole = Sha256::new();
        let mut part = Sha256::new();
        let mut in_part = 0usize;
        let mut hashes = Vec::new();
        let mut size = 0u64;
        while let Some(chunk) = source.next_chunk()? {
            if cancelled.load(Ordering::Relaxed) {
                return Err(io::Error::other("hashing cancelled"));
            }
            whole.update(&chunk);
            size += chunk.len() as u64;
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = (block - in_part).min(rest.len());
                part.update(&rest[..n]);
                in_part += n;
                rest = &rest[n..];
                if in_part == block {
                    hashes.push(part.finalize_reset().into());
                    in_part = 0;
                }
            }
        }
        if in_part > 0 {
            hashes.push(part.finalize().into());
        }
        Ok(Fingerprint {
            digest: Digest {
                size,
                sha256_hex: hex::encode(whole.finalize()),
            },
            block,
            hashes,
        })
    });
    hashing
        .await
        .map_err(|_| io::Error::other("the hashing stage stopped"))?
}

/// Passes `input` on block by block, each block only once it is complete and its SHA-256 is the
/// one `verified` holds for it. The first block that differs, a missing block or a block too many
/// ends the output with an error instead, before any of that block is handed on: what comes out
/// is always a prefix of the bytes `verified` was taken of.
pub fn same_blocks(input: ByteStream, verified: Fingerprint) -> ByteStream {
    let (checked, _) = blocking_stage(input, false, move |source, writer| {
        let Fingerprint {
            digest,
            block,
            hashes,
        } = verified;
        let differs = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the archive changed between verification and replay: {why}"),
            )
        };
        let mut check = |index: usize, data: Vec<u8>| -> io::Result<()> {
            let Some(expected) = hashes.get(index) else {
                return Err(differs(format!(
                    "it is longer than the {} bytes verified",
                    digest.size
                )));
            };
            if Sha256::digest(&data)[..] != expected[..] {
                return Err(differs(format!(
                    "block {} (bytes from {}) is not the one verified",
                    index + 1,
                    index as u64 * block as u64
                )));
            }
            writer.send_chunk(Bytes::from(data))
        };
        let mut index = 0usize;
        let mut data = Vec::with_capacity(block);
        while let Some(chunk) = source.next_chunk()? {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = (block - data.len()).min(rest.len());
                data.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if data.len() == block {
                    check(
                        index,
                        std::mem::replace(&mut data, Vec::with_capacity(block)),
                    )?;
                    index += 1;
                }
            }
        }
        if !data.is_empty() {
            check(index, data)?;
            index += 1;
        }
        if index != hashes.len() {
            return Err(differs(format!(
                "it ended after {index} of its {} blocks",
                hashes.len()
            )));
        }
        Ok(())
    });
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{stream, StreamExt as _};

    const MIB: usize = 1024 * 1024;

    /// `data` as a stream of `piece`-byte chunks.
    fn chunks(data: &[u8], piece: usize) -> ByteStream {
        let items: Vec<io::Result<Bytes>> = data
            .chunks(piece)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(items).boxed()
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// What came out before the end, and the end's error, if any.
    async fn replay(s: ByteStream) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[test]
    fn blocks_are_one_mib_until_there_would_be_too_many() {
        assert_eq!(block_size(0), MIB);
        assert_eq!(block_size(5), MIB);
        assert_eq!(block_size(64 * 1024 * MIB as u64), MIB);
        assert_eq!(block_size(64 * 1024 * MIB as u64 + 1), 2 * MIB);
        assert_eq!(block_size(1 << 40), 16 * MIB);
        for size in [1u64, 1 << 20, 1 << 36, (1 << 36) + 1, 1 << 40, 1 << 45] {
            let block = block_size(size) as u64;
            assert_eq!(block % MIB as u64, 0);
            assert!(size.div_ceil(block) <= MAX_BLOCKS, "{size}");
        }
    }

    #[tokio::test]
    async fn the_same_bytes_pass_in_any_chunking() -> io::Result<()> {
        let bytes = data(3 * MIB + 12_345, 1);
        let fp = fingerprint(chunks(&bytes, 100_000), MIB).await?;
        assert_eq!(fp.digest.size, bytes.len() as u64);
        assert_eq!(fp.hashes.len(), 4);
        let (out, err) = replay(same_blocks(chunks(&bytes, 777_777), fp)).await;
        assert_eq!(err, None);
        assert!(out == bytes, "the replay differs");
        Ok(())
    }

    #[tokio::test]
    async fn nothing_of_a_changed_block_is_handed_on() -> io::Result<()> {
        let bytes = data(3 * MIB, 2);
        let fp = fingerprint(chunks(&bytes, 65_536), MIB).await?;
        let mut changed = bytes.clone();
        changed[MIB + MIB / 2] ^= 1;
        let (out, err) = replay(same_blocks(chunks(&changed, 65_536), fp)).await;
        assert!(out == bytes[..MIB], "only the first block may pass");
        let err = err.unwrap_or_default();
        assert!(
            err.contains("changed between verification and replay")
                && err.contains("block 2 (bytes from 1048576)"),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn another_archive_gets_nothing_through() -> io::Result<()> {
        let fp = fingerprint(chunks(&data(2 * MIB, 3), MIB), MIB).await?;
        let (out, err) = replay(same_blocks(chunks(&data(2 * MIB, 4), MIB), fp)).await;
        assert!(out.is_empty());
        assert!(err.unwrap_or_default().contains("block 1 "));
        Ok(())
    }

    #[tokio::test]
    async fn a_shorter_or_longer_replay_fails_at_its_end() -> io::Result<()> {
        let bytes = data(2 * MIB + 10, 5);
        let fp = fingerprint(chunks(&bytes, MIB), MIB).await?;
        let (out, err) = replay(same_blocks(chunks(&bytes[..2 * MIB], MIB), fp.clone())).await;
        assert!(out == bytes[..2 * MIB]);
        assert!(err.unwrap_or_default().contains("ended after 2 of its 3"));

        let mut longer = bytes.clone();
        longer.extend_from_slice(&data(MIB, 6));
        let (_, err) = replay(same_blocks(chunks(&longer, MIB), fp)).await;
        assert!(err.is_some(), "a longer replay must fail");
        Ok(())
    }

    #[tokio::test]
    async fn an_empty_archive_replays_as_empty() -> io::Result<()> {
        let fp = fingerprint(chunks(&[], 1), MIB).await?;
        assert_eq!(fp.digest.size, 0);
        let (out, err) = replay(same_blocks(stream::empty().boxed(), fp)).await;
        assert!(out.is_empty() && err.is_none());
        Ok(())
    }
}

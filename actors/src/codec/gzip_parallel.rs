//! Parallel gzip, as pigz writes it: the input is cut into blocks of [`BLOCK`] bytes, each block is
//! compressed on a worker thread into an independent gzip member (libdeflate, whole-buffer
//! deflate), and the members are written out in input order. A concatenation of gzip members is
//! one valid `.gz` stream (RFC 1952, 2.2): `gzip -d`, `tar -xzf` and flate2's `MultiGzDecoder`
//! read it whole. Each member costs 18 bytes of header and trailer and starts without the previous
//! block's 32 KiB of history, which at 1 MiB blocks adds well under 1 % to the archive.
//!
//! Memory is bounded and allocated once: at most `2 × workers` blocks are in flight, each with its
//! input and its compressed output (about 2 MiB together), and both buffers are reused. (A fresh
//! output buffer per block let glibc's heaps grow to twice the live data.)

use std::collections::VecDeque;
use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use libdeflater::{CompressionLvl, Compressor};

/// The input size of one gzip member.
pub const BLOCK: usize = 1024 * 1024;

/// The gzip level used when a job sets none: libdeflate's level 6 compresses as well as
/// `gzip -6` (the seed's `tar czf`) while running about twice as fast as zlib at the same level.
pub const DEFAULT_LEVEL: i32 = 6;

/// One block handed to a worker, a buffer for its member, and the way back.
struct Job {
    input: Vec<u8>,
    output: Vec<u8>,
    done: SyncSender<io::Result<Member>>,
}

/// A compressed block, and its input buffer for reuse.
struct Member {
    gz: Vec<u8>,
    input: Vec<u8>,
}

/// The number of compression threads: one per core, at most 8.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8)
}

/// Compresses everything `next_chunk` yields (until it returns `None`) into gzip members on
/// `workers` threads, handing each finished member to `emit` in input order. `level` is clamped
/// to libdeflate's 0 (stored) ..= 12 (slowest, smallest); 1–9 mean what they mean to gzip. An
/// empty input still yields one (empty) member, so the output is always a valid `.gz` file.
pub fn compress<I, E>(next_chunk: I, emit: E, level: i32, workers: usize) -> io::Result<()>
where
    I: FnMut() -> io::Result<Option<Bytes>>,
    E: FnMut(&[u8]) -> io::Result<()>,
{
    let level = self::level(level);
    let workers = workers.max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(workers);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let jobs = &job_rx;
            scope.spawn(move || worker(jobs, level));
        }
        // `Members` owns the only job sender: when it is dropped (at the end or on an error) the
        // workers' queue closes and they return, and the scope joins them.
        let mut members = Members {
            jobs: job_tx,
            pending: VecDeque::new(),
            spare_inputs: Vec::new(),
            spare_outputs: Vec::new(),
            in_flight: workers * 2,
            emit,
        };
        members.run(next_chunk)
    })
}

/// libdeflate's level for `n`, clamped to its range 0 (stored) ..= 12.
fn level(n: i32) -> CompressionLvl {
    // In range after the clamp; `fastest()` only guards a libdeflate with a narrower range.
    CompressionLvl::new(n.clamp(0, 12)).unwrap_or_else(|_| CompressionLvl::fastest())
}

/// The producing side: cuts the input into blocks, keeps the workers busy, emits in order.
struct Members<E> {
    jobs: SyncSender<Job>,
    pending: VecDeque<Receiver<io::Result<Member>>>,
    spare_inputs: Vec<Vec<u8>>,
    spare_outputs: Vec<Vec<u8>>,
    in_flight: usize,
    emit: E,
}

impl<E> Members<E>
where
    E: FnMut(&[u8]) -> io::Result<()>,
{
    fn run<I>(&mut self, mut next_chunk: I) -> io::Result<()>
    where
        I: FnMut() -> io::Result<Option<Bytes>>,
    {
        let mut block = Vec::with_capacity(BLOCK);
        let mut submitted = 0u64;
        while let Some(chunk) = next_chunk()? {
            let mut data = &chunk[..];
            while !data.is_empty() {
                let n = (BLOCK - block.len()).min(data.len());
                block.extend_from_slice(&data[..n]);
                data = &data[n..];
                if block.len() == BLOCK {
                    let next = self
                        .spare_inputs
                        .pop()
                        .unwrap_or_else(|| Vec::with_capacity(BLOCK));
                    self.submit(std::mem::replace(&mut block, next))?;
                    submitted += 1;
                }
            }
            self.emit_ready()?;
        }
        if !block.is_empty() || submitted == 0 {
            self.submit(block)?;
        }
        while !self.pending.is_empty() {
            self.emit_front()?;
        }
        Ok(())
    }

    fn submit(&mut self, input: Vec<u8>) -> io::Result<()> {
        while self.pending.len() >= self.in_flight {
            self.emit_front()?;
        }
        let (done, member) = mpsc::sync_channel(1);
        let output = self.spare_outputs.pop().unwrap_or_default();
        self.jobs
            .send(Job {
                input,
                output,
                done,
            })
            .map_err(|_| stopped())?;
        self.pending.push_back(member);
        Ok(())
    }

    /// Waits for the oldest block and emits it.
    fn emit_front(&mut self) -> io::Result<()> {
        let Some(front) = self.pending.pop_front() else {
            return Ok(());
        };
        let member = front.recv().map_err(|_| stopped())??;
        self.emit_member(member)
    }

    /// Emits the blocks at the front that are already done, without waiting.
    fn emit_ready(&mut self) -> io::Result<()> {
        while let Some(front) = self.pending.front() {
            let member = match front.try_recv() {
                Ok(member) => member?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(stopped()),
            };
            self.pending.pop_front();
            self.emit_member(member)?;
        }
        Ok(())
    }

    fn emit_member(&mut self, member: Member) -> io::Result<()> {
        let Member { gz, mut input } = member;
        let emitted = (self.emit)(&gz);
        input.clear();
        self.spare_inputs.push(input);
        self.spare_outputs.push(gz);
        emitted
    }
}

fn stopped() -> io::Error {
    io::Error::other("a gzip compression thread stopped unexpectedly")
}

/// Compresses blocks until the job queue closes.
fn worker(jobs: &Mutex<Receiver<Job>>, level: CompressionLvl) {
    let mut compressor = Compressor::new(level);
    let mut probe = Probe::new();
    loop {
        // The lock is held only while waiting for the next job; a poisoned lock still holds a
        // usable receiver (nothing panics while holding it).
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job {
            input,
            output: mut gz,
            done,
        }) = job
        else {
            return;
        };
        let deflater = if probe.incompressible(&input) {
            &mut probe.stored
        } else {
            &mut compressor
        };
        // Reused: only a buffer's first use allocates.
        gz.resize(deflater.gzip_compress_bound(input.len()), 0);
        let result = match deflater.gzip_compress(&input, &mut gz) {
            Ok(n) => {
                gz.truncate(n);
                Ok(Member { gz, input })
            }
            Err(e) => Err(io::Error::other(format!("gzip compression failed: {e:?}"))),
        };
        // The producer may have stopped on an error of its own; then nobody waits for this.
        let _ = done.send(result);
    }
}

/// Spots blocks that deflate cannot shrink (already compressed files: images, archives, random
/// data), which are then stored as they are. Deflate would store them too, but only after a
/// full match search that costs as much as compressing text; a volume with a quarter of such
/// files spends a third of its CPU time there otherwise.
struct Probe {
    fast: Compressor,
    stored: Compressor,
    scratch: Vec<u8>,
}

/// The size of one sample.
const SAMPLE: usize = 4096;
/// Samples per block, spread evenly over it.
const SAMPLES: usize = 8;

impl Probe {
    fn new() -> Self {
        Self {
            fast: Compressor::new(level(1)),
            // `fastest()` is libdeflate's level 0: stored blocks, no search.
            stored: Compressor::new(CompressionLvl::fastest()),
            // Room for a sample shrunk by 2 %: a sample that does not fit did not shrink enough.
            scratch: vec![0u8; SAMPLE * 49 / 50],
        }
    }

    /// True when every sample of `block` shrinks by less than 2 % at level 1. Text fails the
    /// first sample and costs one 4 KiB trial.
    fn incompressible(&mut self, block: &[u8]) -> bool {
        if block.len() < SAMPLES * SAMPLE {
            return false;
        }
        let step = block.len() / SAMPLES;
        (0..SAMPLES).all(|i| {
            let sample = &block[i * step..i * step + SAMPLE];
            self.fast
                .deflate_compress(sample, &mut self.scratch)
                .is_err()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                // Half text-like (repetitive), half noise, in 64 KiB stretches.
                if (i / 65_536) % 2 == 0 {
                    b"backup volume restore "[i % 22]
                } else {
                    state as u8
                }
            })
            .collect()
    }

    fn gzip(data: &[u8], chunk: usize, level: i32, workers: usize) -> Vec<u8> {
        let mut chunks = data.chunks(chunk.max(1)).map(Bytes::copy_from_slice);
        let mut out = Vec::new();
        compress(
            || Ok(chunks.next()),
            |member| {
                out.extend_from_slice(member);
                Ok(())
            },
            level,
            workers,
        )
        .expect("compresses");
        out
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("a valid gzip stream");
        out
    }

    #[test]
    fn members_decode_to_the_input_in_order() {
        let data = sample(5 * BLOCK + 12_345);
        for (chunk, workers) in [(7_000, 1), (64 * 1024, 2), (3 * BLOCK, 4)] {
            let gz = gzip(&data, chunk, DEFAULT_LEVEL, workers);
            assert_eq!(gunzip(&gz), data, "chunk {chunk}, {workers} workers");
            assert!(gz.len() < data.len() * 3 / 4, "it compresses");
        }
    }

    #[test]
    fn every_block_is_its_own_member() {
        let data = sample(3 * BLOCK);
        let gz = gzip(&data, BLOCK, 1, 2);
        let headers = gz.windows(3).filter(|w| *w == [0x1f, 0x8b, 0x08]).count();
        assert!(headers >= 3, "{headers} gzip headers");
        assert_eq!(gunzip(&gz), data);
    }

    #[test]
    fn incompressible_blocks_are_stored_and_text_is_not() {
        let mut probe = Probe::new();
        let noise: Vec<u8> = sample(2 * BLOCK)
            .chunks(65_536)
            .skip(1)
            .step_by(2)
            .flatten()
            .copied()
            .collect();
        assert!(probe.incompressible(&noise[..BLOCK]));
        let text = b"<li>volume backup restore</li>\n".repeat(BLOCK / 30);
        assert!(!probe.incompressible(&text));
        // Text in the middle of noise still gets compressed.
        let mut mixed = noise[..BLOCK].to_vec();
        mixed[BLOCK / 2..BLOCK / 2 + 200_000].copy_from_slice(&text[..200_000]);
        assert!(!probe.incompressible(&mixed));
        // A stored member is a valid member, a little larger than its input.
        let gz = gzip(&noise, 65_536, DEFAULT_LEVEL, 2);
        assert_eq!(gunzip(&gz), noise);
        assert!(gz.len() > noise.len() && gz.len() < noise.len() + noise.len() / 100);
    }

    #[test]
    fn empty_input_is_one_empty_member() {
        let gz = gzip(&[], 1, DEFAULT_LEVEL, 2);
        assert!(!gz.is_empty());
        assert_eq!(gunzip(&gz), Vec::<u8>::new());
    }

    #[test]
    fn levels_outside_the_range_are_clamped() {
        let data = sample(BLOCK / 2);
        assert_eq!(gunzip(&gzip(&data, 4096, -3, 2)), data);
        assert_eq!(gunzip(&gzip(&data, 4096, 42, 2)), data);
    }

    #[test]
    fn an_input_error_stops_the_workers_and_is_returned() {
        let mut calls = 0;
        let err = compress(
            || {
                calls += 1;
                if calls < 5 {
                    Ok(Some(Bytes::from(vec![b'x'; BLOCK])))
                } else {
                    Err(io::Error::other("the volume went away"))
                }
            },
            |_| Ok(()),
            DEFAULT_LEVEL,
            2,
        )
        .expect_err("input failed");
        assert_eq!(err.to_string(), "the volume went away");
    }

    #[test]
    fn an_output_error_stops_the_workers_and_is_returned() {
        let mut chunks = std::iter::repeat_with(|| Bytes::from(vec![b'y'; BLOCK])).take(20);
        let err = compress(
            || Ok(chunks.next()),
            |_| Err(io::Error::new(io::ErrorKind::BrokenPipe, "upload stopped")),
            DEFAULT_LEVEL,
            2,
        )
        .expect_err("output failed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}

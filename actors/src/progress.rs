//! The progress watchdog of a backup or restore: a shared record of the bytes each stage moved
//! (source read, compression, upload; download, extraction, replay) and when, fed by meters
//! wrapped around the byte streams, and a deadline raced against the work. Work that moves no byte
//! for the deadline is dropped and fails with [`Stalled`], which names the stage that stopped.
//!
//! Which stage stopped: the stages are joined by bounded channels, so when one stops the others
//! stop soon after it — those upstream once their buffers are full, those downstream once they
//! have drained what reached them. The stalled stage is therefore the unfinished one whose last
//! progress is the oldest; when none moved at all, the first one (the source).
//!
//! The same record is what a person at the command line watches: each piece of work registers on
//! the engine's [`Board`] and says what it is doing ([`Progress::describe`]); the CLI's progress
//! bar reads the source stage's bytes off it ([`Board::current`]).
//!
//! The same record drives the heartbeats: a run refreshes its rows' heartbeat only while its
//! watched work is fresh (or while it does nothing that moves bytes, such as waiting for a run
//! slot), so a heartbeat says the run makes progress, not only that its process is alive.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::time::Instant;

use crate::stream::ByteStream;

/// Stage names, as the failure message shows them.
pub mod stage {
    pub const PG_DUMP: &str = "pg_dump";
    pub const VOLUME_READ: &str = "volume read";
    pub const COMPRESSION: &str = "compression";
    pub const UPLOAD: &str = "upload";
    pub const DOWNLOAD: &str = "download";
    pub const EXTRACTION: &str = "extraction";
    pub const REPLAY: &str = "replay";
}

/// Work that moved no byte for the deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stalled: no progress for {seconds} s in {stage}")]
pub struct Stalled {
    pub seconds: u64,
    pub stage: &'static str,
}

#[derive(Debug)]
struct Stage {
    name: &'static str,
    bytes: u64,
    last: Instant,
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Set while watched work runs; the stages of that work.
    watching: Option<Vec<Stage>>,
    /// The last time any stage moved (or watched work began).
    last: Option<Instant>,
    /// What the work does now (`backing up shop/uploads`), and the size of its source if known.
    label: Option<(String, Option<u64>)>,
    /// The bytes the source stage of the last watched work moved, kept once that work ended.
    ended: u64,
}

/// What a person watching the work sees of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub label: String,
    /// The source stage that runs now (the first watched: volume read, pg_dump, download).
    pub stage: Option<&'static str>,
    /// The bytes that stage moved so far.
    pub bytes: u64,
    /// The source's size, where it is known (a stored object's).
    pub total: Option<u64>,
}

/// One run's (or restore's) progress; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    state: Arc<Mutex<State>>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `work` with `stages` watched: if none of them moves a byte for `deadline`, `work` is
    /// dropped and [`Stalled`] returned. Meters of these stages ([`Progress::meter`]) count towards
    /// it; cleanup of what `work` started is its own drop's business (see the callers).
    pub async fn deadline<T>(
        &self,
        deadline: Duration,
        stages: &[&'static str],
        work: impl Future<Output = T>,
    ) -> Result<T, Stalled> {
        let _watch = self.watch(stages);
        tokio::select! {
            biased;
            done = work => Ok(done),
            stalled = self.stalled(deadline) => Err(stalled),
        }
    }

    fn watch(&self, stages: &[&'static str]) -> Watch<'_> {
        let now = Instant::now();
        let mut state = self.state();
        state.watching = Some(
            stages
                .iter()
                .map(|name| Stage {
                    name,
                    bytes: 0,
                    last: now,
                    done: false,
                })
                .collect(),
        );
        state.last = Some(now);
        Watch(self)
    }

    /// Says what the work does from now on, and how many bytes its source has if that is known.
    pub fn describe(&self, label: impl Into<String>, total: Option<u64>) {
        let mut state = self.state();
        state.label = Some((label.into(), total));
        state.ended = 0;
    }

    /// What the work does now and how far its source stage got; `None` before it said.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let state = self.state();
        let (label, total) = state.label.clone()?;
        let source = state.watching.as_ref().and_then(|s| s.first());
        Some(Snapshot {
            label,
            stage: source.map(|s| s.name),
            bytes: source.map_or(state.ended, |s| s.bytes),
            total,
        })
    }

    /// A meter of `stage`, for the work watched next or now.
    pub fn meter(&self, stage: &'static str) -> Meter {
        Meter {
            progress: self.clone(),
            stage,
        }
    }

    /// Whether the run makes progress: it watches no work now, or its work moved within `limit`.
    pub fn is_fresh(&self, limit: Duration) -> bool {
        let state = self.state();
        match (&state.watching, state.last) {
            (Some(_), Some(last)) => last.elapsed() < limit,
            _ => true,
        }
    }

    /// Resolves once the watched work moved nothing for `deadline`.
    async fn stalled(&self, deadline: Duration) -> Stalled {
        loop {
            let (idle, stage) = {
                let state = self.state();
                let idle = state.last.map_or(Duration::ZERO, |t| t.elapsed());
                (idle, state.watching.as_deref().map(stalled_stage))
            };
            if idle >= deadline {
                return Stalled {
                    seconds: deadline.as_secs(),
                    stage: stage.unwrap_or("work"),
                };
            }
            tokio::time::sleep(deadline - idle).await;
        }
    }

    fn record(&self, stage: &'static str, bytes: u64, done: bool) {
        let now = Instant::now();
        let mut state = self.state();
        let Some(stages) = state.watching.as_mut() else {
            return;
        };
        let Some(s) = stages.iter_mut().find(|s| s.name == stage) else {
            return;
        };
        if bytes == 0 && !done {
            return;
        }
        s.bytes += bytes;
        s.last = now;
        s.done |= done;
        state.last = Some(now);
    }
}

/// The unfinished stage that moved last the longest ago; ties go to the earlier stage.
fn stalled_stage(stages: &[Stage]) -> &'static str {
    let mut best: Option<&Stage> = None;
    for s in stages.iter().filter(|s| !s.done) {
        if best.is_none_or(|b| s.last < b.last) {
            best = Some(s);
        }
    }
    best.or(stages.last()).map_or("work", |s| s.name)
}

/// The work of this process that is under way, for a command to show how far it got. Holds no
/// work alive: what ended drops off by itself.
#[derive(Debug, Default)]
pub struct Board {
    live: Mutex<Vec<std::sync::Weak<Mutex<State>>>>,
}

impl Board {
    /// A new piece of work's progress, on the board while any clone of it lives.
    pub fn start(&self) -> Progress {
        let progress = Progress::new();
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&progress.state));
        progress
    }

    /// The newest work under way that said what it does.
    pub fn current(&self) -> Option<Snapshot> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.iter()
            .rev()
            .filter_map(std::sync::Weak::upgrade)
            .find_map(|state| Progress { state }.snapshot())
    }
}

/// Ends the watch when the watched work ends or is dropped.
struct Watch<'a>(&'a Progress);

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.ended = state
            .watching
            .take()
            .and_then(|s| s.first().map(|s| s.bytes))
            .unwrap_or(0);
        state.last = None;
    }
}

/// Counts the bytes one stage moves.
#[derive(Debug, Clone)]
pub struct Meter {
    progress: Progress,
    stage: &'static str,
}

impl Meter {
    /// `bytes` more moved.
    pub fn add(&self, bytes: u64) {
        self.progress.record(self.stage, bytes, false);
    }

    /// The stage has ended: it no longer counts as the one that stalls.
    pub fn done(&self) {
        self.progress.record(self.stage, 0, true);
    }

    /// `stream` unchanged, each chunk counted as it passes, its end marking the stage done.
    pub fn stream(self, stream: ByteStream) -> ByteStream {
        let mut stream = stream;
        async_stream::stream! {
            while let Some(item) = stream.next().await {
                if let Ok(chunk) = &item {
                    self.add(chunk.len() as u64);
                }
                let failed = item.is_err();
                yield item;
                if failed {
                    return;
                }
            }
            self.done();
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::stage::*;
    use super::*;
    use bytes::Bytes;

    fn chunks(n: usize) -> ByteStream {
        futures::stream::iter((0..n).map(|_| Ok(Bytes::from_static(b"abcd")))).boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_moves_nothing_fails_naming_its_first_stage() {
        let progress = Progress::new();
        let out = progress
            .deadline(
                Duration::from_secs(3),
                &[PG_DUMP, COMPRESSION, UPLOAD],
                futures::future::pending::<()>(),
            )
            .await;
        assert_eq!(
            out.map_err(|e| e.to_string()),
            Err("stalled: no progress for 3 s in pg_dump".to_owned())
        );
        assert!(progress.is_fresh(Duration::from_secs(3)), "unwatched again");
    }

    #[tokio::test(start_paused = true)]
    async fn the_stage_that_stopped_first_is_named() {
        let progress = Progress::new();
        let (source, compressed, upload) = (
            progress.meter(VOLUME_READ),
            progress.meter(COMPRESSION),
            progress.meter(UPLOAD),
        );
        let work = async {
            // The upload takes a few bytes, then hangs; the source and compression go on filling
            // their buffers, then end.
            upload.add(4);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let n = source.stream(chunks(3)).count().await;
            compressed.add(4);
            tokio::time::sleep(Duration::from_secs(1)).await;
            compressed.add(4);
            futures::future::pending::<()>().await;
            n
        };
        let out = progress
            .deadline(
                Duration::from_secs(5),
                &[VOLUME_READ, COMPRESSION, UPLOAD],
                work,
            )
            .await;
        assert_eq!(
            out,
            Err(Stalled {
                seconds: 5,
                stage: UPLOAD
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn steady_progress_never_stalls_and_keeps_the_run_fresh() {
        let progress = Progress::new();
        let meter = progress.meter(DOWNLOAD);
        let checker = progress.clone();
        let work = async {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                meter.add(1);
                assert!(checker.is_fresh(Duration::from_secs(3)));
            }
            "done"
        };
        let out = progress
            .deadline(Duration::from_secs(3), &[DOWNLOAD, EXTRACTION], work)
            .await;
        assert_eq!(out, Ok("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_run_is_not_fresh() {
        let progress = Progress::new();
        let checker = progress.clone();
        let work = async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            checker.is_fresh(Duration::from_secs(3))
        };
        let out = progress
            .deadline(Duration::from_secs(10), &[DOWNLOAD], work)
            .await;
        assert_eq!(out, Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn the_board_shows_the_newest_described_work_and_forgets_what_ended() {
        let board = Board::default();
        let first = board.start();
        first.describe("backing up shop/uploads", None);
        let second = board.start();
        assert_eq!(
            board.current().map(|s| s.label),
            Some("backing up shop/uploads".into())
        );
        second.describe("restoring shop/db", Some(10));
        let meter = second.meter(DOWNLOAD);
        let seen = second
            .deadline(Duration::from_secs(3), &[DOWNLOAD, EXTRACTION], async {
                meter.add(4);
                board.current()
            })
            .await;
        let expected = Snapshot {
            label: "restoring shop/db".into(),
            stage: Some(DOWNLOAD),
            bytes: 4,
            total: Some(10),
        };
        assert_eq!(seen, Ok(Some(expected.clone())));
        // Once the watched work ended, what its source moved is still shown.
        let ended = Snapshot {
            stage: None,
            ..expected
        };
        assert_eq!(board.current(), Some(ended));
        // A meter holds the work's progress too: it stays on the board until both are gone.
        drop(second);
        assert_eq!(
            board.current().map(|s| s.label),
            Some("restoring shop/db".into())
        );
        drop(meter);
        assert_eq!(
            board.current().map(|s| s.label),
            Some("backing up shop/uploads".into())
        );
        drop(first);
        assert_eq!(board.current(), None);
    }
}

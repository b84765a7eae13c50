//! What every long-lived actor keeps about itself and reports when asked ([`Report`]): idle, busy
//! or backing off, how many tasks it finished, how often it failed, and its last error. An actor
//! holds a [`WorkerBook`]; each task it takes is a [`Task`] that ends `ok`, `failed` or dropped
//! (cancelled by its caller: neither).
//!
//! Also here: [`ask`], how a caller hands work to an actor so that dropping the caller's future
//! stops the work (a stalled backup drops its upload, and the upload must then abort), as it would
//! if the caller ran the work itself.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Asks an actor what it is doing.
#[derive(Message)]
#[rtype(result = "WorkerStatus")]
pub struct Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkerState {
    /// Nothing in progress.
    #[default]
    Idle,
    /// At least one task in progress.
    Busy,
    /// Waiting before it tries again after a failure.
    BackingOff,
}

/// An actor's report of itself.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub name: &'static str,
    pub state: WorkerState,
    /// Tasks in progress now.
    pub busy: usize,
    /// Tasks finished well since the process started.
    pub done: u64,
    /// Tasks that failed since the process started.
    pub errors: u64,
    /// Failures since the last task that finished well.
    pub consecutive_errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Set while backing off: when it tries again.
    pub retry_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Counts {
    busy: usize,
    done: u64,
    errors: u64,
    consecutive_errors: u64,
    last_error: Option<(String, DateTime<Utc>)>,
    retry_at: Option<DateTime<Utc>>,
}

/// An actor's record of its work; clones share it (a task spawned by the actor updates it).
#[derive(Debug, Clone)]
pub struct WorkerBook {
    name: &'static str,
    counts: Arc<Mutex<Counts>>,
}

impl WorkerBook {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            counts: Arc::default(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Plain counters: still usable after a panic elsewhere.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One task begins; it counts as busy until the returned [`Task`] ends or is dropped.
    pub fn begin(&self) -> Task {
        self.counts().busy += 1;
        Task {
            book: self.clone(),
            ended: false,
        }
    }

    /// Records a failure that is not a task's (a renewal that failed, a sweep that erred).
    pub fn error(&self, why: impl std::fmt::Display) {
        let mut c = self.counts();
        c.errors += 1;
        c.consecutive_errors += 1;
        c.last_error = Some((why.to_string(), Utc::now()));
    }

    /// The actor waits until `until` before it tries again; cleared by [`WorkerBook::retrying`].
    pub fn backing_off(&self, until: DateTime<Utc>) {
        self.counts().retry_at = Some(until);
    }

    pub fn retrying(&self) {
        self.counts().retry_at = None;
    }

    pub fn status(&self) -> WorkerStatus {
        let c = self.counts();
        let backing_off = c.retry_at.is_some_and(|at| at > Utc::now());
        WorkerStatus {
            name: self.name,
            state: if c.busy > 0 {
                WorkerState::Busy
            } else if backing_off {
                WorkerState::BackingOff
            } else {
                WorkerState::Idle
            },
            busy: c.busy,
            done: c.done,
            errors: c.errors,
            consecutive_errors: c.consecutive_errors,
            last_error: c.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: c.last_error.as_ref().map(|(_, at)| *at),
            retry_at: c.retry_at.filter(|_| backing_off),
        }
    }
}

/// One task of an actor in progress. Ending it with [`Task::ok`] or [`Task::failed`] records its
/// outcome; dropping it (the caller gave the task up) records neither.
#[derive(Debug)]
pub struct Task {
    book: WorkerBook,
    ended: bool,
}

impl Task {
    pub fn ok(mut self) {
        self.ended = true;
        let mut c = self.book.counts();
        c.busy -= 1;
        c.done += 1;
        c.consecutive_errors = 0;
    }

    pub fn failed(mut self, why: impl std::fmt::Display) {
        self.ended = true;
        self.book.counts().busy -= 1;
        self.book.error(why);
    }

    /// Records `result`'s outcome and hands it back.
    pub fn end<T, E: std::fmt::Display>(self, result: Result<T, E>) -> Result<T, E> {
        match &result {
            Ok(_) => self.ok(),
            Err(e) => self.failed(e),
        }
        result
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if !self.ended {
            self.book.counts().busy -= 1;
        }
    }
}

/// Sends the message `build` makes with a stop token, and waits for the answer. The token is
/// cancelled when this future is dropped: the actor's handler runs its work until the token is
/// cancelled ([`CancellationToken::run_until_cancelled`]), so dropping the ask drops the work.
pub async fn ask<A, M>(
    addr: &Addr<A>,
    build: impl FnOnce(CancellationToken) -> M,
) -> Result<M::Result, MailboxError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    addr.send(build(stop)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_moves_the_state_and_counts() {
        let book = WorkerBook::new("uploader");
        assert_eq!(book.status().state, WorkerState::Idle);
        let one = book.begin();
        let two = book.begin();
        assert_eq!(book.status().state, WorkerState::Busy);
        assert_eq!(book.status().busy, 2);
        one.failed("s3: connection reset");
        let s = book.status();
        assert_eq!(
            (s.busy, s.errors, s.consecutive_errors, s.done),
            (1, 1, 1, 0)
        );
        assert_eq!(s.last_error.as_deref(), Some("s3: connection reset"));
        two.ok();
        let s = book.status();
        assert_eq!(s.state, WorkerState::Idle);
        assert_eq!(
            (s.busy, s.errors, s.consecutive_errors, s.done),
            (0, 1, 0, 1)
        );
        // The last error stays for whoever looks later.
        assert!(s.last_error.is_some() && s.last_error_at.is_some());
    }

    #[test]
    fn a_dropped_task_is_neither_done_nor_failed() {
        let book = WorkerBook::new("volume-runner");
        drop(book.begin());
        let s = book.status();
        assert_eq!(
            (s.state, s.busy, s.done, s.errors),
            (WorkerState::Idle, 0, 0, 0)
        );
    }

    #[test]
    fn backing_off_shows_until_the_retry_time() {
        let book = WorkerBook::new("supervisor");
        let at = Utc::now() + chrono::Duration::seconds(30);
        book.backing_off(at);
        let s = book.status();
        assert_eq!(s.state, WorkerState::BackingOff);
        assert_eq!(s.retry_at, Some(at));
        book.backing_off(Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(book.status().state, WorkerState::Idle);
        assert_eq!(book.status().retry_at, None);
        book.retrying();
        // Busy wins over backing off: something is in progress.
        book.backing_off(at);
        let _task = book.begin();
        assert_eq!(book.status().state, WorkerState::Busy);
    }

    #[actix::test]
    async fn dropping_an_ask_stops_the_work() {
        struct Slow(tokio::sync::mpsc::Sender<&'static str>);
        impl Actor for Slow {
            type Context = Context<Self>;
        }
        #[derive(Message)]
        #[rtype(result = "bool")]
        struct Work(CancellationToken);
        impl Handler<Work> for Slow {
            type Result = ResponseFuture<bool>;
            fn handle(&mut self, Work(stop): Work, _: &mut Context<Self>) -> Self::Result {
                let tell = self.0.clone();
                Box::pin(async move {
                    let work = tokio::time::sleep(std::time::Duration::from_secs(30));
                    let finished = stop.run_until_cancelled(work).await.is_some();
                    let _ = tell
                        .send(if finished { "finished" } else { "stopped" })
                        .await;
                    finished
                })
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let addr = Slow(tx).start();
        let asked = ask(&addr, Work);
        let timed = tokio::time::timeout(std::time::Duration::from_millis(100), asked).await;
        assert!(timed.is_err(), "the work cannot finish within 100 ms");
        let heard = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await;
        assert_eq!(heard.ok().flatten(), Some("stopped"));
    }
}

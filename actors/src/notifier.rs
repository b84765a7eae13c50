//! Notifier: the delivery loop. Every second it looks for due notices in the outbox and sends
//! them, up to `WORKERS` at once so that one slow or failing channel never holds up another;
//! every minute it sweeps for settled runs whose notices were never enqueued. It reports its
//! state (idle, busy, backing off), its counts and its last error, and backs off while the
//! database is away. Its work lives in the outbox, so it resumes after a restart where it stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::engine::Engine;
use crate::messages::{Report, WorkerStatus};
use crate::notify::{self, NotifyError, Senders};
use crate::store::{AttemptRecord, AttemptResult, StoreError};
use crate::worker::WorkerState;

/// Deliveries at once per process.
const WORKERS: usize = 4;
/// How often the loop looks for due notices.
const POLL: Duration = Duration::from_secs(1);
/// How often it sweeps for runs whose notices were never enqueued.
const SWEEP: Duration = Duration::from_secs(60);
/// The longest pause after repeated database errors.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Look for due notices now (the interval sends it; tests and callers may too).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Tick;

/// Enqueue the notices of settled runs that have none.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sweep;

/// The loop's state and counts; [`Report`] answers them as a [`WorkerStatus`].
#[derive(Debug, Clone, Default)]
pub struct NotifierStatus {
    pub state: WorkerState,
    pub in_flight: usize,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    /// Errors of the loop itself (database away), not of deliveries.
    pub errors: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub struct Notifier {
    engine: Engine,
    senders: Arc<Senders>,
    status: NotifierStatus,
    consecutive_errors: u32,
    paused_until: Option<Instant>,
}

impl Notifier {
    /// Starts the loop on the current arbiter; must run inside the actix system.
    pub fn start(engine: Engine) -> Result<Addr<Self>, NotifyError> {
        let senders = Arc::new(Senders::new(&engine.settings().notifications)?);
        Ok(Actor::start(Self {
            engine,
            senders,
            status: NotifierStatus::default(),
            consecutive_errors: 0,
            paused_until: None,
        }))
    }

    /// Starts probes for due notices: one when `eager` is false, else as many as slots are free.
    fn fill(&mut self, ctx: &mut Context<Self>, eager: bool) {
        if self.paused_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.paused_until = None;
        let free = WORKERS.saturating_sub(self.status.in_flight);
        let probes = if eager { free } else { free.min(1) };
        for _ in 0..probes {
            self.status.in_flight += 1;
            self.status.state = WorkerState::Busy;
            let (engine, senders) = (self.engine.clone(), Arc::clone(&self.senders));
            let probe = async move { notify::deliver_one(&engine, &senders, None).await };
            ctx.spawn(probe.into_actor(self).map(|outcome, act, ctx| {
                act.status.in_flight -= 1;
                let found = act.record(outcome);
                if act.status.in_flight == 0 && act.status.state == WorkerState::Busy {
                    act.status.state = WorkerState::Idle;
                }
                if found {
                    act.fill(ctx, true);
                }
            }));
        }
    }

    /// Counts an attempt or an error; true when a notice was handled (more may be due).
    fn record(&mut self, outcome: Result<Option<AttemptRecord>, StoreError>) -> bool {
        match outcome {
            Ok(None) => {
                self.consecutive_errors = 0;
                false
            }
            Ok(Some(r)) => {
                self.consecutive_errors = 0;
                match r.result {
                    AttemptResult::Delivered => self.status.delivered += 1,
                    AttemptResult::Retry(_) => self.status.retried += 1,
                    AttemptResult::Failed => self.status.failed += 1,
                }
                true
            }
            Err(e) => {
                self.loop_error(&format!("delivery loop: {e}"));
                false
            }
        }
    }

    fn loop_error(&mut self, message: &str) {
        self.status.errors += 1;
        self.consecutive_errors = self.consecutive_errors.saturating_add(1);
        let pause = (POLL * 2u32.saturating_pow(self.consecutive_errors.min(5))).min(MAX_BACKOFF);
        self.paused_until = Some(Instant::now() + pause);
        self.status.state = WorkerState::BackingOff;
        // The same error every second (a database that is away) is logged once.
        if self.status.last_error.as_deref() != Some(message) {
            tracing::warn!(error = message, ?pause, "notifier backing off");
        }
        self.status.last_error = Some(message.to_owned());
        self.status.last_error_at = Some(chrono::Utc::now());
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Sweep);
        ctx.run_interval(POLL, |act, ctx| act.fill(ctx, false));
        ctx.run_interval(SWEEP, |_, ctx| ctx.notify(Sweep));
    }
}

impl Handler<Tick> for Notifier {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.fill(ctx, true);
    }
}

impl Handler<Sweep> for Notifier {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let sweep = async move { notify::enqueue_missed(&engine).await };
        Box::pin(
            sweep
                .into_actor(self)
                .map(|outcome, act, ctx| match outcome {
                    Ok(0) => {}
                    Ok(_) => act.fill(ctx, true),
                    Err(e) => act.loop_error(&format!("sweep: {e}")),
                }),
        )
    }
}

impl Handler<Report> for Notifier {
    type Result = MessageResult<Report>;

    /// Done: notices delivered; errors: the loop's own (database away) and failed deliveries.
    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        let s = &self.status;
        let backing_off = s.state == WorkerState::BackingOff;
        MessageResult(WorkerStatus {
            name: "notifier",
            state: s.state,
            busy: s.in_flight,
            done: s.delivered,
            errors: s.errors + s.failed,
            consecutive_errors: u64::from(self.consecutive_errors),
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at,
            retry_at: self
                .paused_until
                .filter(|_| backing_off)
                .and_then(|t| chrono::Duration::from_std(t - Instant::now()).ok())
                .map(|left| chrono::Utc::now() + left),
        })
    }
}

//! EventsPublisher: sends the rows of `event_outbox` to their Redis Streams, oldest first. It
//! wakes when this process enqueues events and polls every two seconds (for rows other instances
//! enqueued, and after a restart). A batch stays locked (`FOR UPDATE SKIP LOCKED`) while it is
//! sent and the sent rows are marked published in the same transaction, so instances never send
//! one row twice; a process killed between a send and the commit sends it again (at least once:
//! consumers deduplicate on `runId` and `type`). While Redis is away every failure is logged,
//! recorded on the row (`attempts`, `last_error`) and retried with backoff; nothing is dropped.
//! Rows published more than a week ago are deleted.

use std::time::{Duration, Instant};

use actix::prelude::*;
use uuid::Uuid;

use crate::engine::Engine;
use crate::events_out;
use crate::store::{PublishPass, StoreError};

/// Rows per locked batch.
const BATCH: i64 = 100;
/// How often the loop looks for rows without being woken.
const POLL: Duration = Duration::from_secs(2);
/// The first pause after a failure; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Published rows are kept this long, then deleted.
const KEEP_PUBLISHED: Duration = Duration::from_secs(7 * 24 * 3600);
const CLEANUP_EVERY: Duration = Duration::from_secs(3600);

pub struct EventsPublisher {
    engine: Engine,
}

impl EventsPublisher {
    /// Starts the loop on the current arbiter; must run inside the actix system.
    pub fn start(engine: Engine) -> Addr<Self> {
        Actor::start(Self { engine })
    }
}

impl Actor for EventsPublisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(publish_loop(self.engine.clone()).into_actor(self));
    }
}

/// The pause after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(10)))
        .min(MAX_BACKOFF)
}

async fn publish_loop(engine: Engine) {
    let mut failures = 0u32;
    let mut cleaned = Instant::now();
    let mut first_cleanup = true;
    loop {
        match publish_pass(&engine, None).await {
            Ok(pass) if pass.failed.is_none() => {
                failures = 0;
                if pass.more {
                    continue;
                }
            }
            Ok(_) => failures += 1,
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, "events publisher: the outbox cannot be read; retrying");
            }
        }
        if first_cleanup || cleaned.elapsed() >= CLEANUP_EVERY {
            first_cleanup = false;
            cleaned = Instant::now();
            match engine.store().delete_published_events(KEEP_PUBLISHED).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted events published over a week ago"),
                Err(e) => tracing::warn!(error = %e, "could not delete old published events"),
            }
        }
        if failures > 0 {
            tokio::time::sleep(backoff(failures)).await;
            continue;
        }
        tokio::select! {
            () = engine.events_wait() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// One pass over the outbox (over `run`'s rows only, when given): a locked batch, sent in order
/// until the first failure, which is logged.
pub async fn publish_pass(engine: &Engine, run: Option<Uuid>) -> Result<PublishPass, StoreError> {
    let pass = engine
        .store()
        .publish_events(run, BATCH, |row| async move {
            match events_out::send(engine, &row).await {
                Ok(id) => {
                    tracing::debug!(stream = %row.stream, kind = %row.kind, %id, "event published");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    if let Some((id, attempts, error)) = &pass.failed {
        tracing::error!(
            event_id = id,
            attempts,
            error,
            "publishing an event failed; it stays in the outbox and is retried"
        );
    }
    Ok(pass)
}

/// What `publish_run` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunPublished {
    pub published: usize,
    /// The error that left some of the run's events in the outbox.
    pub error: Option<String>,
}

/// One attempt at each of a run's unpublished events (the CLI's `backup` command, before it
/// exits); what fails stays in the outbox for a server's publisher.
pub async fn publish_run(engine: &Engine, run_id: Uuid) -> Result<RunPublished, StoreError> {
    let mut done = RunPublished::default();
    loop {
        let pass = publish_pass(engine, Some(run_id)).await?;
        done.published += pass.published;
        if let Some((_, _, error)) = pass.failed {
            done.error = Some(error);
            return Ok(done);
        }
        if !pass.more {
            return Ok(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_up_to_a_ceiling() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15, 15]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}

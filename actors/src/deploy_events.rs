//! DeployEvents: the consumer of the deploy pipeline's messages on the Redis Stream `vardo:events`
//! (consumer group `vardo-backup`, one consumer per engine instance).
//!
//! Each message has the fields `type` and `payload` (JSON). `app.deployed` records the app (and
//! may create its auto job), `app.deleted` removes it, `backup.requested` asks for runs. A message
//! is acknowledged only once its effect is committed in Postgres; every effect is idempotent
//! (store/deploy.rs), so a redelivery changes nothing. A message left pending — its consumer died,
//! or handling it failed — is claimed by any live consumer once idle for `claim_idle`
//! (`XAUTOCLAIM`); after `max_deliveries` deliveries it moves to the dead-letter stream with the
//! error. A malformed message or one that can never apply (an app of another organization) goes
//! there at once with the reason. Nothing a message contains stops the consumer.

use std::time::{Duration, Instant};

use actix::prelude::*;
use deadpool_redis::redis::{self, aio::MultiplexedConnection, Value};
use secrecy::ExposeSecret;

mod event;
mod reply;

pub use event::{parse_event, DeployEvent};
use reply::{autoclaim_reply, int, pairs, pending_counts, read_reply, text, Entry};

use crate::engine::Engine;
use crate::events_out::{self, Completed, EventsError, Outcome};
pub use crate::settings::EventSettings;
use crate::store::{AutoJob, Deployed, Removed, Requested, StoreError};

/// Messages per read or claim.
const BATCH: usize = 10;
/// How long one `XREADGROUP` waits for new messages.
const BLOCK: Duration = Duration::from_secs(2);
/// Approximate length the dead-letter stream is trimmed to.
const DEAD_MAXLEN: u64 = 10_000;
/// Consumers of stopped instances with nothing pending are removed after this long.
const STALE_CONSUMER: Duration = Duration::from_secs(3600);
const SWEEP_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply to {0} from redis")]
    Reply(&'static str),
    #[error("the database does not answer: {0}")]
    StoreDown(StoreError),
}

/// Why handling a well-formed message failed this time; it is delivered again.
#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("publishing the answer: {0}")]
    Events(#[from] EventsError),
}

/// What to do with a handled message.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Done (or nothing to do): acknowledge, with what happened for the log.
    Ack(String),
    /// Can never apply: dead-letter with the reason.
    Reject(String),
}

/// The actor: runs the consume loop on its arbiter for as long as it lives.
pub struct DeployEvents {
    engine: Engine,
    consumer: String,
}

impl DeployEvents {
    /// `consumer` names this instance in the group (the instance id).
    pub fn new(engine: Engine, consumer: String) -> Self {
        Self { engine, consumer }
    }
}

impl Actor for DeployEvents {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let consumer = Consumer::new(self.engine.clone(), self.consumer.clone());
        ctx.spawn(consumer.run().into_actor(self));
    }
}

struct Consumer {
    engine: Engine,
    name: String,
    conn: Option<MultiplexedConnection>,
    /// Where the next `XAUTOCLAIM` continues scanning the group's pending list.
    cursor: String,
    next_claim: Instant,
    next_sweep: Instant,
}

impl Consumer {
    fn new(engine: Engine, name: String) -> Self {
        let now = Instant::now();
        Self {
            engine,
            name,
            conn: None,
            cursor: "0-0".to_owned(),
            next_claim: now,
            next_sweep: now + SWEEP_EVERY,
        }
    }

    fn settings(&self) -> &EventSettings {
        &self.engine.settings().events
    }

    async fn run(mut self) {
        let s = self.settings();
        tracing::info!(stream = %s.stream, group = %s.group, consumer = %self.name, "deploy events consumer started");
        let mut failures = 0u32;
        while !self.engine.is_shutting_down() {
            match self.step().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(250)
                        .saturating_mul(2u32.saturating_pow(failures.min(6)))
                        .min(Duration::from_secs(15));
                    tracing::warn!(error = %chain(&e), failures, wait_ms = wait.as_millis() as u64, "deploy events consumer backing off");
                    if !matches!(e, ConsumerError::StoreDown(_)) {
                        self.conn = None;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = self.engine.shutting_down() => {}
                    }
                }
            }
        }
        tracing::info!(consumer = %self.name, "deploy events consumer stopped: the engine is shutting down");
    }

    /// A connection of its own (a blocking read holds it), and the group, created if missing.
    /// A new group starts at the stream's beginning, so messages sent before any engine
    /// started are handled too.
    async fn connect(&mut self) -> Result<MultiplexedConnection, ConsumerError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let client = redis::Client::open(self.engine.settings().redis_url.expose_secret())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let s = self.settings();
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&s.stream)
            .arg(&s.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(stream = %s.stream, group = %s.group, "consumer group created")
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// One round: claim messages left idle by others (when due), then read new ones.
    async fn step(&mut self) -> Result<(), ConsumerError> {
        let mut conn = self.connect().await?;
        if Instant::now() >= self.next_claim {
            let claimed = self.claim(&mut conn).await?;
            for (entry, deliveries) in claimed {
                self.handle(&mut conn, entry, deliveries).await?;
            }
        }
        if Instant::now() >= self.next_sweep {
            self.next_sweep = Instant::now() + SWEEP_EVERY;
            if let Err(e) = self.sweep_consumers(&mut conn).await {
                tracing::warn!(error = %e, "removing stale consumers failed");
            }
        }
        let s = self.settings();
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(&s.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(block_ms(self.next_claim))
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(">");
        let reply = read.query_async::<Value>(&mut conn);
        // A shutdown ends the blocking read at once. Entries it may have been delivered stay
        // pending for this consumer, and another instance claims them once they are idle for
        // `claim_idle`: at least once, as after a crash.
        let reply: Value = tokio::select! {
            biased;
            () = self.engine.shutting_down() => return Ok(()),
            // An error (NOGROUP: the stream was deleted) drops the connection; the next round
            // connects again and creates the group.
            reply = reply => reply?,
        };
        for entry in read_reply(&reply).ok_or(ConsumerError::Reply("XREADGROUP"))? {
            self.handle(&mut conn, entry, 1).await?;
        }
        Ok(())
    }

    /// `XAUTOCLAIM` of messages idle longer than `claim_idle`, with their delivery counts.
    async fn claim(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Vec<(Entry, u64)>, ConsumerError> {
        let s = self.settings().clone();
        let idle_ms = u64::try_from(s.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&self.name)
            .arg(idle_ms)
            .arg(&self.cursor)
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await?;
        let (cursor, entries) =
            autoclaim_reply(&reply).ok_or(ConsumerError::Reply("XAUTOCLAIM"))?;
        // A full scan waits a while before the next; a partial one continues at once.
        self.next_claim = if cursor == "0-0" {
            Instant::now()
                + (s.claim_idle / 2).clamp(Duration::from_millis(200), Duration::from_secs(5))
        } else {
            Instant::now()
        };
        self.cursor = cursor;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Vec::new());
        };
        let reply: Value = redis::cmd("XPENDING")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len().max(BATCH) * 4)
            .arg(&self.name)
            .query_async(conn)
            .await?;
        let counts = pending_counts(&reply).ok_or(ConsumerError::Reply("XPENDING"))?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let n = counts.get(&e.id).copied().unwrap_or(2);
                (e, n)
            })
            .collect())
    }

    /// Handles one delivery: acknowledged when done, dead-lettered when it cannot apply or has
    /// failed too often, left pending (for a later claim) when it failed this time.
    async fn handle(
        &mut self,
        conn: &mut MultiplexedConnection,
        entry: Entry,
        deliveries: u64,
    ) -> Result<(), ConsumerError> {
        let max = u64::from(self.settings().max_deliveries.max(1));
        if deliveries > max {
            let why = format!(
                "delivered {deliveries} times without being acknowledged: the engines handling it stopped before finishing"
            );
            return self.dead_letter(conn, &entry, deliveries, &why).await;
        }
        let event = match parse_event(&entry.fields) {
            Ok(event) => event,
            Err(why) => return self.dead_letter(conn, &entry, deliveries, &why).await,
        };
        match apply(&self.engine, event).await {
            Ok(Verdict::Ack(what)) => {
                tracing::info!(id = %entry.id, deliveries, "{what}");
                self.ack(conn, &entry.id).await
            }
            Ok(Verdict::Reject(why)) => self.dead_letter(conn, &entry, deliveries, &why).await,
            Err(e) if deliveries >= max => {
                let why = format!("failed {deliveries} times; last error: {}", chain(&e));
                self.dead_letter(conn, &entry, deliveries, &why).await
            }
            Err(e) => {
                tracing::warn!(id = %entry.id, deliveries, error = %chain(&e), "deploy event failed; it is retried after the claim timeout");
                // A database that does not answer fails every message: wait for it instead.
                if let Err(down) = self.engine.store().ping().await {
                    return Err(ConsumerError::StoreDown(down));
                }
                Ok(())
            }
        }
    }

    async fn ack(&self, conn: &mut MultiplexedConnection, id: &str) -> Result<(), ConsumerError> {
        let s = self.settings();
        let _: i64 = redis::cmd("XACK")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(id)
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Copies the message to the dead-letter stream with the reason and acknowledges it, in one
    /// `MULTI`/`EXEC`.
    async fn dead_letter(
        &self,
        conn: &mut MultiplexedConnection,
        entry: &Entry,
        deliveries: u64,
        why: &str,
    ) -> Result<(), ConsumerError> {
        let s = self.settings();
        tracing::warn!(id = %entry.id, deliveries, dead_letter_stream = %s.dead_letter_stream, reason = %why, "deploy event dead-lettered");
        const OURS: [&str; 5] = [
            "error",
            "sourceStream",
            "sourceId",
            "deliveries",
            "consumer",
        ];
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&s.dead_letter_stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_MAXLEN)
            .arg("*");
        for (k, v) in entry
            .fields
            .iter()
            .filter(|(k, _)| !OURS.contains(&k.as_str()))
        {
            xadd.arg(k).arg(v.as_slice());
        }
        xadd.arg("error")
            .arg(why)
            .arg("sourceStream")
            .arg(&s.stream)
            .arg("sourceId")
            .arg(&entry.id)
            .arg("deliveries")
            .arg(deliveries)
            .arg("consumer")
            .arg(&self.name);
        let mut xack = redis::cmd("XACK");
        xack.arg(&s.stream).arg(&s.group).arg(&entry.id);
        let _: Value = redis::pipe()
            .atomic()
            .add_command(xadd)
            .ignore()
            .add_command(xack)
            .ignore()
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Removes consumers of stopped instances: nothing pending and idle for an hour.
    async fn sweep_consumers(&self, conn: &mut MultiplexedConnection) -> Result<(), ConsumerError> {
        let s = self.settings();
        let reply: Value = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&s.stream)
            .arg(&s.group)
            .query_async(conn)
            .await?;
        let Value::Array(consumers) = reply else {
            return Err(ConsumerError::Reply("XINFO CONSUMERS"));
        };
        let stale_ms = i64::try_from(STALE_CONSUMER.as_millis()).unwrap_or(i64::MAX);
        for c in &consumers {
            let info = pairs(c);
            let name = info.get("name").and_then(|v| text(v));
            let pending = info.get("pending").and_then(|v| int(v));
            let idle = info.get("idle").and_then(|v| int(v));
            if let (Some(name), Some(0), Some(idle)) = (name, pending, idle) {
                if idle > stale_ms && name != self.name {
                    let _: i64 = redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(&s.stream)
                        .arg(&s.group)
                        .arg(&name)
                        .query_async(conn)
                        .await?;
                    tracing::info!(consumer = %name, "removed the consumer of a stopped instance");
                }
            }
        }
        Ok(())
    }
}

/// How long a read may wait: until the next claim is due, within 100 ms..`BLOCK`.
fn block_ms(next_claim: Instant) -> u64 {
    let wait = next_claim
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(100), BLOCK);
    u64::try_from(wait.as_millis()).unwrap_or(2000)
}

/// An error with its causes (a database error's text is in its source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Does what a well-formed message asks.
async fn apply(engine: &Engine, event: DeployEvent) -> Result<Verdict, HandleError> {
    let store = engine.store();
    match event {
        DeployEvent::AppDeployed(app) => match store.record_deployed_app(&app).await {
            Err(crate::store::StoreError::NameTaken(taken)) => Ok(Verdict::Reject(format!(
                "app {:?} was not recorded: {taken}",
                app.app_id
            ))),
            Err(e) => Err(e.into()),
            Ok(deployed) => match deployed {
                Deployed::Foreign => Ok(Verdict::Reject(format!(
                    "app {:?} belongs to another organization than {:?}",
                    app.app_id, app.org_slug
                ))),
                Deployed::Recorded { auto_job, .. } => Ok(Verdict::Ack(match auto_job {
                    AutoJob::Created(job) => {
                        format!("app {} recorded; auto job {job} created", app.app_id)
                    }
                    AutoJob::NoPersistentVolume => {
                        format!(
                            "app {} recorded; no persistent volume, no auto job",
                            app.app_id
                        )
                    }
                    AutoJob::AlreadyCovered => {
                        format!("app {} recorded; a job covers it already", app.app_id)
                    }
                    AutoJob::NoTarget => {
                        format!(
                            "app {} recorded; no backup target exists, no auto job",
                            app.app_id
                        )
                    }
                })),
            },
        },
        DeployEvent::AppDeleted { org_slug, app_id } => {
            match store.remove_deleted_app(&org_slug, &app_id).await? {
                Removed::Foreign => Ok(Verdict::Reject(format!(
                    "app {app_id:?} belongs to another organization than {org_slug:?}"
                ))),
                Removed::Absent => Ok(Verdict::Ack(format!("app {app_id} was not recorded"))),
                Removed::Removed {
                    uncovered,
                    disabled,
                } => Ok(Verdict::Ack(format!(
                    "app {app_id} removed from {} jobs; {} disabled",
                    uncovered.len(),
                    disabled.len()
                ))),
            }
        }
        DeployEvent::BackupRequested {
            org_slug,
            app_id,
            job_id,
            request_id,
        } => {
            match store
                .request_deploy_runs(&org_slug, app_id.as_deref(), job_id, &request_id)
                .await?
            {
                Requested::Runs { runs, .. } => Ok(Verdict::Ack(format!(
                    "request {request_id:?}: {} runs asked for ({} new)",
                    runs.len(),
                    runs.iter().filter(|r| r.new).count()
                ))),
                Requested::Nothing {
                    organization_id,
                    reason,
                } => {
                    // The pipeline waits for an answer: it gets one saying nothing ran.
                    if engine.settings().events.publish {
                        let answer = Completed {
                            kind: events_out::COMPLETED,
                            request_id: request_id.clone(),
                            run_id: None,
                            organization_id,
                            org_slug,
                            job: None,
                            status: Outcome::Skipped,
                            reason: Some(reason.clone()),
                            request_runs: 0,
                            total_size_bytes: 0,
                            started_at: None,
                            finished_at: None,
                            volumes: Vec::new(),
                        };
                        events_out::enqueue_completed(engine, &answer).await?;
                    }
                    Ok(Verdict::Ack(format!(
                        "request {request_id:?}: nothing to run: {reason}"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

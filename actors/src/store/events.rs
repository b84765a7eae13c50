//! event_outbox: the events for other systems (Redis Streams), written in Postgres and published
//! by any instance's publisher, oldest first.
//!
//! A publisher holds a batch of unpublished rows locked (`FOR UPDATE SKIP LOCKED`) in one
//! transaction while it sends them and marks the sent ones published in that transaction: two
//! instances never publish one row at once. A process killed after a send and before the commit
//! leaves its rows unpublished, and they are sent again (consumers deduplicate on `runId` + type).

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{Store, StoreError};

/// An event to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub stream: String,
    /// The entry's `type` field.
    pub kind: String,
    pub payload: serde_json::Value,
    /// The entry's `runId` field, when there is one.
    pub run_id: Option<Uuid>,
}

/// An outbox row, locked for publishing, or as read for the API and tests.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: i64,
    pub stream: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    /// Failed attempts so far.
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// What one publishing pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishPass {
    /// Rows published and marked so.
    pub published: usize,
    /// The row whose send failed (the pass stops there, so order is kept), its attempts so far
    /// and the error; the row stays unpublished.
    pub failed: Option<(i64, i32, String)>,
    /// True when the batch was full: more rows may be waiting.
    pub more: bool,
}

const COLUMNS: &str =
    "id, stream, type, payload, run_id, created_at, published_at, attempts, last_error";

fn event_row(r: &tokio_postgres::Row) -> EventRow {
    EventRow {
        id: r.get("id"),
        stream: r.get("stream"),
        kind: r.get("type"),
        payload: r.get("payload"),
        run_id: r.get("run_id"),
        created_at: r.get("created_at"),
        published_at: r.get("published_at"),
        attempts: r.get("attempts"),
        last_error: r.get("last_error"),
    }
}

/// Inserts events in the caller's transaction; a run's event of a type already enqueued is
/// left as it is.
pub(super) async fn insert_events(
    tx: &Transaction<'_>,
    events: &[NewEvent],
) -> Result<(), StoreError> {
    for e in events {
        tx.execute(
            "INSERT INTO event_outbox (stream, type, payload, run_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&e.stream, &e.kind, &e.payload, &e.run_id],
        )
        .await?;
    }
    Ok(())
}

impl Store {
    /// Enqueues events on their own (an answer to a deploy request that started no run).
    #[tracing::instrument(skip(self, events), fields(events = events.len()))]
    pub async fn enqueue_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        insert_events(&tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Locks up to `limit` unpublished rows (of `run` only, when given), oldest first, and hands
    /// them one by one to `send`; marks those sent published and, at the first failure, records
    /// it on that row and stops, all in the same transaction.
    #[tracing::instrument(skip(self, send))]
    pub async fn publish_events<F, Fut>(
        &self,
        run: Option<Uuid>,
        limit: i64,
        mut send: F,
    ) -> Result<PublishPass, StoreError>
    where
        F: FnMut(EventRow) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM event_outbox
                     WHERE published_at IS NULL AND ($1::uuid IS NULL OR run_id = $1)
                     ORDER BY id LIMIT $2
                     FOR UPDATE SKIP LOCKED"
                ),
                &[&run, &limit],
            )
            .await?;
        let mut pass = PublishPass {
            more: i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit,
            ..PublishPass::default()
        };
        let mut sent: Vec<i64> = Vec::new();
        for row in rows.iter().map(event_row) {
            let (id, attempts) = (row.id, row.attempts);
            match send(row).await {
                Ok(()) => sent.push(id),
                Err(error) => {
                    tx.execute(
                        "UPDATE event_outbox SET attempts = attempts + 1, last_error = $2
                         WHERE id = $1",
                        &[&id, &error],
                    )
                    .await?;
                    pass.failed = Some((id, attempts + 1, error));
                    pass.more = true;
                    break;
                }
            }
        }
        if !sent.is_empty() {
            tx.execute(
                "UPDATE event_outbox SET published_at = now() WHERE id = ANY($1)",
                &[&sent],
            )
            .await?;
        }
        tx.commit().await?;
        pass.published = sent.len();
        Ok(pass)
    }

    /// Deletes rows published more than `age` ago; answers how many.
    #[tracing::instrument(skip(self))]
    pub async fn delete_published_events(&self, age: Duration) -> Result<u64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .execute(
                "DELETE FROM event_outbox
                 WHERE published_at < now() - make_interval(secs => $1)",
                &[&age.as_secs_f64()],
            )
            .await?)
    }

    /// A run's events with their publishing state, in order.
    pub async fn run_events(&self, run_id: Uuid) -> Result<Vec<EventRow>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM event_outbox WHERE run_id = $1 ORDER BY id"),
                &[&run_id],
            )
            .await?;
        Ok(rows.iter().map(event_row).collect())
    }
}

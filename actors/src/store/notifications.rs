//! notification_channel (secrets sealed at rest), the notification_outbox with its per-run marker
//! `notification_run`, and notification_attempt, the record of every delivery attempt.
//!
//! A delivery holds its outbox row locked (`FOR UPDATE SKIP LOCKED`) in a transaction for the
//! length of the attempt and records the outcome in that transaction: two instances never send
//! the same notice at once, and a process killed mid-attempt releases the row at once (Postgres
//! rolls the transaction back when the connection drops) for the next instance to send.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{NewEvent, Store, StoreError};
use crate::model::channel::secret_fields;
use crate::model::ChannelKind;

/// A channel as stored, its secrets decrypted (the API masks them before answering).
#[derive(Debug, Clone)]
pub struct ChannelRow {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub kind: ChannelKind,
    pub config: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A notice to enqueue for one channel.
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub channel_id: Uuid,
    pub event: String,
    pub payload: serde_json::Value,
}

/// An outbox row locked for one delivery attempt.
#[derive(Debug, Clone)]
pub struct ClaimedNotice {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub kind: ChannelKind,
    /// Decrypted; `Err` says why it could not be.
    pub config: Result<serde_json::Value, String>,
    pub run_id: Option<Uuid>,
    pub event: String,
    pub payload: serde_json::Value,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Failed; try again at this time.
    Retry(DateTime<Utc>),
    /// Failed for good (a final error, or the last attempt).
    Failed,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry(_) => "retry",
            Self::Failed => "failed",
        }
    }
}

/// One attempt's outcome, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub outbox_id: Uuid,
    pub channel_id: Uuid,
    pub kind: ChannelKind,
    pub attempt: u32,
    pub result: AttemptResult,
    /// The HTTP status, or the SMTP reply code.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
}

/// An outbox row, for the API and tests.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub run_id: Option<Uuid>,
    pub event: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

fn channel_row(row: &Row) -> Result<(ChannelRow, serde_json::Value), StoreError> {
    let kind: String = row.get("kind");
    let sealed: serde_json::Value = row.get("config");
    Ok((
        ChannelRow {
            id: row.get("id"),
            organization_id: row.get("organization_id"),
            kind: ChannelKind::parse(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("channel kind {kind}")))?,
            config: serde_json::Value::Null,
            created_at: row.get("created_at"),
        },
        sealed,
    ))
}

impl Store {
    /// Inserts a channel; `config` holds secrets in clear and is sealed here.
    #[tracing::instrument(skip(self, config))]
    pub async fn insert_channel(
        &self,
        organization_id: Uuid,
        kind: ChannelKind,
        mut config: serde_json::Value,
    ) -> Result<Uuid, StoreError> {
        self.secrets().seal_fields(&mut config, secret_fields(kind));
        let client = self.pool().get().await?;
        let row = client
            .query_one(
                "INSERT INTO notification_channel (organization_id, kind, config)
                 VALUES ($1, $2, $3) RETURNING id",
                &[&organization_id, &kind.as_str(), &config],
            )
            .await?;
        Ok(row.get(0))
    }

    /// The organization's channels, oldest first, secrets decrypted.
    #[tracing::instrument(skip(self))]
    pub async fn list_channels(
        &self,
        organization_id: Uuid,
    ) -> Result<Vec<ChannelRow>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, organization_id, kind, config, created_at FROM notification_channel
                 WHERE organization_id = $1 ORDER BY created_at, id",
                &[&organization_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let (mut channel, mut config) = channel_row(r)?;
                self.secrets()
                    .open_fields(&mut config, secret_fields(channel.kind))?;
                channel.config = config;
                Ok(channel)
            })
            .collect()
    }

    /// Deletes a channel of the organization (its undelivered notices go with it); false if none.
    #[tracing::instrument(skip(self))]
    pub async fn delete_channel(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.pool().get().await?;
        let n = client
            .execute(
                "DELETE FROM notification_channel WHERE id = $1 AND organization_id = $2",
                &[&id, &organization_id],
            )
            .await?;
        Ok(n > 0)
    }

    /// The ids of the organization's channels.
    pub async fn channel_ids(&self, organization_id: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .query(
                "SELECT id FROM notification_channel WHERE organization_id = $1 ORDER BY created_at, id",
                &[&organization_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Enqueues a run's notices and its events (`event_outbox`), with the run's marker, in one
    /// transaction. False when the run's outbox was already written (by its end or by the
    /// recovery sweep): nothing is added.
    #[tracing::instrument(skip(self, notices, events), fields(notices = notices.len(), events = events.len()))]
    pub async fn enqueue_run_outbox(
        &self,
        run_id: Uuid,
        notices: &[NewNotice],
        events: &[NewEvent],
    ) -> Result<bool, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let count = i32::try_from(notices.len()).unwrap_or(i32::MAX);
        let marked = tx
            .execute(
                "INSERT INTO notification_run (run_id, notices) VALUES ($1, $2)
                 ON CONFLICT (run_id) DO NOTHING",
                &[&run_id, &count],
            )
            .await?;
        if marked == 0 {
            return Ok(false);
        }
        for n in notices {
            tx.execute(
                "INSERT INTO notification_outbox (channel_id, run_id, event, payload)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&n.channel_id, &run_id, &n.event, &n.payload],
            )
            .await?;
        }
        super::events::insert_events(&tx, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Enqueues notices that belong to no run (overdue jobs).
    #[tracing::instrument(skip(self, notices), fields(notices = notices.len()))]
    pub async fn enqueue_notices(&self, notices: &[NewNotice]) -> Result<(), StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        for n in notices {
            tx.execute(
                "INSERT INTO notification_outbox (channel_id, event, payload) VALUES ($1, $2, $3)",
                &[&n.channel_id, &n.event, &n.payload],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Runs created within `window` whose rows have all settled more than `grace` ago and whose
    /// notices were never enqueued (the process died between the run's end and the enqueue).
    /// Only runs newer than the first marker count, so history from before notifications is left.
    /// Runs recorded in table `run` (they have no rows) count once finished more than `grace` ago.
    #[tracing::instrument(skip(self))]
    pub async fn runs_missing_notices(
        &self,
        grace: Duration,
        window: Duration,
    ) -> Result<Vec<(Uuid, Option<Uuid>)>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT b.run_id, (array_agg(b.job_id))[1] AS job_id
                 FROM backup b
                 WHERE b.created_at > now() - make_interval(secs => $2)
                   AND b.created_at >= (SELECT coalesce(min(created_at), 'infinity')
                                        FROM notification_run)
                 GROUP BY b.run_id
                 HAVING bool_and(b.status NOT IN ('pending', 'running'))
                    AND max(b.finished_at) < now() - make_interval(secs => $1)
                    AND NOT EXISTS (SELECT 1 FROM notification_run n WHERE n.run_id = b.run_id)
                 UNION ALL
                 SELECT r.id, r.job_id
                 FROM run r
                 WHERE r.finished_at > now() - make_interval(secs => $2)
                   AND r.finished_at < now() - make_interval(secs => $1)
                   AND NOT EXISTS (SELECT 1 FROM notification_run n WHERE n.run_id = r.id)
                 LIMIT 100",
                &[&grace.as_secs_f64(), &window.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Locks the next due notice (of `run` only, when given), hands it to `send`, and records the
    /// attempt's outcome in the same transaction. `None` when nothing is due.
    #[tracing::instrument(skip(self, send))]
    pub async fn deliver_next<F, Fut>(
        &self,
        run: Option<Uuid>,
        send: F,
    ) -> Result<Option<AttemptRecord>, StoreError>
    where
        F: FnOnce(ClaimedNotice) -> Fut,
        Fut: Future<Output = (AttemptResult, Option<u16>, Option<String>)>,
    {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "SELECT o.id, o.channel_id, o.run_id, o.event, o.payload, o.attempts,
                        c.kind, c.config
                 FROM notification_outbox o JOIN notification_channel c ON c.id = o.channel_id
                 WHERE o.status = 'pending' AND o.next_attempt_at <= now()
                   AND ($1::uuid IS NULL OR o.run_id = $1)
                 ORDER BY o.next_attempt_at, o.created_at
                 LIMIT 1
                 FOR UPDATE OF o SKIP LOCKED",
                &[&run],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let kind_text: String = row.get("kind");
        let kind = ChannelKind::parse(&kind_text)
            .ok_or_else(|| StoreError::Corrupt(format!("channel kind {kind_text}")))?;
        let mut config: serde_json::Value = row.get("config");
        let config = self
            .secrets()
            .open_fields(&mut config, secret_fields(kind))
            .map(|()| config)
            .map_err(|e| format!("the channel's config: {e}"));
        let attempts: i32 = row.get("attempts");
        let claimed = ClaimedNotice {
            id: row.get("id"),
            channel_id: row.get("channel_id"),
            kind,
            config,
            run_id: row.get("run_id"),
            event: row.get("event"),
            payload: row.get("payload"),
            attempts: u32::try_from(attempts).unwrap_or(0),
        };
        let (outbox_id, channel_id, attempt) =
            (claimed.id, claimed.channel_id, claimed.attempts + 1);
        let started = std::time::Instant::now();
        let (result, status_code, error) = send(claimed).await;
        let duration = started.elapsed();
        let (status, next_at) = match result {
            AttemptResult::Delivered => ("delivered", None),
            AttemptResult::Retry(at) => ("pending", Some(at)),
            AttemptResult::Failed => ("failed", None),
        };
        tx.execute(
            "UPDATE notification_outbox SET attempts = attempts + 1, status = $2,
                next_attempt_at = coalesce($3, next_attempt_at), last_error = $4,
                delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
             WHERE id = $1",
            &[&outbox_id, &status, &next_at, &error],
        )
        .await?;
        let attempt_no = i32::try_from(attempt).unwrap_or(i32::MAX);
        let code = status_code.map(i32::from);
        let millis = i32::try_from(duration.as_millis()).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO notification_attempt (outbox_id, attempt, outcome, status_code, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&outbox_id, &attempt_no, &result.as_str(), &code, &error, &millis],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(AttemptRecord {
            outbox_id,
            channel_id,
            kind,
            attempt,
            result,
            status_code,
            error,
            duration,
        }))
    }

    /// A run's notices with their delivery state.
    pub async fn run_notices(&self, run_id: Uuid) -> Result<Vec<OutboxRow>, StoreError> {
        let client = self.pool().get().await?;
        let rows = client
            .query(
                "SELECT id, channel_id, run_id, event, payload, status, attempts, last_error,
                        delivered_at
                 FROM notification_outbox WHERE run_id = $1 ORDER BY created_at, id",
                &[&run_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                id: r.get("id"),
                channel_id: r.get("channel_id"),
                run_id: r.get("run_id"),
                event: r.get("event"),
                payload: r.get("payload"),
                status: r.get("status"),
                attempts: r.get("attempts"),
                last_error: r.get("last_error"),
                delivered_at: r.get("delivered_at"),
            })
            .collect())
    }
}

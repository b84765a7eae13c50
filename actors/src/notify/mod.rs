//! Notifications: what to send after a run (or for an overdue job), to which channels, and how
//! one notice is delivered and its outcome recorded. The `Notifier` actor (notifier.rs) drives the
//! delivery loop; this module is its policy and its senders.
//!
//! Durability: a run's notices are written to `notification_outbox` with the run's marker in one
//! transaction when the run ends; a sweep enqueues those of any settled run that has no marker
//! (the process died in between). Delivery is at-least-once per (run, channel) and, except when
//! the database fails between a receiver's answer and our record of it, exactly once; receivers
//! can deduplicate on the `X-Vardo-Delivery` header (the outbox id).

pub mod address;
pub mod email;
pub mod slack;
pub mod webhook;

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::engine::Engine;
use crate::events_out::{self, EventsError, RunEnd};
use crate::model::ChannelKind;
use crate::notice::Notice;
pub use crate::settings::NotifySettings;
use crate::store::{AttemptRecord, AttemptResult, ClaimedNotice, NewNotice, StoreError};

/// Why one delivery attempt failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connection refused or reset, DNS failure, timeout: retried.
    #[error("network: {0}")]
    Network(String),
    /// Retried on 429 and 5xx, final on other statuses.
    #[error("the receiver answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { status: u16, body: String },
    /// Retried unless the server's reply is permanent (5xx reply codes).
    #[error("SMTP: {message}")]
    Smtp {
        permanent: bool,
        code: Option<u16>,
        message: String,
    },
    /// The channel or the process is configured so that sending cannot work: final.
    #[error("{0}")]
    Config(String),
    /// The URL or its address is not allowed: final.
    #[error("refused: {0}")]
    Refused(String),
}

impl SendError {
    pub fn retryable(&self) -> bool {
        match self {
            Self::Network(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Smtp { permanent, .. } => !permanent,
            Self::Config(_) | Self::Refused(_) => false,
        }
    }

    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Smtp { code, .. } => *code,
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("notification senders: {0}")]
    Senders(#[from] SendError),
    #[error("a notice could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the run's events: {0}")]
    Events(#[from] EventsError),
}

/// Checks a channel's config for its kind, as the API receives it: email `to` is a non-empty
/// list of addresses; webhook and Slack `url` is http(s) and, unless `allow_private`, not a
/// private or loopback address; a webhook `secret` is optional. The error names the field.
pub fn validate_channel(
    kind: ChannelKind,
    config: &serde_json::Value,
    allow_private: bool,
) -> Result<(), (String, String)> {
    let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
    let Some(map) = config.as_object() else {
        return err("config", "must be an object");
    };
    let allowed: &[&str] = match kind {
        ChannelKind::Email => &["to"],
        ChannelKind::Webhook => &["url", "secret"],
        ChannelKind::Slack => &["url"],
    };
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err((
            unknown.clone(),
            format!("is not a field of a {} channel", kind.as_str()),
        ));
    }
    match kind {
        ChannelKind::Email => {
            let Some(list) = map.get("to").and_then(|v| v.as_array()) else {
                return err("to", "is required: a list of email addresses");
            };
            if list.is_empty() {
                return err("to", "must name at least one address");
            }
            if list.len() > 50 {
                return err("to", "may name at most 50 addresses");
            }
            for (i, item) in list.iter().enumerate() {
                let field = format!("to[{i}]");
                let Some(address) = item.as_str() else {
                    return Err((field, "must be a string".to_owned()));
                };
                if address.parse::<lettre::Address>().is_err() {
                    return Err((field, format!("{address:?} is not an email address")));
                }
            }
        }
        ChannelKind::Webhook | ChannelKind::Slack => {
            let Some(url) = map.get("url").and_then(|v| v.as_str()) else {
                return err("url", "is required: an http(s) URL");
            };
            address::check_url(url, allow_private).map_err(|m| ("url".to_owned(), m))?;
            match map.get("secret") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 512 => {}
                Some(serde_json::Value::String(_)) => {
                    return err("secret", "must be 1 to 512 characters");
                }
                Some(_) => return err("secret", "must be a string"),
            }
        }
    }
    Ok(())
}

/// The senders of every channel kind, built once per process (SMTP and HTTP connection pools).
#[derive(Debug)]
pub struct Senders {
    email: email::EmailSender,
    http: webhook::HttpSender,
    settings: NotifySettings,
}

impl Senders {
    /// Must run inside the Tokio runtime (the SMTP pool starts a task).
    pub fn new(settings: &NotifySettings) -> Result<Self, SendError> {
        Ok(Self {
            email: email::EmailSender::new(settings.smtp_url.as_ref(), &settings.smtp_from)?,
            http: webhook::HttpSender::new(settings.allow_private_addresses)?,
            settings: settings.clone(),
        })
    }

    /// Sends one claimed notice to its channel; answers the status code on success.
    async fn send(&self, claimed: &ClaimedNotice) -> Result<Option<u16>, SendError> {
        let config = claimed
            .config
            .as_ref()
            .map_err(|e| SendError::Config(e.clone()))?;
        let notice: Notice = serde_json::from_value(claimed.payload.clone())
            .map_err(|e| SendError::Config(format!("the stored notice is unreadable: {e}")))?;
        let field = |name: &str| config.get(name).and_then(|v| v.as_str());
        match claimed.kind {
            ChannelKind::Email => {
                let to: Vec<String> = config
                    .get("to")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                self.email.send(&notice, &to).await.map(|()| Some(250))
            }
            ChannelKind::Webhook | ChannelKind::Slack => {
                let url = field("url")
                    .ok_or_else(|| SendError::Config("the channel has no url".into()))?;
                let body = if claimed.kind == ChannelKind::Slack {
                    serde_json::to_vec(&slack::body(&notice))
                } else {
                    serde_json::to_vec(&notice)
                }
                .map_err(|e| SendError::Config(format!("encoding the body: {e}")))?;
                let secret = if claimed.kind == ChannelKind::Webhook {
                    field("secret").filter(|s| !s.is_empty())
                } else {
                    None
                };
                self.http
                    .post(webhook::Post {
                        url,
                        body,
                        secret,
                        event: &claimed.event,
                        delivery_id: claimed.id.to_string(),
                    })
                    .await
                    .map(Some)
            }
        }
    }

    /// One attempt, classified: delivered, retry later, or failed for good.
    async fn attempt(
        &self,
        claimed: ClaimedNotice,
    ) -> (AttemptResult, Option<u16>, Option<String>) {
        let attempt = claimed.attempts + 1;
        // The HTTP and SMTP limits are 10 s; this bounds anything else (a stuck DNS lookup).
        let outcome = tokio::time::timeout(Duration::from_secs(30), self.send(&claimed))
            .await
            .unwrap_or_else(|_| Err(SendError::Network("no answer within 30 s".to_owned())));
        match outcome {
            Ok(code) => (AttemptResult::Delivered, code, None),
            Err(e) => {
                let result = if e.retryable() && attempt < self.settings.max_attempts {
                    let wait = chrono::Duration::from_std(self.settings.backoff(attempt))
                        .unwrap_or(chrono::Duration::MAX);
                    AttemptResult::Retry(Utc::now() + wait)
                } else {
                    AttemptResult::Failed
                };
                (result, e.status_code(), Some(e.to_string()))
            }
        }
    }
}

/// Delivers the next due notice (of `run` only, when given); `None` when nothing is due.
#[tracing::instrument(skip(engine, senders))]
pub async fn deliver_one(
    engine: &Engine,
    senders: &Senders,
    run: Option<Uuid>,
) -> Result<Option<AttemptRecord>, StoreError> {
    let record = engine
        .store()
        .deliver_next(run, |claimed| senders.attempt(claimed))
        .await?;
    if let Some(r) = &record {
        let error = r.error.as_deref().unwrap_or("");
        let outcome = match r.result {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Retry(_) => "retry",
            AttemptResult::Failed => "failed",
        };
        engine.metrics().record_delivery(r.kind.as_str(), outcome);
        match r.result {
            AttemptResult::Delivered => tracing::info!(
                outbox_id = %r.outbox_id, channel_id = %r.channel_id, kind = r.kind.as_str(),
                attempt = r.attempt, "notice delivered"),
            AttemptResult::Retry(at) => tracing::warn!(
                outbox_id = %r.outbox_id, channel_id = %r.channel_id, kind = r.kind.as_str(),
                attempt = r.attempt, %at, error, "notice not delivered; will retry"),
            AttemptResult::Failed => tracing::error!(
                outbox_id = %r.outbox_id, channel_id = %r.channel_id, kind = r.kind.as_str(),
                attempt = r.attempt, error, "notice not delivered; giving up"),
        }
    }
    Ok(record)
}

/// What `deliver_run` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub delivered: usize,
    /// Failed once, retried later by a running server's delivery loop.
    pub retrying: usize,
    pub failed: usize,
}

/// One attempt at each of a run's due notices, a few at once (the CLI's `backup` command, before
/// it exits). Notices that fail with a retryable error stay pending for a server's loop.
pub async fn deliver_run(engine: &Engine, run_id: Uuid) -> Result<Tally, NotifyError> {
    const AT_ONCE: usize = 4;
    let senders = Senders::new(&engine.settings().notifications)?;
    let worker = || async {
        let mut tally = Tally::default();
        while let Some(record) = deliver_one(engine, &senders, Some(run_id)).await? {
            match record.result {
                AttemptResult::Delivered => tally.delivered += 1,
                AttemptResult::Retry(_) => tally.retrying += 1,
                AttemptResult::Failed => tally.failed += 1,
            }
        }
        Ok::<_, NotifyError>(tally)
    };
    let mut total = Tally::default();
    for tally in futures::future::join_all((0..AT_ONCE).map(|_| worker())).await {
        let tally = tally?;
        total.delivered += tally.delivered;
        total.retrying += tally.retrying;
        total.failed += tally.failed;
    }
    Ok(total)
}

/// What `enqueue_run` added to the outboxes (nothing when the run's were written already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Enqueued {
    pub notices: usize,
    pub events: usize,
}

/// Enqueues a run's notices per its job's flags, one per channel of the job's organization, and,
/// when `events.publish` is on, its events for other systems (events_out.rs), with the run's
/// marker in one transaction; idempotent per run. Wakes the events publisher.
#[tracing::instrument(skip(engine, end), fields(run_id = %end.run_id, rows = end.rows.len()))]
pub async fn enqueue_run(engine: &Engine, end: &RunEnd<'_>) -> Result<Enqueued, NotifyError> {
    let publish = engine.settings().events.publish;
    if end.rows.is_empty() && end.failure.is_none() && !(publish && end.request_id.is_some()) {
        // Rows that could not be read: the sweep enqueues this run's notices once they can be.
        return Ok(Enqueued::default());
    }
    let store = engine.store();
    let job = match store.job(end.job_id).await {
        Ok(job) => job,
        Err(StoreError::NotFound { .. }) => {
            store.enqueue_run_outbox(end.run_id, &[], &[]).await?;
            return Ok(Enqueued::default());
        }
        Err(e) => return Err(e.into()),
    };
    let notices = match crate::notice::run_notice(&job, end.rows, end.failure) {
        Some(notice) => for_channels(engine, &notice).await?,
        None => Vec::new(),
    };
    let events = if publish {
        events_out::run_events(engine, &job, end).await?
    } else {
        Vec::new()
    };
    if !store
        .enqueue_run_outbox(end.run_id, &notices, &events)
        .await?
    {
        return Ok(Enqueued::default());
    }
    if !events.is_empty() {
        engine.events_enqueued();
    }
    Ok(Enqueued {
        notices: notices.len(),
        events: events.len(),
    })
}

/// Enqueues one "overdue" notice for the job to each channel of its organization (when the job
/// notifies on failure). The scheduler calls it once per overdue episode.
#[tracing::instrument(skip(engine))]
pub async fn enqueue_overdue(engine: &Engine, job_id: Uuid) -> Result<usize, NotifyError> {
    let job = engine.store().job(job_id).await?;
    if !job.notify_on_failure {
        return Ok(0);
    }
    let notices = for_channels(engine, &crate::notice::overdue_notice(&job)).await?;
    engine.store().enqueue_notices(&notices).await?;
    Ok(notices.len())
}

/// Enqueues a "drill failed" notice for the drill's job to each channel of its organization (when
/// the job notifies on failure).
#[tracing::instrument(skip(engine))]
pub async fn enqueue_drill_failed(
    engine: &Engine,
    drill_id: Uuid,
    why: &str,
) -> Result<usize, NotifyError> {
    let drill = engine.store().drill(drill_id).await?;
    let job = engine.store().job(drill.job_id).await?;
    if !job.notify_on_failure {
        return Ok(0);
    }
    let notices = for_channels(
        engine,
        &crate::notice::drill_failed_notice(&job, &drill, why),
    )
    .await?;
    engine.store().enqueue_notices(&notices).await?;
    Ok(notices.len())
}

async fn for_channels(engine: &Engine, notice: &Notice) -> Result<Vec<NewNotice>, NotifyError> {
    let payload = serde_json::to_value(notice)?;
    Ok(engine
        .store()
        .channel_ids(notice.organization_id)
        .await?
        .into_iter()
        .map(|channel_id| NewNotice {
            channel_id,
            event: notice.kind.as_str().to_owned(),
            payload: payload.clone(),
        })
        .collect())
}

/// How long a settled run may wait for its own end to enqueue its notices before the sweep does.
pub const SWEEP_GRACE: Duration = Duration::from_secs(60);
/// How far back the sweep looks.
pub const SWEEP_WINDOW: Duration = Duration::from_secs(2 * 24 * 3600);

/// Enqueues the notices and events of settled runs that have none (their process died before it
/// could); answers how many notices.
#[tracing::instrument(skip(engine))]
pub async fn enqueue_missed(engine: &Engine) -> Result<usize, NotifyError> {
    let store = engine.store();
    let mut enqueued = 0;
    for (run_id, job_id) in store
        .runs_missing_notices(SWEEP_GRACE, SWEEP_WINDOW)
        .await?
    {
        let n = match job_id {
            Some(job_id) => {
                let rows = store.run_backups(run_id).await?;
                let request_id = store.deploy_request_id(run_id).await?;
                // A run without rows is one recorded in table `run`, with why.
                let failure = match rows.is_empty() {
                    true => store.run_record(run_id).await?.map(|r| r.failure()),
                    false => None,
                };
                let end = RunEnd {
                    run_id,
                    job_id,
                    request_id: request_id.as_deref(),
                    failure: failure.as_ref(),
                    rows: &rows,
                };
                enqueue_run(engine, &end).await?
            }
            None => {
                store.enqueue_run_outbox(run_id, &[], &[]).await?;
                Enqueued::default()
            }
        };
        tracing::warn!(%run_id, notices = n.notices, events = n.events,
            "enqueued the notices and events of a run whose process ended first");
        enqueued += n.notices;
    }
    Ok(enqueued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn channel_configs_are_checked_field_by_field() {
        let ok = |k, v: serde_json::Value| validate_channel(k, &v, false).is_ok();
        let refused =
            |k, v: serde_json::Value| validate_channel(k, &v, false).expect_err("refused").0;
        assert!(ok(ChannelKind::Email, json!({"to": ["ops@example.com"]})));
        assert_eq!(refused(ChannelKind::Email, json!({"to": []})), "to");
        assert_eq!(
            refused(
                ChannelKind::Email,
                json!({"to": ["ops@example.com", "nope"]})
            ),
            "to[1]"
        );
        assert_eq!(refused(ChannelKind::Email, json!({})), "to");
        assert!(ok(
            ChannelKind::Webhook,
            json!({"url": "https://example.com/h", "secret": "s"})
        ));
        assert!(ok(
            ChannelKind::Webhook,
            json!({"url": "https://example.com/h"})
        ));
        assert_eq!(
            refused(ChannelKind::Webhook, json!({"url": "ftp://example.com"})),
            "url"
        );
        assert_eq!(
            refused(ChannelKind::Slack, json!({"url": "http://10.0.0.5/x"})),
            "url"
        );
        assert!(validate_channel(
            ChannelKind::Slack,
            &json!({"url": "http://10.0.0.5/x"}),
            true
        )
        .is_ok());
        assert_eq!(
            refused(
                ChannelKind::Slack,
                json!({"url": "https://e.com", "secret": "x"})
            ),
            "secret"
        );
        assert_eq!(
            refused(
                ChannelKind::Webhook,
                json!({"url": "https://e.com", "secret": 3})
            ),
            "secret"
        );
        assert_eq!(refused(ChannelKind::Webhook, json!("x")), "config");
    }

    #[test]
    fn retries_follow_status_and_kind() {
        let status = |s| SendError::Status {
            status: s,
            body: String::new(),
        };
        assert!(status(500).retryable() && status(503).retryable() && status(429).retryable());
        assert!(!status(400).retryable() && !status(404).retryable() && !status(410).retryable());
        assert!(SendError::Network("reset".into()).retryable());
        assert!(!SendError::Refused("x".into()).retryable());
        let s = NotifySettings::default();
        let waits: Vec<u64> = (1..s.max_attempts)
            .map(|n| s.backoff(n).as_secs())
            .collect();
        assert_eq!(
            waits,
            [5, 15, 45],
            "at least 3 attempts over about a minute"
        );
    }
}

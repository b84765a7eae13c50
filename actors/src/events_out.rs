//! Events for other systems on the Redis Stream `vardo:backup-events` (configurable): every run's
//! end as `backup.succeeded` / `backup.failed`, with the webhook notification's body; and, for a
//! run the deploy pipeline asked for, `backup.completed` with its `requestId`, so the pipeline can
//! wait for a pre-deploy backup. Each stream entry has the fields `type`, `payload` (JSON) and,
//! when there is one, `runId` (to deduplicate on).
//!
//! Durability: this module only decides what the events are; they are written to `event_outbox`
//! in Postgres — a run's in the transaction of its `notification_run` marker, so the notifier's
//! sweep covers a run whose process died before it wrote them — and the publisher
//! (events_publisher.rs) sends them, retrying while Redis is away. Delivery is at least once: a
//! process that dies between a send and its record sends the event again, so consumers
//! deduplicate on `runId` and `type`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use serde::Serialize;
use uuid::Uuid;

use crate::engine::Engine;
use crate::messages::RunFinished;
use crate::model::{Backup, Job, RunFailure, RunFailureReason, Status, VolumeKind};
use crate::notice::{run_notice, Notice, NoticeKind};
use crate::store::{EventRow, NewEvent, StoreError};

/// Approximate length the output streams are trimmed to (`XADD MAXLEN ~`).
const STREAM_MAXLEN: u64 = 10_000;
/// The longest one `XADD` may take (a Redis that accepts connections but does not answer).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

pub const COMPLETED: &str = "backup.completed";

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("redis: {0}")]
    Redis(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How a requested run (or request) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every volume backed up.
    Success,
    /// At least one volume failed.
    Failed,
    /// Nothing was attempted; `reason` says why.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRef {
    pub id: Uuid,
    pub name: String,
}

/// One volume of a requested run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeResult {
    pub backup_id: Uuid,
    pub app_id: String,
    pub app_name: String,
    pub volume_name: String,
    pub kind: VolumeKind,
    pub status: Status,
    pub size_bytes: Option<i64>,
    pub storage_path: Option<String>,
    pub checksum: Option<String>,
    pub error: Option<String>,
}

/// The body of `backup.completed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Completed {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub request_id: String,
    /// None when the request started no run (`status` is then `skipped`).
    pub run_id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub org_slug: String,
    pub job: Option<JobRef>,
    pub status: Outcome,
    pub reason: Option<String>,
    /// How many runs the request started: a waiter expects that many `backup.completed`.
    pub request_runs: i64,
    pub total_size_bytes: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub volumes: Vec<VolumeResult>,
}

/// A run's end as the outbox needs it: from `RunFinished`, or read back from the database for a
/// run whose process died before it enqueued anything.
#[derive(Debug, Clone, Copy)]
pub struct RunEnd<'a> {
    pub run_id: Uuid,
    pub job_id: Uuid,
    /// The deploy pipeline's `requestId`, for a run it asked for.
    pub request_id: Option<&'a str>,
    /// Why the run backed up nothing, when it recorded no row.
    pub failure: Option<&'a RunFailure>,
    pub rows: &'a [Backup],
}

impl<'a> From<&'a RunFinished> for RunEnd<'a> {
    fn from(f: &'a RunFinished) -> Self {
        Self {
            run_id: f.run_id,
            job_id: f.job_id,
            request_id: f.request_id.as_deref(),
            failure: f.failure.as_ref(),
            rows: &f.rows,
        }
    }
}

/// The events a run's end means to other systems: `backup.succeeded` / `backup.failed` for every
/// run (`backup.failed` for one that backed up nothing), and `backup.completed` for a requested
/// run, in that order.
#[tracing::instrument(skip(engine, job, end), fields(run_id = %end.run_id, job_id = %end.job_id))]
pub async fn run_events(
    engine: &Engine,
    job: &Job,
    end: &RunEnd<'_>,
) -> Result<Vec<NewEvent>, EventsError> {
    let store = engine.store();
    let mut events = Vec::new();
    let notice = result_notice(job, end.rows, end.failure);
    if let Some(notice) = &notice {
        events.push(event(
            engine,
            notice.kind.as_str(),
            serde_json::to_value(notice)?,
            Some(end.run_id),
        ));
    }
    if let Some(request_id) = end.request_id {
        let org = store.organization(job.organization_id).await?;
        let request_runs = store.deploy_request_runs(org.id, request_id).await?;
        // The notice lists the rows in their order; it carries each failed volume's reason.
        let errors: Vec<Option<String>> = notice
            .as_ref()
            .map(|n| n.volumes.iter().map(|v| v.error.clone()).collect())
            .unwrap_or_default();
        let volumes: Vec<VolumeResult> = end
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| volume_result(row, errors.get(i).cloned().flatten()))
            .collect();
        let (status, reason) = match (end.failure, notice.as_ref().map(|n| n.kind)) {
            // Nothing to back up here is the pipeline's "skipped": no backup was asked of it.
            (Some(f), _)
                if matches!(
                    f.reason,
                    RunFailureReason::NoTarget | RunFailureReason::NoVolumes
                ) =>
            {
                (Outcome::Skipped, Some(f.message.clone()))
            }
            (Some(f), _) => (Outcome::Failed, Some(f.message.clone())),
            (None, Some(NoticeKind::Succeeded)) => (Outcome::Success, None),
            (None, Some(_)) => (Outcome::Failed, None),
            (None, None) => (
                Outcome::Failed,
                Some("the run ended before it recorded any volume".to_owned()),
            ),
        };
        let completed = Completed {
            kind: COMPLETED,
            request_id: request_id.to_owned(),
            run_id: Some(end.run_id),
            organization_id: Some(org.id),
            org_slug: org.slug,
            job: Some(JobRef {
                id: job.id,
                name: job.name.clone(),
            }),
            status,
            reason,
            request_runs,
            total_size_bytes: volumes
                .iter()
                .filter(|v| matches!(v.status, Status::Success | Status::Pruned))
                .filter_map(|v| v.size_bytes)
                .sum(),
            started_at: end
                .rows
                .iter()
                .filter_map(|r| r.started_at.or(Some(r.created_at)))
                .min(),
            finished_at: end.rows.iter().filter_map(|r| r.finished_at).max(),
            volumes,
        };
        events.push(completed_event(engine, &completed)?);
    }
    Ok(events)
}

/// One `backup.completed` as an outbox event.
pub fn completed_event(engine: &Engine, completed: &Completed) -> Result<NewEvent, EventsError> {
    Ok(event(
        engine,
        COMPLETED,
        serde_json::to_value(completed)?,
        completed.run_id,
    ))
}

/// Enqueues one `backup.completed` that belongs to no run (a request that started none) and
/// wakes the publisher.
pub async fn enqueue_completed(engine: &Engine, completed: &Completed) -> Result<(), EventsError> {
    engine
        .store()
        .enqueue_events(&[completed_event(engine, completed)?])
        .await?;
    engine.events_enqueued();
    Ok(())
}

fn event(
    engine: &Engine,
    kind: &str,
    payload: serde_json::Value,
    run_id: Option<Uuid>,
) -> NewEvent {
    NewEvent {
        stream: engine.settings().events.backup_events_stream.clone(),
        kind: kind.to_owned(),
        payload,
        run_id,
    }
}

/// The webhook body for a run's result, whatever the job's notification flags say.
pub fn result_notice(job: &Job, rows: &[Backup], failure: Option<&RunFailure>) -> Option<Notice> {
    let mut always = job.clone();
    always.notify_on_success = true;
    always.notify_on_failure = true;
    run_notice(&always, rows, failure)
}

fn volume_result(row: &Backup, error: Option<String>) -> VolumeResult {
    VolumeResult {
        backup_id: row.id,
        app_id: row.app_id.clone(),
        app_name: row.app_name.clone(),
        volume_name: row.volume_name.clone(),
        kind: row.volume_kind,
        status: row.status,
        size_bytes: row.size_bytes,
        storage_path: row.storage_path.clone(),
        checksum: row.checksum.clone(),
        error,
    }
}

/// The `XADD` of one outbox row: `XADD stream MAXLEN ~ n * type … payload … [runId …]`.
pub fn xadd_command(row: &EventRow) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&row.stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(STREAM_MAXLEN)
        .arg("*")
        .arg("type")
        .arg(&row.kind)
        .arg("payload")
        .arg(row.payload.to_string());
    if let Some(run_id) = row.run_id {
        cmd.arg("runId").arg(run_id.to_string());
    }
    cmd
}

/// Sends one outbox row to its stream, once; answers the entry's id.
pub async fn send(engine: &Engine, row: &EventRow) -> Result<String, EventsError> {
    let cmd = xadd_command(row);
    let attempt = async {
        let mut conn = engine
            .redis()
            .get()
            .await
            .map_err(|e| EventsError::Redis(e.to_string()))?;
        cmd.query_async::<String>(&mut conn)
            .await
            .map_err(|e| EventsError::Redis(e.to_string()))
    };
    tokio::time::timeout(SEND_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(EventsError::Redis("no answer within 10 s".to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<cursor>".to_owned(),
            })
            .collect()
    }

    fn row(run_id: Option<Uuid>) -> EventRow {
        EventRow {
            id: 7,
            stream: "vardo:backup-events".into(),
            kind: "backup.failed".into(),
            payload: serde_json::json!({"type": "backup.failed", "failedCount": 1}),
            run_id,
            created_at: Utc::now(),
            published_at: None,
            attempts: 0,
            last_error: None,
        }
    }

    #[test]
    fn an_outbox_row_becomes_a_trimmed_xadd_with_type_payload_and_run_id() {
        let run = Uuid::new_v4();
        let with_run = args(&xadd_command(&row(Some(run))));
        assert_eq!(
            with_run[..7],
            [
                "XADD",
                "vardo:backup-events",
                "MAXLEN",
                "~",
                "10000",
                "*",
                "type"
            ]
        );
        assert_eq!(with_run[7], "backup.failed");
        assert_eq!(with_run[8], "payload");
        let payload: serde_json::Value = serde_json::from_str(&with_run[9]).expect("JSON");
        assert_eq!(payload, row(None).payload);
        assert_eq!(with_run[10..], ["runId".to_owned(), run.to_string()]);
        let without = args(&xadd_command(&row(None)));
        assert_eq!(
            without.len(),
            10,
            "no runId field without a run: {without:?}"
        );
    }

    #[test]
    fn completion_wire_shape_is_camel_case_with_a_type() {
        let c = Completed {
            kind: COMPLETED,
            request_id: "r-1".into(),
            run_id: Some(Uuid::nil()),
            organization_id: Some(Uuid::nil()),
            org_slug: "acme".into(),
            job: Some(JobRef {
                id: Uuid::nil(),
                name: "Auto: shop".into(),
            }),
            status: Outcome::Success,
            reason: None,
            request_runs: 1,
            total_size_bytes: 10,
            started_at: None,
            finished_at: None,
            volumes: vec![VolumeResult {
                backup_id: Uuid::nil(),
                app_id: "a".into(),
                app_name: "shop".into(),
                volume_name: "data".into(),
                kind: VolumeKind::Postgres,
                status: Status::Success,
                size_bytes: Some(10),
                storage_path: Some("acme/shop/data/t.sql.gz".into()),
                checksum: None,
                error: None,
            }],
        };
        let v = serde_json::to_value(&c).expect("serializes");
        assert_eq!(v["type"], "backup.completed");
        assert_eq!(v["status"], "success");
        for key in [
            "requestId",
            "runId",
            "orgSlug",
            "job",
            "requestRuns",
            "totalSizeBytes",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["job"]["name"], "Auto: shop");
        let vol = &v["volumes"][0];
        assert_eq!(
            (&vol["volumeName"], &vol["kind"], &vol["storagePath"]),
            (
                &"data".into(),
                &"postgres".into(),
                &"acme/shop/data/t.sql.gz".into()
            )
        );
    }
}

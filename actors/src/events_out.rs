//! Events for other systems on the Redis Stream `vardo:backup-events` (configurable): every run's
//! end as `backup.succeeded` / `backup.failed`, with the webhook notification's body; and, for a
//! run the deploy pipeline asked for, `backup.completed` with its `requestId`, so the pipeline can
//! wait for a pre-deploy backup. Each stream entry has the fields `type`, `payload` (JSON) and,
//! when there is one, `runId` (to deduplicate on).
//!
//! Delivery is at most once per run end plus retries: a publish is tried three times within
//! about three seconds and then given up with an error in the log (the run's rows and
//! notifications are unaffected).

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use serde::Serialize;
use uuid::Uuid;

use crate::engine::Engine;
use crate::messages::RunFinished;
use crate::model::{Backup, Job, Status, VolumeKind};
use crate::notify::payload::{run_notice, Notice};
use crate::store::StoreError;

/// Approximate length the output streams are trimmed to (`XADD MAXLEN ~`).
const STREAM_MAXLEN: u64 = 10_000;
const ATTEMPTS: u32 = 3;

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

/// Publishes what a run's end means to other systems: `backup.succeeded` / `backup.failed` for
/// every run that attempted volumes, and `backup.completed` for a requested run.
#[tracing::instrument(skip(engine, finished), fields(run_id = %finished.run_id, job_id = %finished.job_id))]
pub async fn publish_run(engine: &Engine, finished: &RunFinished) -> Result<(), EventsError> {
    let store = engine.store();
    let job = store.job(finished.job_id).await?;
    let run_id = finished.run_id.to_string();
    let notice = result_notice(&job, &finished.rows);
    if let Some(notice) = &notice {
        let payload = serde_json::to_string(notice)?;
        publish(engine, notice.kind.as_str(), &payload, Some(&run_id)).await?;
    }
    if let Some(request_id) = &finished.request_id {
        let org = store.organization(job.organization_id).await?;
        let request_runs = store.deploy_request_runs(org.id, request_id).await?;
        // The notice lists the rows in their order; it carries each failed volume's reason.
        let errors: Vec<Option<String>> = notice
            .as_ref()
            .map(|n| n.volumes.iter().map(|v| v.error.clone()).collect())
            .unwrap_or_default();
        let volumes: Vec<VolumeResult> = finished
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| volume_result(row, errors.get(i).cloned().flatten()))
            .collect();
        let (status, reason) = match (&finished.skipped, notice.as_ref().map(|n| n.failed_count)) {
            (Some(why), _) => (Outcome::Skipped, Some(why.clone())),
            (None, Some(0)) => (Outcome::Success, None),
            (None, Some(_)) => (Outcome::Failed, None),
            (None, None) => (
                Outcome::Failed,
                Some("the run ended before it recorded any volume".to_owned()),
            ),
        };
        let completed = Completed {
            kind: COMPLETED,
            request_id: request_id.clone(),
            run_id: Some(finished.run_id),
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
            started_at: finished
                .rows
                .iter()
                .filter_map(|r| r.started_at.or(Some(r.created_at)))
                .min(),
            finished_at: finished.rows.iter().filter_map(|r| r.finished_at).max(),
            volumes,
        };
        publish_completed(engine, &completed).await?;
    }
    Ok(())
}

/// Publishes one `backup.completed` (also used for a request that started no run).
pub async fn publish_completed(engine: &Engine, completed: &Completed) -> Result<(), EventsError> {
    let payload = serde_json::to_string(completed)?;
    let run_id = completed.run_id.map(|r| r.to_string());
    publish(engine, COMPLETED, &payload, run_id.as_deref()).await
}

/// The webhook body for a run's result, whatever the job's notification flags say.
pub fn result_notice(job: &Job, rows: &[Backup]) -> Option<Notice> {
    let mut always = job.clone();
    always.notify_on_success = true;
    always.notify_on_failure = true;
    run_notice(&always, rows)
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

/// `XADD stream MAXLEN ~ n * type … payload … [runId …]`, tried a few times.
async fn publish(
    engine: &Engine,
    kind: &str,
    payload: &str,
    run_id: Option<&str>,
) -> Result<(), EventsError> {
    let stream = &engine.settings().events.backup_events_stream;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(STREAM_MAXLEN)
        .arg("*")
        .arg("type")
        .arg(kind)
        .arg("payload")
        .arg(payload);
    if let Some(run_id) = run_id {
        cmd.arg("runId").arg(run_id);
    }
    let mut delay = Duration::from_millis(300);
    let mut attempt = 1;
    loop {
        let result = async {
            let mut conn = engine
                .redis()
                .get()
                .await
                .map_err(|e| EventsError::Redis(e.to_string()))?;
            cmd.query_async::<String>(&mut conn)
                .await
                .map_err(|e| EventsError::Redis(e.to_string()))
        }
        .await;
        match result {
            Ok(id) => {
                tracing::debug!(%stream, %kind, %id, "event published");
                return Ok(());
            }
            Err(e) if attempt >= ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(%stream, %kind, attempt, error = %e, "publishing an event failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

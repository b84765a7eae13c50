//! The notice every channel renders: the webhook's JSON body as stored in the outbox, what a run's
//! rows and its job's flags say to send, and the plain-text lines that email and Slack share.
//! Plain types below both `notify` (which enqueues and delivers notices) and `events_out` (whose
//! completion events carry a run's notice).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Backup, Job, RunFailure, RunFailureReason, Status};

/// The kind of notice; its `type` field on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    #[serde(rename = "backup.failed")]
    Failed,
    #[serde(rename = "backup.succeeded")]
    Succeeded,
    #[serde(rename = "backup.overdue")]
    Overdue,
    #[serde(rename = "backup.drill_failed")]
    DrillFailed,
    /// Sent by hand from the Backups page, to check that a channel delivers.
    #[serde(rename = "backup.test")]
    Test,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "backup.failed",
            Self::Succeeded => "backup.succeeded",
            Self::Overdue => "backup.overdue",
            Self::DrillFailed => "backup.drill_failed",
            Self::Test => "backup.test",
        }
    }
}

/// One volume of the run, as the notice lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeNotice {
    pub app_name: String,
    pub volume_name: String,
    pub status: Status,
    pub size_bytes: Option<u64>,
    pub storage_path: Option<String>,
    pub error: Option<String>,
}

/// The webhook body; stored as the outbox row's payload and rendered by every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    #[serde(rename = "type")]
    pub kind: NoticeKind,
    pub organization_id: Uuid,
    pub job_id: Uuid,
    pub job_name: String,
    pub failed_count: usize,
    pub total_count: usize,
    /// The combined size of the archives this run stored.
    pub total_size_bytes: u64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub volumes: Vec<VolumeNotice>,
    /// Overdue notices only: when the job last started a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
    /// A run that backed up nothing (no volume listed): why, as a code and as a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<RunFailureReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Longest error text a notice carries per volume.
const MAX_ERROR_CHARS: usize = 1000;

/// What a run's rows and its job's flags call for: a failure notice when any volume did not
/// succeed, or when the run backed up nothing (`failure`), and `notifyOnFailure`; a success notice
/// when all did (and `notifyOnSuccess`); else none.
pub fn run_notice(job: &Job, rows: &[Backup], failure: Option<&RunFailure>) -> Option<Notice> {
    if rows.is_empty() {
        let failure = failure?;
        return job.notify_on_failure.then(|| Notice {
            kind: NoticeKind::Failed,
            organization_id: job.organization_id,
            job_id: job.id,
            job_name: job.name.clone(),
            failed_count: 0,
            total_count: 0,
            total_size_bytes: 0,
            started_at: None,
            finished_at: None,
            volumes: Vec::new(),
            last_run_at: None,
            reason: Some(failure.reason),
            error: Some(truncate(&failure.message, MAX_ERROR_CHARS)),
        });
    }
    let volumes: Vec<VolumeNotice> = rows.iter().map(volume_notice).collect();
    let failed_count = volumes.iter().filter(|v| !succeeded(v.status)).count();
    let kind = if failed_count > 0 {
        job.notify_on_failure.then_some(NoticeKind::Failed)?
    } else {
        job.notify_on_success.then_some(NoticeKind::Succeeded)?
    };
    Some(Notice {
        kind,
        organization_id: job.organization_id,
        job_id: job.id,
        job_name: job.name.clone(),
        failed_count,
        total_count: volumes.len(),
        total_size_bytes: volumes
            .iter()
            .filter(|v| succeeded(v.status))
            .filter_map(|v| v.size_bytes)
            .sum(),
        started_at: rows
            .iter()
            .filter_map(|r| r.started_at.or(Some(r.created_at)))
            .min(),
        finished_at: rows.iter().filter_map(|r| r.finished_at).max(),
        volumes,
        last_run_at: None,
        reason: None,
        error: None,
    })
}

/// The notice for a job that did not run when expected.
pub fn overdue_notice(job: &Job) -> Notice {
    Notice {
        kind: NoticeKind::Overdue,
        organization_id: job.organization_id,
        job_id: job.id,
        job_name: job.name.clone(),
        failed_count: 0,
        total_count: 0,
        total_size_bytes: 0,
        started_at: None,
        finished_at: None,
        volumes: Vec::new(),
        last_run_at: job.last_run_at,
        reason: None,
        error: None,
    }
}

/// A test notice for one of `organization_id`'s channels: no job, no run.
pub fn test_notice(organization_id: Uuid) -> Notice {
    Notice {
        kind: NoticeKind::Test,
        organization_id,
        job_id: Uuid::nil(),
        job_name: "test notice".to_owned(),
        failed_count: 0,
        total_count: 0,
        total_size_bytes: 0,
        started_at: None,
        finished_at: Some(Utc::now()),
        volumes: Vec::new(),
        last_run_at: None,
        reason: None,
        error: None,
    }
}

/// The notice for a job whose drill failed: its newest backups did not restore and check out.
pub fn drill_failed_notice(job: &Job, drill: &crate::model::Drill, why: &str) -> Notice {
    Notice {
        kind: NoticeKind::DrillFailed,
        organization_id: job.organization_id,
        job_id: job.id,
        job_name: job.name.clone(),
        failed_count: 0,
        total_count: 0,
        total_size_bytes: 0,
        started_at: drill.started_at,
        finished_at: drill.finished_at,
        volumes: Vec::new(),
        last_run_at: None,
        reason: None,
        error: Some(truncate(why, MAX_ERROR_CHARS)),
    }
}

/// A row of this run that was later pruned had succeeded.
fn succeeded(status: Status) -> bool {
    matches!(status, Status::Success | Status::Pruned)
}

fn volume_notice(row: &Backup) -> VolumeNotice {
    let ok = succeeded(row.status);
    VolumeNotice {
        app_name: row.app_name.clone(),
        volume_name: row.volume_name.clone(),
        status: row.status,
        size_bytes: row.size_bytes.and_then(|s| u64::try_from(s).ok()),
        storage_path: row.storage_path.clone(),
        error: (!ok).then(|| failure_reason(row)),
    }
}

/// The row's last log line without its timestamp: the reason it failed.
pub fn failure_reason(row: &Backup) -> String {
    let line = row
        .log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let message = match line.split_once(' ') {
        Some((stamp, rest)) if stamp.ends_with('Z') && stamp.contains('T') => rest,
        _ => line,
    };
    let message = message.strip_prefix("failed: ").unwrap_or(message).trim();
    let message = if message.is_empty() {
        format!("the backup ended {}", row.status.as_str())
    } else {
        message.to_owned()
    };
    truncate(&message, MAX_ERROR_CHARS)
}

pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    // Display only: the f64's rounding does not matter at one decimal.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

impl Notice {
    /// The email subject and the Slack title.
    pub fn title(&self) -> String {
        if self.kind == NoticeKind::Test {
            return "Test notice from vardo-backup".to_owned();
        }
        let what = match self.kind {
            NoticeKind::Test => "test",
            NoticeKind::Failed => "failed",
            NoticeKind::Succeeded => "succeeded",
            NoticeKind::Overdue => "overdue",
            NoticeKind::DrillFailed => "drill failed",
        };
        format!("Backup {what}: {}", self.job_name)
    }

    /// One sentence saying what happened.
    pub fn summary(&self) -> String {
        match self.kind {
            NoticeKind::Failed => match &self.error {
                Some(why) if self.volumes.is_empty() => {
                    format!("No volume was backed up: {why}")
                }
                _ => format!(
                    "{} of {} volumes failed to back up.",
                    self.failed_count, self.total_count
                ),
            },
            NoticeKind::Succeeded => format!(
                "All {} volumes backed up: {} in total ({} bytes).",
                self.total_count,
                human_size(self.total_size_bytes),
                self.total_size_bytes
            ),
            NoticeKind::DrillFailed => format!(
                "A restore drill of the job's newest backups failed: {}",
                self.error.as_deref().unwrap_or("no reason was recorded")
            ),
            NoticeKind::Test => {
                "This channel works: the notice was sent by hand from the Backups page.".to_owned()
            }
            NoticeKind::Overdue => format!(
                "The job did not run when its schedule expected it to; last run: {}.",
                self.last_run_at
                    .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                    .unwrap_or_else(|| "never".to_owned())
            ),
        }
    }

    /// When the run happened, for the footer.
    pub fn when(&self) -> Option<String> {
        let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match (self.started_at, self.finished_at) {
            (Some(s), Some(f)) => Some(format!("Started {}, finished {}.", fmt(s), fmt(f))),
            (Some(s), None) => Some(format!("Started {}.", fmt(s))),
            (None, Some(f)) => Some(format!("Finished {}.", fmt(f))),
            (None, None) => None,
        }
    }
}

impl VolumeNotice {
    /// `app/volume: success, 1.5 MiB` or `app/volume: failed — why`.
    pub fn line(&self) -> String {
        let size = self
            .size_bytes
            .map(|s| format!(", {}", human_size(s)))
            .unwrap_or_default();
        let error = self
            .error
            .as_deref()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        format!(
            "{}/{}: {}{size}{error}",
            self.app_name,
            self.volume_name,
            self.status.as_str()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Compression, RetentionPolicy, VolumeKind};

    fn job(on_success: bool, on_failure: bool) -> Job {
        Job {
            id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            name: "nightly".into(),
            schedule: "0 2 * * *".into(),
            timezone: "UTC".into(),
            enabled: true,
            target_id: None,
            retention: RetentionPolicy::default(),
            notify_on_success: on_success,
            notify_on_failure: on_failure,
            compression: Compression::Gzip,
            compression_level: None,
            drill_schedule: None,
            last_drill_at: None,
            last_drill_outcome: None,
            incremental_full_every: None,
            last_run_at: None,
        }
    }

    fn row(volume: &str, status: Status, size: Option<i64>, log: &str) -> Backup {
        Backup {
            id: Uuid::new_v4(),
            run_id: Uuid::nil(),
            job_id: None,
            organization_id: Uuid::nil(),
            app_id: "a".into(),
            app_name: "shop".into(),
            target_id: None,
            volume_name: volume.into(),
            volume_kind: VolumeKind::Generic,
            status,
            size_bytes: size,
            storage_path: size.map(|_| format!("org/shop/{volume}/t.tar.gz")),
            checksum: None,
            log: log.into(),
            started_at: None,
            finished_at: Some(Utc::now()),
            created_at: Utc::now(),
            verified_at: None,
            verify_outcome: None,
            chain: Default::default(),
            encrypted_to: None,
        }
    }

    #[test]
    fn a_failed_volume_makes_a_failure_notice_with_its_reason() {
        let rows = [
            row("data", Status::Success, Some(2048), "2024-01-15T02:00:00.000Z success\n"),
            row(
                "uploads",
                Status::Failed,
                None,
                "2024-01-15T02:00:00.000Z queued (manual)\n2024-01-15T02:00:01.000Z failed: volume not found\n",
            ),
        ];
        let n = run_notice(&job(false, true), &rows, None).expect("a notice");
        assert_eq!(n.kind, NoticeKind::Failed);
        assert_eq!(
            (n.failed_count, n.total_count, n.total_size_bytes),
            (1, 2, 2048)
        );
        assert_eq!(n.volumes[1].error.as_deref(), Some("volume not found"));
        assert_eq!(n.volumes[0].error, None);
        assert_eq!(n.title(), "Backup failed: nightly");
        assert!(n.summary().contains("1 of 2"));
        assert!(run_notice(&job(true, false), &rows, None).is_none());
    }

    #[test]
    fn success_is_silent_unless_asked_for() {
        let rows = [row("data", Status::Success, Some(1536), "")];
        assert!(run_notice(&job(false, true), &rows, None).is_none());
        let n = run_notice(&job(true, true), &rows, None).expect("a notice");
        assert_eq!(n.kind, NoticeKind::Succeeded);
        assert!(n.summary().contains("1.5 KiB") && n.summary().contains("1536 bytes"));
        assert!(
            run_notice(&job(true, true), &[], None).is_none(),
            "no rows and no failure: nothing to say"
        );
    }

    #[test]
    fn the_wire_shape_is_camel_case_with_a_type() {
        let n = run_notice(
            &job(true, true),
            &[row("d", Status::Success, Some(1), "")],
            None,
        )
        .expect("a notice");
        let v = serde_json::to_value(&n).expect("serializes");
        for key in [
            "type",
            "organizationId",
            "jobId",
            "jobName",
            "failedCount",
            "totalCount",
            "totalSizeBytes",
            "startedAt",
            "finishedAt",
            "volumes",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["type"], "backup.succeeded");
        assert!(v.get("lastRunAt").is_none());
        for key in [
            "appName",
            "volumeName",
            "status",
            "sizeBytes",
            "storagePath",
            "error",
        ] {
            assert!(v["volumes"][0].get(key).is_some(), "{key} missing");
        }
        let back: Notice = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, n);
    }

    #[test]
    fn a_run_that_backed_up_nothing_is_a_failure_with_its_reason() {
        let failure = RunFailure::new(
            RunFailureReason::NoTarget,
            "job nightly skipped: no backup target resolves",
        );
        let n = run_notice(&job(false, true), &[], Some(&failure)).expect("a failure notice");
        assert_eq!(n.kind, NoticeKind::Failed);
        assert_eq!(n.reason, Some(RunFailureReason::NoTarget));
        assert_eq!(
            n.summary(),
            "No volume was backed up: job nightly skipped: no backup target resolves"
        );
        let v = serde_json::to_value(&n).expect("serializes");
        assert_eq!(v["reason"], "no_target");
        assert_eq!(v["volumes"], serde_json::json!([]));
        assert!(
            run_notice(&job(true, false), &[], Some(&failure)).is_none(),
            "notifyOnFailure off"
        );
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1023), "1023 bytes");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}

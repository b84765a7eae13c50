//! A drill of one job: its newest backups restored into scratch places and checked.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::Status;

/// A new job's drill schedule: Sundays at 04:00 in the job's time zone.
pub const DEFAULT_DRILL_SCHEDULE: &str = "0 4 * * 0";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drill {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub job_id: Uuid,
    /// `pending`, `running`, `success` (every volume restored and checked) or `failed`.
    pub status: Status,
    /// `schedule` or `manual`.
    pub reason: String,
    /// The scheduled minute, for a scheduled drill.
    pub slot: Option<DateTime<Utc>>,
    pub log: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

//! A verification of one backup: its object downloaded and checked.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::Status;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub backup_id: Uuid,
    /// `pending`, `running`, `success` (the backup is intact) or `failed`.
    pub status: Status,
    pub log: String,
    /// What was checked, in order: `object`, `size`, `sha256`, `tar entries` or `sql dump`.
    pub checked: Vec<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

//! Backup jobs: schedule, target, retention, notification flags and the apps they cover.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The archive compression a job chooses for its volumes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The compression an archive's storage key names (`….gz`, `….zst`, and encrypted
    /// `….gz.age`, `….zst.age`).
    pub fn of_key(key: &str) -> Option<Self> {
        let key = key.strip_suffix(crate::encryption::SUFFIX).unwrap_or(key);
        if key.ends_with(".gz") {
            Some(Self::Gzip)
        } else if key.ends_with(".zst") {
            Some(Self::Zstd)
        } else {
            None
        }
    }

    /// File-name suffix after `tar` or `sql`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Gzip => "gz",
            Self::Zstd => "zst",
        }
    }
}

/// Retention as the seed names it; the meaning is `restic forget`'s.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    pub keep_all: bool,
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub enabled: bool,
    pub target_id: Option<Uuid>,
    pub retention: RetentionPolicy,
    pub notify_on_success: bool,
    pub notify_on_failure: bool,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub last_run_at: Option<DateTime<Utc>>,
    /// When drills run (cron in the job's time zone); None: never.
    pub drill_schedule: Option<String>,
    pub last_drill_at: Option<DateTime<Utc>>,
    /// `ok` or `failed`.
    pub last_drill_outcome: Option<String>,
    /// Incremental backups: every `n`-th backup of a series is a full one, those between hold
    /// what changed since the one before. None: every backup is full.
    pub incremental_full_every: Option<u32>,
}

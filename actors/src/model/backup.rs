//! A backup row: one attempt to back up one volume of one app in one run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::VolumeKind;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Success,
    Failed,
    Pruned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Pruned => "pruned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "success" => Self::Success,
            "failed" => Self::Failed,
            "pruned" => Self::Pruned,
            _ => return None,
        })
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunReason {
    Schedule,
    Manual,
    Deploy,
    /// The safety backup a restore takes of the contents it is about to replace.
    #[serde(rename = "pre-restore")]
    PreRestore,
}

impl RunReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Deploy => "deploy",
            Self::PreRestore => "pre-restore",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "schedule" => Some(Self::Schedule),
            "manual" => Some(Self::Manual),
            "deploy" => Some(Self::Deploy),
            "pre-restore" => Some(Self::PreRestore),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    pub id: Uuid,
    pub run_id: Uuid,
    pub job_id: Option<Uuid>,
    pub organization_id: Uuid,
    pub app_id: String,
    pub app_name: String,
    pub target_id: Option<Uuid>,
    pub volume_name: String,
    pub volume_kind: VolumeKind,
    pub status: Status,
    pub size_bytes: Option<i64>,
    pub storage_path: Option<String>,
    pub checksum: Option<String>,
    pub log: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When the newest verification of this backup ended, and its outcome (`ok` | `failed`).
    pub verified_at: Option<DateTime<Utc>>,
    pub verify_outcome: Option<String>,
    /// Where the backup sits in its chain (a full backup outside any chain by default).
    pub chain: ChainLink,
    /// The age recipients its archive is encrypted to; `None` for a plain archive.
    pub encrypted_to: Option<Vec<String>>,
}

/// A full archive, or one that holds only what changed since its parent.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    #[default]
    Full,
    Incremental,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Incremental => "incremental",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Self::Full),
            "incremental" => Some(Self::Incremental),
            _ => None,
        }
    }
}

/// A backup's place in a chain of incremental backups. A backup of a job without incremental
/// backups is `Full`, position 0, with no manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChainLink {
    pub kind: BackupKind,
    /// The backup this one holds the changes since (an incremental's only).
    pub parent_backup_id: Option<Uuid>,
    /// 0 for the full backup of a chain, n for its n-th incremental.
    pub position: i32,
    /// The manifest of the whole tree at this backup, stored beside the archive, and its
    /// `sha256:…` (every backup of a chain has one).
    pub manifest_path: Option<String>,
    pub manifest_checksum: Option<String>,
    pub manifest_size: Option<i64>,
}

/// Restore status: a restore is never `pruned`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restore {
    pub id: Uuid,
    pub backup_id: Uuid,
    /// The safety backup taken of the contents this restore replaced: restore it to undo.
    pub pre_restore_backup_id: Option<Uuid>,
    pub status: Status,
    pub log: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

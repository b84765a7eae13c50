//! A run that ended without backing up any volume: why, as a closed set of reasons, and the
//! record table `run` keeps of it (the history of backup rows cannot show a run that has none).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a run backed up nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunFailureReason {
    /// No backup target resolves for the job (none of its own, no organization or system default).
    NoTarget,
    /// The job covers no persistent volume.
    NoVolumes,
    /// The run stopped before it recorded its volumes (database away, job gone, crash).
    Error,
}

impl RunFailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoTarget => "no_target",
            Self::NoVolumes => "no_volumes",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "no_target" => Self::NoTarget,
            "no_volumes" => Self::NoVolumes,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

/// A run's failure before any backup row: the reason and the message shown to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure {
    pub reason: RunFailureReason,
    pub message: String,
}

impl RunFailure {
    pub fn new(reason: RunFailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// One row of table `run`: a run that ended with no backup row, always `failed`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    pub id: Uuid,
    /// Null once the job is deleted (the record stays).
    pub job_id: Option<Uuid>,
    pub organization_id: Uuid,
    pub reason: RunFailureReason,
    pub message: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl RunRecord {
    pub fn failure(&self) -> RunFailure {
        RunFailure::new(self.reason, self.message.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_text() {
        for r in [
            RunFailureReason::NoTarget,
            RunFailureReason::NoVolumes,
            RunFailureReason::Error,
        ] {
            assert_eq!(RunFailureReason::parse(r.as_str()), Some(r));
            assert_eq!(
                serde_json::to_value(r).ok(),
                Some(serde_json::Value::String(r.as_str().to_owned()))
            );
        }
        assert_eq!(RunFailureReason::parse("skipped"), None);
    }
}

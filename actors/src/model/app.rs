//! Organizations, apps and their volumes: the registry of what can be backed up.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Organization {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

/// How a volume is backed up: a tar of its files, or a `pg_dump` of the database living in it.
/// `Engine` is the engine's own database (`self_backup`), only ever in the system organization:
/// it is never read from input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    #[default]
    Generic,
    Postgres,
    #[serde(skip_deserializing)]
    Engine,
}

impl VolumeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Postgres => "postgres",
            Self::Engine => "engine",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "generic" => Some(Self::Generic),
            "postgres" => Some(Self::Postgres),
            "engine" => Some(Self::Engine),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub persistent: bool,
    pub kind: VolumeKind,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct App {
    pub id: String,
    pub organization_id: Uuid,
    pub name: String,
    pub volumes: Vec<Volume>,
}

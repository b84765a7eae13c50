//! Storage targets: where archives go. `s3`, `r2` and `b2` share one S3 adapter; `ssh` is SFTP;
//! `local` is a folder on the engine's host (allowed only with `ALLOW_LOCAL_BACKUPS=true`).

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    S3,
    R2,
    B2,
    Ssh,
    Local,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::R2 => "r2",
            Self::B2 => "b2",
            Self::Ssh => "ssh",
            Self::Local => "local",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "s3" => Self::S3,
            "r2" => Self::R2,
            "b2" => Self::B2,
            "ssh" => Self::Ssh,
            "local" => Self::Local,
            _ => return None,
        })
    }

    pub fn is_s3_compatible(self) -> bool {
        matches!(self, Self::S3 | Self::R2 | Self::B2)
    }
}

/// The seed's S3 / R2 / B2 fields.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// Required for r2, b2 and any non-AWS endpoint; path-style addressing is used when set.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshConfig {
    pub host: String,
    pub username: String,
    pub path: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// PEM/OpenSSH private key; without it the SSH agent is used.
    #[serde(default)]
    pub private_key: Option<SecretString>,
}

fn default_ssh_port() -> u16 {
    22
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    pub path: String,
}

/// A target's configuration with its secrets in clear (in memory only; never serialized as is).
#[derive(Debug, Clone)]
pub enum TargetConfig {
    S3(S3Config),
    Ssh(SshConfig),
    Local(LocalConfig),
}

impl TargetConfig {
    /// Parses the JSON `config` of a target of `kind` (secrets in clear).
    pub fn from_json(
        kind: TargetKind,
        value: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            TargetKind::S3 | TargetKind::R2 | TargetKind::B2 => {
                Self::S3(serde_json::from_value(value)?)
            }
            TargetKind::Ssh => Self::Ssh(serde_json::from_value(value)?),
            TargetKind::Local => Self::Local(serde_json::from_value(value)?),
        })
    }
}

/// A stored target, secrets decrypted.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: Uuid,
    /// `None` for a system-level target.
    pub organization_id: Option<Uuid>,
    pub name: String,
    pub kind: TargetKind,
    pub config: TargetConfig,
    pub is_default: bool,
    /// The target's encryption setting.
    pub encryption: crate::encryption::Encryption,
    /// Its recipients, parsed: new archives are encrypted to them.
    pub sealing: Option<crate::encryption::Recipients>,
}

/// The JSON field names that hold secrets, per kind: encrypted at rest, masked in responses.
pub fn secret_fields(kind: TargetKind) -> &'static [&'static str] {
    match kind {
        TargetKind::S3 | TargetKind::R2 | TargetKind::B2 => &["secretAccessKey"],
        TargetKind::Ssh => &["privateKey"],
        TargetKind::Local => &[],
    }
}

//! The shapes of the targets API (`/backups/targets`, handlers in targets.rs): the request body and
//! the response views, with secrets masked, and the validation and sealing of a target's config
//! before it is stored.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;
use vardo_actors::encryption::{fingerprint, Encryption};
use vardo_actors::model::target::{secret_fields, LocalConfig, S3Config, SshConfig};
use vardo_actors::model::{TargetConfig, TargetKind};
use vardo_actors::storage::TargetStorage;
use vardo_actors::store::{TargetRecord, TargetWrite};

use super::error::ApiError;
use super::organizations::check_name;
use super::State;

/// What responses show instead of a secret; sending it back in a PUT keeps the stored secret.
pub const MASK: &str = "********";

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetType {
    S3,
    R2,
    B2,
    Ssh,
    Local,
}

impl From<TargetType> for TargetKind {
    fn from(t: TargetType) -> Self {
        match t {
            TargetType::S3 => Self::S3,
            TargetType::R2 => Self::R2,
            TargetType::B2 => Self::B2,
            TargetType::Ssh => Self::Ssh,
            TargetType::Local => Self::Local,
        }
    }
}

impl From<TargetKind> for TargetType {
    fn from(t: TargetKind) -> Self {
        match t {
            TargetKind::S3 => Self::S3,
            TargetKind::R2 => Self::R2,
            TargetKind::B2 => Self::B2,
            TargetKind::Ssh => Self::Ssh,
            TargetKind::Local => Self::Local,
        }
    }
}

/// `s3`, `r2`, `b2`: the seed's S3 fields.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // documentation only: the handler parses the model's own types
pub struct S3TargetConfig {
    bucket: String,
    region: String,
    access_key_id: String,
    /// Masked (`********`) in responses.
    secret_access_key: String,
    /// Required for r2 and b2.
    endpoint: Option<String>,
    prefix: Option<String>,
}

/// `ssh`: SFTP on a remote server.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct SshTargetConfig {
    host: String,
    username: String,
    path: String,
    #[schema(minimum = 1, maximum = 65535)]
    port: Option<u16>,
    /// Masked (`********`) in responses.
    private_key: Option<String>,
}

/// `local`: a folder on the server (only when the server allows local backups).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct LocalTargetConfig {
    path: String,
}

/// The `config` of a target: the fields of its `type`.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum TargetConfigDoc {
    S3(S3TargetConfig),
    Ssh(SshTargetConfig),
    Local(LocalTargetConfig),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetInput {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TargetType,
    #[schema(value_type = TargetConfigDoc)]
    pub config: Map<String, Value>,
    #[serde(default)]
    pub is_default: bool,
    /// `{"type": "none"}` or `{"type": "age", "recipients": ["age1…", "ssh-ed25519 AAAA…"]}`:
    /// new archives are encrypted to the recipients. Absent: none on create, unchanged on
    /// update (turning encryption off takes `{"type": "none"}`). Changing it affects new
    /// archives only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub encryption: Option<Encryption>,
}

/// A target's encryption as responses show it: the recipients and their fingerprints (the
/// private identities are never shown).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionView {
    /// `none` or `age`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub recipients: Vec<RecipientView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientView {
    pub recipient: String,
    /// The first 16 hex digits of the recipient's SHA-256: what refusals and logs name.
    pub fingerprint: String,
}

impl EncryptionView {
    pub fn of(encryption: &Encryption) -> Self {
        match encryption {
            Encryption::None => Self {
                kind: "none",
                recipients: Vec::new(),
            },
            Encryption::Age { recipients } => Self {
                kind: "age",
                recipients: recipients
                    .iter()
                    .map(|r| RecipientView {
                        recipient: r.clone(),
                        fingerprint: fingerprint(r),
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: Uuid,
    /// Null for a system target (read-only for organizations).
    pub organization_id: Option<Uuid>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: TargetType,
    /// Secrets masked.
    #[schema(value_type = TargetConfigDoc)]
    pub config: Value,
    pub is_default: bool,
    pub encryption: EncryptionView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetList {
    pub items: Vec<Target>,
    pub next_cursor: Option<String>,
}

/// The API view of a stored target: secrets replaced by the mask.
pub fn view(record: TargetRecord) -> Target {
    let mut config = record.row.sealed_config;
    for field in secret_fields(record.row.kind) {
        if let Some(slot) = config.get_mut(*field) {
            if !slot.is_null() {
                *slot = Value::String(MASK.to_owned());
            }
        }
    }
    Target {
        id: record.row.id,
        organization_id: record.row.organization_id,
        name: record.row.name,
        kind: record.row.kind.into(),
        config,
        is_default: record.row.is_default,
        encryption: EncryptionView::of(&record.row.encryption),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

fn config_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let name = message.find('`').and_then(|s| {
        message[s + 1..]
            .find('`')
            .map(|l| &message[s + 1..s + 1 + l])
    });
    let field = match (path.as_str(), name) {
        (".", Some(n)) if message.starts_with("unknown") || message.starts_with("missing") => {
            format!("config.{n}")
        }
        (".", _) => "config".to_owned(),
        (p, _) => format!("config.{p}"),
    };
    ApiError::Invalid {
        message: format!("{field}: {message}"),
        field,
    }
}

fn non_empty(field: &str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    Ok(())
}

/// Checks a config (secrets in clear, or the mask where a stored secret is kept) for its kind.
fn check_config(
    kind: TargetKind,
    config: &Map<String, Value>,
    allow_local: bool,
) -> Result<(), ApiError> {
    let value = Value::Object(config.clone());
    let parsed = match kind {
        TargetKind::S3 | TargetKind::R2 | TargetKind::B2 => {
            let c: S3Config = serde_path_to_error::deserialize(value).map_err(config_error)?;
            non_empty("config.bucket", &c.bucket)?;
            non_empty("config.region", &c.region)?;
            non_empty("config.accessKeyId", &c.access_key_id)?;
            if matches!(kind, TargetKind::R2 | TargetKind::B2) && c.endpoint.is_none() {
                return Err(ApiError::invalid(
                    "config.endpoint",
                    "config.endpoint is required for r2 and b2 targets",
                ));
            }
            if let Some(e) = &c.endpoint {
                if !(e.starts_with("https://") || e.starts_with("http://")) || e.len() < 9 {
                    return Err(ApiError::invalid(
                        "config.endpoint",
                        "config.endpoint must be an http(s) URL",
                    ));
                }
            }
            TargetConfig::S3(c)
        }
        TargetKind::Ssh => {
            let c: SshConfig = serde_path_to_error::deserialize(value).map_err(config_error)?;
            non_empty("config.host", &c.host)?;
            non_empty("config.username", &c.username)?;
            if !c.path.starts_with('/') {
                return Err(ApiError::invalid(
                    "config.path",
                    "config.path must be an absolute path",
                ));
            }
            if c.port == 0 {
                return Err(ApiError::invalid(
                    "config.port",
                    "config.port must be 1 to 65535",
                ));
            }
            return Ok(());
        }
        TargetKind::Local => {
            let c: LocalConfig = serde_path_to_error::deserialize(value).map_err(config_error)?;
            if !allow_local {
                return Err(ApiError::invalid(
                    "type",
                    "local targets are not allowed on this server (ALLOW_LOCAL_BACKUPS is off)",
                ));
            }
            if !c.path.starts_with('/') {
                return Err(ApiError::invalid(
                    "config.path",
                    "config.path must be an absolute path",
                ));
            }
            return Ok(());
        }
    };
    // Building the operator checks what serde cannot (no network I/O).
    TargetStorage::open(&parsed, allow_local)
        .map(drop)
        .map_err(|e| ApiError::invalid("config", format!("config: {e}")))
}

/// Validates an input and seals it. `stored` is the current sealed config (PUT): a secret field
/// sent as the mask keeps the stored value; `stored_encryption` is kept when none is sent.
pub(crate) fn prepare(
    state: &State,
    input: TargetInput,
    stored: Option<&Value>,
    stored_encryption: Option<&Encryption>,
) -> Result<TargetWrite, ApiError> {
    check_name("name", &input.name)?;
    let kind: TargetKind = input.kind.into();
    let allow_local = state.engine.settings().allow_local_backups;
    if kind == TargetKind::Local && !allow_local {
        return Err(ApiError::invalid(
            "type",
            "local targets are not allowed on this server (ALLOW_LOCAL_BACKUPS is off)",
        ));
    }
    let mut kept = Vec::new();
    for field in secret_fields(kind) {
        if input.config.get(*field).and_then(Value::as_str) == Some(MASK) {
            let old = stored.and_then(|s| s.get(*field)).filter(|v| v.is_string());
            match old {
                Some(old) => kept.push((*field, old.clone())),
                None => {
                    return Err(ApiError::invalid(
                        format!("config.{field}"),
                        format!(
                        "config.{field}: send the secret itself; the mask only keeps a stored one"
                    ),
                    ))
                }
            }
        }
    }
    check_config(kind, &input.config, allow_local)?;
    let encryption = input
        .encryption
        .as_ref()
        .or(stored_encryption)
        .unwrap_or(&Encryption::None)
        .canonical()
        .map_err(|e| ApiError::invalid("encryption", format!("encryption: {e}")))?;
    let mut sealed = Value::Object(input.config);
    let to_seal: Vec<&str> = secret_fields(kind)
        .iter()
        .copied()
        .filter(|f| !kept.iter().any(|(k, _)| k == f))
        .collect();
    state
        .engine
        .store()
        .secrets()
        .seal_fields(&mut sealed, &to_seal);
    for (field, old) in kept {
        sealed[field] = old;
    }
    Ok(TargetWrite {
        name: input.name,
        kind,
        sealed_config: sealed,
        is_default: input.is_default,
        encryption,
    })
}

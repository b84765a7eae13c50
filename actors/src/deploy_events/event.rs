//! The deploy pipeline's messages: their `type` and JSON `payload`, read and validated. Pure; the
//! error text is the reason a dead letter records.

use serde::Deserialize;
use uuid::Uuid;

use crate::model::{Volume, VolumeKind};
use crate::store::DeployedApp;

/// A message's content, validated.
#[derive(Debug, Clone)]
pub enum DeployEvent {
    AppDeployed(DeployedApp),
    AppDeleted {
        org_slug: String,
        app_id: String,
    },
    BackupRequested {
        org_slug: String,
        app_id: Option<String>,
        job_id: Option<Uuid>,
        request_id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppDeployedPayload {
    org_slug: String,
    #[serde(default)]
    org_name: Option<String>,
    app_id: String,
    app_name: String,
    volumes: Vec<VolumePayload>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct VolumePayload {
    name: String,
    #[serde(default = "yes")]
    persistent: bool,
    #[serde(default)]
    kind: VolumeKind,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppDeletedPayload {
    org_slug: String,
    app_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BackupRequestedPayload {
    org_slug: String,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
    request_id: String,
}

/// Reads a message's `type` and `payload`; the error is the reason recorded with the dead letter.
pub fn parse_event(fields: &[(String, Vec<u8>)]) -> Result<DeployEvent, String> {
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let kind = field("type").ok_or("the message has no `type` field")?;
    let kind = std::str::from_utf8(kind).map_err(|_| "`type` is not UTF-8 text".to_owned())?;
    let payload =
        field("payload").ok_or_else(|| format!("{kind}: the message has no `payload` field"))?;
    let payload =
        std::str::from_utf8(payload).map_err(|_| format!("{kind}: `payload` is not UTF-8 text"))?;
    let json: serde_json::Value = serde_json::from_str(payload)
        .map_err(|e| format!("{kind}: `payload` is not valid JSON: {e}"))?;
    let invalid = |e: serde_json::Error| format!("{kind}: invalid payload: {e}");
    match kind {
        "app.deployed" => {
            let p: AppDeployedPayload = serde_json::from_value(json).map_err(invalid)?;
            check_slug(&p.org_slug).map_err(|e| format!("{kind}: {e}"))?;
            check_app_id(&p.app_id).map_err(|e| format!("{kind}: {e}"))?;
            if !docker_name(&p.app_name) {
                return Err(format!("{kind}: appName {:?} must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit", p.app_name));
            }
            let mut seen = std::collections::HashSet::new();
            for (i, v) in p.volumes.iter().enumerate() {
                if !docker_name(&v.name) {
                    return Err(format!("{kind}: volumes[{i}].name {:?} must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit", v.name));
                }
                if !seen.insert(v.name.as_str()) {
                    return Err(format!(
                        "{kind}: volumes[{i}].name {:?} appears twice",
                        v.name
                    ));
                }
            }
            Ok(DeployEvent::AppDeployed(DeployedApp {
                org_slug: p.org_slug,
                org_name: p.org_name.filter(|n| !n.trim().is_empty()),
                app_id: p.app_id,
                app_name: p.app_name,
                volumes: p
                    .volumes
                    .into_iter()
                    .map(|v| Volume {
                        name: v.name,
                        persistent: v.persistent,
                        kind: v.kind,
                    })
                    .collect(),
            }))
        }
        "app.deleted" => {
            let p: AppDeletedPayload = serde_json::from_value(json).map_err(invalid)?;
            check_slug(&p.org_slug).map_err(|e| format!("{kind}: {e}"))?;
            check_app_id(&p.app_id).map_err(|e| format!("{kind}: {e}"))?;
            Ok(DeployEvent::AppDeleted {
                org_slug: p.org_slug,
                app_id: p.app_id,
            })
        }
        "backup.requested" => {
            let p: BackupRequestedPayload = serde_json::from_value(json).map_err(invalid)?;
            check_slug(&p.org_slug).map_err(|e| format!("{kind}: {e}"))?;
            if let Some(app) = &p.app_id {
                check_app_id(app).map_err(|e| format!("{kind}: {e}"))?;
            }
            let job_id = p
                .job_id
                .as_deref()
                .map(|j| {
                    Uuid::parse_str(j).map_err(|_| format!("{kind}: jobId {j:?} is not a UUID"))
                })
                .transpose()?;
            if p.app_id.is_none() && job_id.is_none() {
                return Err(format!("{kind}: the payload names neither appId nor jobId"));
            }
            if p.request_id.is_empty() || p.request_id.len() > 200 {
                return Err(format!("{kind}: requestId must be 1 to 200 characters"));
            }
            Ok(DeployEvent::BackupRequested {
                org_slug: p.org_slug,
                app_id: p.app_id,
                job_id,
                request_id: p.request_id,
            })
        }
        other => Err(format!(
            "unknown event type {other:?} (expected app.deployed, app.deleted or backup.requested)"
        )),
    }
}

fn check_slug(slug: &str) -> Result<(), String> {
    let b = slug.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if slug == crate::self_backup::SYSTEM_ORG_SLUG {
        return Err(format!(
            "orgSlug {slug:?} is reserved for the system organization"
        ));
    }
    if ok {
        Ok(())
    } else {
        Err(format!("orgSlug {slug:?} must be 1 to 63 lowercase letters, digits or '-', starting with a letter or digit"))
    }
}

fn check_app_id(id: &str) -> Result<(), String> {
    if id == crate::self_backup::ENGINE_APP_ID {
        return Err(format!(
            "appId {id:?} is reserved for the engine's own database"
        ));
    }
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(format!(
            "appId {id:?} must be 1 to 200 characters without control characters"
        ));
    }
    Ok(())
}

/// Docker-safe: starts with a letter or digit, then letters, digits, `_`, `.`, `-`; ≤ 128 chars.
fn docker_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

//! Backup history: `/api/v1/organizations/{orgId}/backups/history` — the organization's backup
//! rows, newest first, filtered and paged; one row with its full log; and its archive's download
//! (a 307 to a pre-signed URL for S3 kinds, the bytes streamed for ssh and local targets).

use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType, LOCATION};
use actix_web::{get, web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use vardo_actors::download::{download, Download};
use vardo_actors::model::{Backup, Status};
use vardo_actors::store::HistoryFilter;

use super::auth::Principal;
use super::error::{ApiError, ErrorBody};
use super::json::{self, ApiQuery};
use super::State;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupStatus {
    Pending,
    Running,
    Success,
    Failed,
    Pruned,
}

impl From<Status> for BackupStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Pending => Self::Pending,
            Status::Running => Self::Running,
            Status::Success => Self::Success,
            Status::Failed => Self::Failed,
            Status::Pruned => Self::Pruned,
        }
    }
}

impl From<BackupStatus> for Status {
    fn from(s: BackupStatus) -> Self {
        match s {
            BackupStatus::Pending => Self::Pending,
            BackupStatus::Running => Self::Running,
            BackupStatus::Success => Self::Success,
            BackupStatus::Failed => Self::Failed,
            BackupStatus::Pruned => Self::Pruned,
        }
    }
}

/// One attempt to back up one volume of one app in one run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    pub id: Uuid,
    /// The run this row belongs to (the id `POST …/jobs/{jobId}/run` answered).
    pub run_id: Uuid,
    /// Null once the job is deleted (the row stays).
    pub job_id: Option<Uuid>,
    pub app_id: String,
    pub app_name: String,
    pub target_id: Option<Uuid>,
    pub volume_name: String,
    pub status: BackupStatus,
    pub size_bytes: Option<i64>,
    pub storage_path: Option<String>,
    /// `sha256:<hex>`
    pub checksum: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When the newest verification of this backup that judged it ended (`POST …/verify`).
    pub verified_at: Option<DateTime<Utc>>,
    /// `ok` (intact) or `failed` (it would not restore); null before any verification.
    pub verify_outcome: Option<String>,
    /// `full`, or `incremental`: the archive holds what changed since `parentBackupId`, and a
    /// restore or a download reads the chain from its full backup on.
    #[schema(value_type = String)]
    pub kind: vardo_actors::model::BackupKind,
    pub parent_backup_id: Option<Uuid>,
    /// 0 for a full backup, n for the n-th incremental of its chain.
    pub chain_position: i32,
    /// The manifest of the whole tree beside the archive (backups of a chain), and its
    /// `sha256:<hex>`.
    pub manifest_path: Option<String>,
    pub manifest_checksum: Option<String>,
    /// The age recipients the archive (and manifest) is encrypted to, with their fingerprints;
    /// `{"type": "none"}` for a plain archive.
    pub encryption: super::targets_json::EncryptionView,
    /// Timestamped log lines; only when one row is fetched by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryList {
    pub items: Vec<HistoryItem>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct HistoryParams {
    pub job_id: Option<Uuid>,
    pub app_id: Option<String>,
    pub status: Option<BackupStatus>,
    pub volume_name: Option<String>,
    pub run_id: Option<Uuid>,
    /// Only rows created at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Only rows created before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

pub fn view(b: Backup, with_log: bool) -> HistoryItem {
    HistoryItem {
        id: b.id,
        run_id: b.run_id,
        job_id: b.job_id,
        app_id: b.app_id,
        app_name: b.app_name,
        target_id: b.target_id,
        volume_name: b.volume_name,
        status: b.status.into(),
        size_bytes: b.size_bytes,
        storage_path: b.storage_path,
        checksum: b.checksum,
        started_at: b.started_at,
        finished_at: b.finished_at,
        created_at: b.created_at,
        verified_at: b.verified_at,
        verify_outcome: b.verify_outcome,
        kind: b.chain.kind,
        parent_backup_id: b.chain.parent_backup_id,
        chain_position: b.chain.position,
        manifest_path: b.chain.manifest_path,
        manifest_checksum: b.chain.manifest_checksum,
        encryption: super::targets_json::EncryptionView::of(&match b.encrypted_to {
            Some(recipients) => vardo_actors::encryption::Encryption::Age { recipients },
            None => vardo_actors::encryption::Encryption::None,
        }),
        log: with_log.then_some(b.log),
    }
}

/// The organization's backup row, or 404.
pub async fn owned(state: &State, org: Uuid, id: Uuid) -> Result<Backup, ApiError> {
    let backup = state.engine.store().backup(id).await?;
    if backup.organization_id != org {
        return Err(ApiError::NotFound("backup"));
    }
    Ok(backup)
}

/// Lists backup rows, newest first.
#[utoipa::path(
    tag = "history",
    params(("orgId" = Uuid, Path), HistoryParams),
    responses((status = 200, body = HistoryList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/history")]
pub async fn list_history(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<Uuid>,
    q: ApiQuery<HistoryParams>,
) -> Result<HttpResponse, ApiError> {
    let org = path.into_inner();
    who.organization(&state, org).await?;
    let q = q.0;
    let limit = json::limit(q.limit)?;
    let before = json::decode_cursor(q.cursor.as_deref())?;
    let filter = HistoryFilter {
        job_id: q.job_id,
        app_id: q.app_id,
        status: q.status.map(Status::from),
        volume_name: q.volume_name,
        run_id: q.run_id,
        from: q.from,
        to: q.to,
    };
    let rows = state
        .engine
        .store()
        .list_history(org, &filter, before, limit)
        .await?;
    let next_cursor = json::next_cursor(&rows, limit, |b| json::encode_cursor(b.created_at, b.id));
    Ok(HttpResponse::Ok().json(HistoryList {
        items: rows.into_iter().map(|b| view(b, false)).collect(),
        next_cursor,
    }))
}

/// Reads one backup row with its full log.
#[utoipa::path(
    tag = "history",
    params(("orgId" = Uuid, Path), ("backupId" = Uuid, Path)),
    responses((status = 200, body = HistoryItem), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody))
)]
#[get("/organizations/{orgId}/backups/history/{backupId}")]
pub async fn get_backup(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    Ok(HttpResponse::Ok().json(view(owned(&state, org, id).await?, true)))
}

/// Downloads a successful backup's archive: 307 to a pre-signed URL (valid one hour) for S3
/// kinds; the archive itself for ssh and local targets.
#[utoipa::path(
    tag = "history",
    params(("orgId" = Uuid, Path), ("backupId" = Uuid, Path)),
    responses(
        (status = 200, description = "the archive", content_type = "application/octet-stream", body = String),
        (status = 307, description = "redirect to a pre-signed URL",
            headers(("Location" = String, description = "pre-signed URL"))),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)
    )
)]
#[get("/organizations/{orgId}/backups/history/{backupId}/download")]
pub async fn download_backup(
    state: web::Data<State>,
    who: Principal,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org, id) = path.into_inner();
    who.organization(&state, org).await?;
    owned(&state, org, id).await?;
    match download(&state.engine, id).await? {
        Download::Redirect(url) => Ok(HttpResponse::TemporaryRedirect()
            .insert_header((LOCATION, url))
            .finish()),
        Download::Stream {
            file_name,
            size,
            body,
        } => Ok(archive_response(file_name, size, body)),
    }
}

/// An archive streamed as an attachment named `file_name` (with its length when known), never
/// cached.
pub fn archive_response(
    file_name: String,
    size: Option<u64>,
    body: impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + 'static,
) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .content_type("application/octet-stream")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .insert_header(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(file_name)],
        });
    if let Some(size) = size {
        response.no_chunking(size);
    }
    response.streaming(body)
}

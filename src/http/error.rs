//! The one table that maps every error of the control plane to a status code and a stable,
//! machine-readable code. Clients get `{"error":{"code","message","field"}}` with a message a person
//! understands; the logs get the whole cause chain. Nothing internal (SQL, paths, secrets) reaches a
//! response body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use vardo_actors::store::StoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (see the table in `src/http/error.rs`).
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field (JSON path or parameter name) at fault, when there is one.
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required: send Authorization: Bearer <token>")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict {
        message: String,
        field: Option<String>,
    },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// A body field that is missing, of the wrong type, unknown or out of range.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// A query or path parameter that does not parse.
    #[error("{message}")]
    BadParameter { field: String, message: String },
    /// The storage target did not answer as it should (download, purge).
    #[error("storage target: {0}")]
    Storage(String),
    /// A dependency (the database) is unreachable; retrying later may work.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Anything else; the cause goes to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(message: impl Into<String>, field: Option<&str>) -> Self {
        Self::Conflict {
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }

    /// The table: (status, stable code).
    fn kind(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            Self::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::BadParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::Storage(_) => (StatusCode::BAD_GATEWAY, "storage_error"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            Self::Invalid { field, .. } | Self::BadParameter { field, .. } => {
                (!field.is_empty()).then(|| field.clone())
            }
            Self::Conflict { field, .. } => field.clone(),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.kind().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.kind();
        if status.is_server_error() {
            tracing::error!(code, error = %error_chain(self), "request failed");
        }
        HttpResponse::build(status).json(ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                field: self.field(),
            },
        })
    }
}

/// `a: b: c` — the whole chain, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { what, .. } => Self::NotFound(what),
            StoreError::Pool(p) => Self::Unavailable(format!("database: {p}")),
            StoreError::Db(db) => match db.as_db_error().map(|d| d.code().code()) {
                // unique_violation: a name already taken
                Some("23505") => Self::conflict("a resource with that name already exists", None),
                _ if db.is_closed() => Self::Unavailable("database connection lost".to_owned()),
                _ => Self::Internal(db.into()),
            },
            other => Self::Internal(other.into()),
        }
    }
}

impl From<vardo_actors::download::DownloadError> for ApiError {
    fn from(e: vardo_actors::download::DownloadError) -> Self {
        use vardo_actors::download::DownloadError as D;
        match e {
            D::Store(s) => s.into(),
            D::NoArchive(_, why) => Self::conflict(format!("no archive to download: {why}"), None),
            D::Storage(s) => {
                tracing::warn!(error = %error_chain(&s), "download from the target failed");
                Self::Storage("the target could not serve the archive".to_owned())
            }
        }
    }
}

/// The default service: no route matches.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("route"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_and_code() {
        let cases = [
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("job"), 404, "not_found"),
            (ApiError::conflict("x", None), 409, "conflict"),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (ApiError::MalformedJson("x".into()), 400, "malformed_json"),
            (ApiError::invalid("name", "x"), 422, "invalid"),
            (ApiError::Unavailable("x".into()), 503, "unavailable"),
            (
                ApiError::internal(anyhow::anyhow!("secret cause")),
                500,
                "internal",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(
                e.kind(),
                (StatusCode::from_u16(status).expect("status"), code)
            );
        }
    }

    #[test]
    fn internal_causes_stay_out_of_the_message() {
        let e = ApiError::internal(anyhow::anyhow!("password=hunter2"));
        assert_eq!(e.to_string(), "internal error");
    }
}

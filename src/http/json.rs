//! Request parsing with errors in the API's shape: JSON bodies (1 MiB at most, unknown fields
//! rejected by the types, the offending field named), query strings (the parameter named), path
//! parameters (a malformed id is a 404 like any other unknown id), and cursor pagination.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::future::LocalBoxFuture;
use futures::StreamExt as _;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Past this much an oversized body is no longer read (the connection is dropped instead).
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// A JSON body of type `T`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        Box::pin(async move {
            let mut body = web::BytesMut::new();
            let mut seen = 0usize;
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::MalformedJson(e.to_string()))?;
                seen += chunk.len();
                if seen <= BODY_LIMIT {
                    body.extend_from_slice(&chunk);
                } else if seen > DRAIN_LIMIT {
                    break;
                }
            }
            if seen > BODY_LIMIT || declared.is_some_and(|n| n > BODY_LIMIT) {
                return Err(ApiError::PayloadTooLarge { limit: BODY_LIMIT });
            }
            parse_json(&body).map(ApiJson)
        })
    }
}

/// serde_json's message without its " at line L column C" tail.
fn message_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&tail).unwrap_or(&text).to_owned()
}

/// The name between the first pair of backticks of a serde message (`unknown field `x``).
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() || path == "." {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// Where a string holding NUL is (the database cannot store one), as a field path.
fn nul_path(v: &serde_json::Value, path: &str) -> Option<String> {
    match v {
        serde_json::Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, &format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let p = join(path, k);
            if k.contains('\0') {
                Some(p)
            } else {
                nul_path(v, &p)
            }
        }),
        _ => None,
    }
}

pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the request needs a JSON body".into(),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(message_of(&e)))?;
    if let Some(field) = nul_path(&value, "") {
        return Err(ApiError::Invalid {
            message: format!("{field}: must not contain the NUL character"),
            field,
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = message_of(e.inner());
        let named = message.starts_with("unknown field") || message.starts_with("missing field");
        let field = match quoted(&message) {
            // The path of an unknown field already ends with it; a missing one's is its parent.
            Some(name) if named && path != name && !path.ends_with(&format!(".{name}")) => {
                join(&path, name)
            }
            _ => path,
        };
        let field = if field == "." { String::new() } else { field };
        let message = if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        };
        ApiError::Invalid { field, message }
    })
}

/// A query string parsed into `T`, a bad parameter named.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequest for ApiQuery<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes());
        if let Some((k, _)) = pairs
            .clone()
            .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return std::future::ready(Err(ApiError::BadParameter {
                message: format!("{k}: must not contain the NUL character"),
                field: k.into_owned(),
            }));
        }
        let de = serde_urlencoded::Deserializer::new(pairs);
        std::future::ready(
            serde_path_to_error::deserialize(de)
                .map(ApiQuery)
                .map_err(|e| {
                    let field = e.path().to_string();
                    let message = e.into_inner().to_string();
                    ApiError::BadParameter {
                        message: format!("{field}: {message}"),
                        field,
                    }
                }),
        )
    }
}

/// Path parameters that do not parse name no resource: 404.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| ApiError::NotFound("resource").into())
}

/// Page size when `limit` is absent, and its maximum.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `limit` checked: 1..=500, 50 when absent.
pub fn limit(value: Option<i64>) -> Result<i64, ApiError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadParameter {
            field: "limit".into(),
            message: format!("limit must be between 1 and {MAX_LIMIT}"),
        }),
    }
}

fn bad_cursor() -> ApiError {
    ApiError::BadParameter {
        field: "cursor".into(),
        message: "cursor is not one this API gave out".into(),
    }
}

/// An opaque cursor for a position (created_at, id).
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}|{id}", at.timestamp_micros()))
}

pub fn decode_cursor(cursor: Option<&str>) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad_cursor())?;
    let text = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    let (micros, id) = text.split_once('|').ok_or_else(bad_cursor)?;
    let micros: i64 = micros.parse().map_err(|_| bad_cursor())?;
    let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad_cursor)?;
    let id = Uuid::parse_str(id).map_err(|_| bad_cursor())?;
    Ok(Some((at, id)))
}

/// A cursor over a string key (app ids).
pub fn encode_key_cursor(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("k|{key}"))
}

pub fn decode_key_cursor(cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad_cursor())?;
    let text = String::from_utf8(raw).map_err(|_| bad_cursor())?;
    text.strip_prefix("k|")
        .map(|k| Some(k.to_owned()))
        .ok_or_else(bad_cursor)
}

/// The next cursor: present only when the page is full (there may be more).
pub fn next_cursor<T>(items: &[T], limit: i64, key: impl Fn(&T) -> String) -> Option<String> {
    (usize::try_from(limit).ok() == Some(items.len()))
        .then(|| items.last().map(key))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        name: String,
        keep_last: Option<i64>,
        volumes: Option<Vec<Vol>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Vol {
        kind: String,
    }

    fn field_of(body: &str) -> (String, String) {
        match parse_json::<Body>(body.as_bytes()) {
            Err(ApiError::Invalid { field, message }) => (field, message),
            Err(ApiError::MalformedJson(m)) => ("<malformed>".into(), m),
            other => panic!("unexpected {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field_of(r#"{"name":"a","keepLast":"x"}"#).0, "keepLast");
        assert_eq!(field_of(r#"{"name":"a","bogus":1}"#).0, "bogus");
        assert_eq!(field_of(r#"{"keepLast":1}"#).0, "name");
        assert_eq!(
            field_of(r#"{"name":"a","volumes":[{"kind":1}]}"#).0,
            "volumes[0].kind"
        );
        assert_eq!(
            field_of(r#"{"name":"a","volumes":[{"x":1}]}"#).0,
            "volumes[0].x"
        );
        assert_eq!(field_of(r#"{"name":"a""#).0, "<malformed>");
        assert_eq!(field_of(r#"{"name":"a"} x"#).0, "<malformed>");
        assert_eq!(field_of("[]").0, "");
        assert_eq!(field_of(r#"{"name":"a\u0000"}"#).0, "name");
    }

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time");
        let id = Uuid::new_v4();
        let c = encode_cursor(at, id);
        assert_eq!(decode_cursor(Some(&c)).expect("decodes"), Some((at, id)));
        assert!(decode_cursor(Some("nope")).is_err());
        let k = encode_key_cursor("app-1");
        assert_eq!(
            decode_key_cursor(Some(&k)).expect("decodes"),
            Some("app-1".into())
        );
    }
}

//! Webhook and Slack delivery over HTTP: a POST of JSON with a 10 s limit, no redirects, no
//! proxy, internal addresses refused (see `address`), and for webhooks with a secret the header
//! `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::address::{self, RefusedAddress};
use super::SendError;

/// The limit of one webhook or Slack request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a refusing receiver's answer is kept with the attempt.
const MAX_BODY_IN_ERROR: usize = 300;

/// The HTTP client shared by webhook and Slack deliveries (connection-pooled).
#[derive(Debug, Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    allow_internal: bool,
}

/// One POST to make.
pub struct Post<'a> {
    pub url: &'a str,
    pub body: Vec<u8>,
    /// Signs the body when present.
    pub secret: Option<&'a str>,
    pub event: &'a str,
    /// The outbox row's id: stable across retries, for receivers that deduplicate.
    pub delivery_id: String,
}

/// `sha256=<hex>` of the body under the secret.
pub fn signature(secret: &str, body: &[u8]) -> Result<String, SendError> {
    // HMAC takes keys of any length; the error exists only in the trait's signature.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| SendError::Config("the webhook secret cannot key HMAC-SHA256".into()))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

impl HttpSender {
    pub fn new(allow_internal: bool) -> Result<Self, SendError> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(address::resolver(allow_internal))
            .user_agent(concat!("vardo-backup/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SendError::Config(format!("HTTP client: {}", chain(&e.without_url()))))?;
        Ok(Self {
            client,
            allow_internal,
        })
    }

    /// POSTs the body; answers the HTTP status on success (2xx).
    #[tracing::instrument(skip_all, fields(event = post.event, delivery = %post.delivery_id))]
    pub async fn post(&self, post: Post<'_>) -> Result<u16, SendError> {
        let url = address::check_url(post.url, self.allow_internal)
            .map_err(|why| SendError::Refused(format!("url {why}")))?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Vardo-Event", post.event)
            .header("X-Vardo-Delivery", &post.delivery_id);
        if let Some(secret) = post.secret {
            request = request.header("X-Signature-256", signature(secret, &post.body)?);
        }
        let response = request.body(post.body).send().await.map_err(classify)?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(status);
        }
        let body = response.text().await.unwrap_or_default();
        Err(SendError::Status {
            status,
            body: crate::notice::truncate(body.trim(), MAX_BODY_IN_ERROR),
        })
    }
}

/// A transport error: refused addresses are final, the rest (connect, timeout, reset) is retried.
/// The URL is left out of the message: it may hold a token.
fn classify(e: reqwest::Error) -> SendError {
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(refused) = err.downcast_ref::<RefusedAddress>() {
            return SendError::Refused(refused.0.clone());
        }
        source = err.source();
    }
    if e.is_timeout() {
        return SendError::Network(format!("no answer within {} s", TIMEOUT.as_secs()));
    }
    SendError::Network(chain(&e))
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?").expect("signs"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn internal_receivers_are_refused_without_retry() {
        let sender = HttpSender::new(false).expect("client");
        for url in ["http://127.0.0.1:9/hook", "http://localhost:9/hook"] {
            let err = sender
                .post(Post {
                    url,
                    body: b"{}".to_vec(),
                    secret: None,
                    event: "backup.failed",
                    delivery_id: "d".into(),
                })
                .await
                .expect_err("refused");
            assert!(matches!(err, SendError::Refused(_)), "{url}: {err:?}");
            assert!(!err.retryable());
        }
    }
}

//! `StorageError`: what a storage target operation can fail with.
//!
//! Rules: a message names the operation, the key and the backend's own error text (e.g. the S3 error
//! code), and never a secret — backend text passes through [`Redactor`] before it is kept. Whether a
//! caller may try again later is [`StorageError::is_retryable`].

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("local targets are disabled; set ALLOW_LOCAL_BACKUPS=true")]
    LocalNotAllowed,

    #[error("invalid {kind} target configuration: {reason}")]
    InvalidConfig { kind: &'static str, reason: String },

    #[error("cannot write the SSH private key to a temporary file: {0}")]
    KeyFile(#[source] std::io::Error),

    #[error("object {key} not found on the {kind} target")]
    NotFound { kind: &'static str, key: String },

    /// The backend refused or failed; `message` is its own text, secrets removed.
    #[error("{op} {key} on the {kind} target failed: {message}")]
    Backend {
        kind: &'static str,
        op: &'static str,
        key: String,
        message: String,
        retryable: bool,
    },

    /// The stream being uploaded ended with an error; the partial object was removed.
    #[error("the data for {key} could not be read: {source}")]
    Body {
        key: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{key} was stored with {stored} bytes but {sent} were sent; the object was removed")]
    SizeMismatch { key: String, sent: u64, stored: u64 },

    #[error("{key} is missing on the {kind} target right after its upload completed")]
    MissingAfterUpload { kind: &'static str, key: String },

    /// The object is not the one an earlier read of it saw (see `TargetStorage::download_pinned`).
    #[error("object {key} on the {kind} target changed: {what}")]
    Changed {
        kind: &'static str,
        key: String,
        what: String,
    },
}

impl StorageError {
    /// True when the same call may succeed later without a configuration change (network trouble,
    /// rate limiting, a server error, a source that failed), false for refusals such as bad
    /// credentials, a missing bucket or a disallowed target.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend { retryable, .. } => *retryable,
            Self::Body { .. } | Self::SizeMismatch { .. } | Self::MissingAfterUpload { .. } => true,
            Self::LocalNotAllowed
            | Self::InvalidConfig { .. }
            | Self::KeyFile(_)
            | Self::NotFound { .. }
            | Self::Changed { .. } => false,
        }
    }
}

/// Removes a target's secrets from backend error text. Backends do not echo secrets as far as we
/// know (an S3 signature mismatch reports the string to sign, not the key); this makes sure of it.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<SecretString>,
}

impl Redactor {
    pub(crate) fn new(secrets: Vec<SecretString>) -> Self {
        let secrets = secrets
            .into_iter()
            .filter(|s| !s.expose_secret().is_empty())
            .collect();
        Self { secrets }
    }

    pub(crate) fn redact(&self, text: String) -> String {
        self.secrets.iter().fold(text, |text, secret| {
            let secret = secret.expose_secret();
            if text.contains(secret) {
                text.replace(secret, "[redacted]")
            } else {
                text
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_removes_every_occurrence() {
        let r = Redactor::new(vec![SecretString::from("s3cr3t"), SecretString::from("")]);
        assert_eq!(
            r.redact("a s3cr3t b s3cr3t".into()),
            "a [redacted] b [redacted]"
        );
        assert_eq!(r.redact("nothing here".into()), "nothing here");
    }

    #[test]
    fn local_refusal_says_how_to_allow_it() {
        assert_eq!(
            StorageError::LocalNotAllowed.to_string(),
            "local targets are disabled; set ALLOW_LOCAL_BACKUPS=true"
        );
        assert!(!StorageError::LocalNotAllowed.is_retryable());
    }
}

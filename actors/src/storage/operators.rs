//! One opendal `Operator` per target kind, built from the target's configuration (no I/O except the
//! fs service, which creates its root folder).
//!
//! - s3/r2/b2: the S3 service rooted at `/` of the bucket. The target's prefix is not the operator
//!   root: it is part of every key (see `keys::prefixed_key`), so stored paths read
//!   `{prefix/}{orgSlug}/...`. Path-style requests when an endpoint is set (MinIO, R2, B2, s3s…),
//!   virtual-host style on AWS itself. Environment and profile credentials are never loaded: a
//!   target uses exactly the credentials it was given.
//! - ssh: the SFTP service, which drives the `ssh` binary through the openssh crate:
//!   `ssh://user@host:port`, root = the target's absolute path (created on connect), the key as a
//!   file path (`-i FILE -o IdentitiesOnly=yes`) or, without one, whatever `ssh` finds (agent,
//!   `~/.ssh/id_*`), and `StrictHostKeyChecking=accept-new`.
//! - local: the fs service rooted at the target's folder.

use std::path::Path;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::services::{Fs, Sftp, S3};
use opendal::Operator;
use secrecy::ExposeSecret;

use super::StorageError;
use crate::model::target::{LocalConfig, S3Config, SshConfig};

/// A non-I/O S3 call (stat, delete, list page, part initiation…) that takes longer fails.
const S3_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// One I/O step (sending one part of up to 8 MiB, receiving one chunk) that takes longer fails, as
/// a stalled connection would otherwise hang a backup for ever.
const S3_IO_TIMEOUT: Duration = Duration::from_secs(300);

/// `step_limit` caps both timeouts: a run's stall deadline (see [`crate::progress`]), since a
/// request that moves nothing for that long stalls the run anyway; this way a timed-out request is
/// retried, or its upload aborted, within a few deadlines rather than many minutes after the run
/// gave up on it.
pub(crate) fn s3(config: &S3Config, step_limit: Duration) -> Result<Operator, StorageError> {
    let invalid = |reason: String| StorageError::InvalidConfig { kind: "s3", reason };
    if config.bucket.trim().is_empty() {
        return Err(invalid("the bucket is empty".into()));
    }
    if config.region.trim().is_empty() {
        return Err(invalid("the region is empty (use `auto` for R2)".into()));
    }
    let mut builder = S3::default()
        .root("/")
        .bucket(config.bucket.trim())
        .region(config.region.trim())
        .access_key_id(&config.access_key_id)
        .secret_access_key(config.secret_access_key.expose_secret())
        .disable_config_load()
        .disable_ec2_metadata();
    match config
        .endpoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        // opendal sends path-style requests (`{endpoint}/{bucket}/{key}`) unless told otherwise.
        Some(endpoint) => builder = builder.endpoint(endpoint),
        // AWS: virtual-host style, except for bucket names with dots, which TLS cannot cover.
        None if !config.bucket.contains('.') => builder = builder.enable_virtual_host_style(),
        None => {}
    }
    let operator = Operator::new(builder)
        .map_err(|e| invalid(e.to_string()))?
        // Timeouts first, retries outside them, so a timed out part is sent again.
        .layer(
            TimeoutLayer::new()
                .with_timeout(S3_CALL_TIMEOUT.min(step_limit))
                .with_io_timeout(S3_IO_TIMEOUT.min(step_limit)),
        )
        // Temporary S3 errors (5xx, SlowDown, timeouts) are retried with backoff; a multipart part
        // is resent from the bytes opendal still holds for it.
        .layer(RetryLayer::new().with_jitter())
        .finish();
    Ok(operator)
}

pub(crate) fn sftp(config: &SshConfig, key_file: Option<&Path>) -> Result<Operator, StorageError> {
    let invalid = |reason: String| StorageError::InvalidConfig {
        kind: "ssh",
        reason,
    };
    let host = config
        .host
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(invalid("the host is empty".into()));
    }
    if config.username.trim().is_empty() {
        return Err(invalid("the username is empty".into()));
    }
    // opendal turns any root into an absolute one (`backups` → `/backups/`), and SFTP does not
    // expand `~`; refuse instead of writing somewhere the user did not mean.
    if !config.path.starts_with('/') {
        return Err(invalid(format!(
            "the path must be absolute (starting with /), got {:?}",
            config.path
        )));
    }
    let endpoint = format!("ssh://{}@{host}:{}", config.username.trim(), config.port);
    let mut builder = Sftp::default()
        .endpoint(&endpoint)
        .root(&config.path)
        .known_hosts_strategy("add");
    if let Some(path) = key_file {
        let path = path
            .to_str()
            .ok_or_else(|| invalid("the temporary key file path is not UTF-8".into()))?;
        builder = builder.key(path);
    }
    let operator = Operator::new(builder)
        .map_err(|e| invalid(e.to_string()))?
        .finish();
    Ok(operator)
}

pub(crate) fn fs(config: &LocalConfig) -> Result<Operator, StorageError> {
    let invalid = |reason: String| StorageError::InvalidConfig {
        kind: "local",
        reason,
    };
    if config.path.trim().is_empty() {
        return Err(invalid("the path is empty".into()));
    }
    // The fs builder creates the root folder when it is missing.
    let operator = Operator::new(Fs::default().root(&config.path))
        .map_err(|e| invalid(e.to_string()))?
        .finish();
    Ok(operator)
}

//! `TargetStorage`: one storage target opened for use — open, key naming, stat, delete, download,
//! presign and list. Uploading lives in `upload.rs`.

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt, TryStreamExt};
use opendal::{ErrorKind, Operator};
use secrecy::SecretString;

use super::error::Redactor;
use super::key_file::KeyFile;
use super::keys;
use super::operators;
use super::StorageError;
use crate::codec::Format;
use crate::encryption::{Keyring, Recipients, SUFFIX as SEALED_SUFFIX};
use crate::model::target::TargetConfig;
use crate::model::Compression;
use crate::stream::ByteStream;

/// Which adapter a `TargetStorage` drives; r2 and b2 are the S3 adapter with another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    S3,
    Ssh,
    Local,
}

impl StorageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Ssh => "ssh",
            Self::Local => "local",
        }
    }
}

/// A storage target ready for I/O. Cheap to clone; clones share the operator (and its connection
/// pools) and the SSH key file, which is removed when the last clone is dropped.
#[derive(Clone)]
pub struct TargetStorage {
    pub(super) op: Operator,
    pub(super) kind: StorageKind,
    /// S3 kinds only: the configured prefix, trimmed of slashes, never empty.
    prefix: Option<String>,
    pub(super) redactor: Redactor,
    /// Kept alive for the SFTP sessions opened later; never read.
    _key_file: Option<Arc<KeyFile>>,
    /// The target's age recipients: archives uploaded are encrypted to them (see
    /// [`Self::sealing_to`]).
    recipients: Option<Arc<Recipients>>,
    /// The engine's identities, to read encrypted objects with.
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for TargetStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetStorage")
            .field("kind", &self.kind)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl TargetStorage {
    /// Opens a target (no network I/O: connections are made by the first operation).
    ///
    /// - s3/r2/b2: one S3 operator on the bucket; the prefix is applied by [`Self::object_key`].
    /// - ssh: SFTP at `ssh://user@host:port`, rooted at the (absolute) path; a given private key is
    ///   written to a 0600 temp file that lives as long as this value and its clones; without one
    ///   `ssh` uses the agent. New host keys are accepted and remembered, changed ones refused.
    /// - local: the folder at `path` (created if missing); refused unless `allow_local`.
    pub fn open(config: &TargetConfig, allow_local: bool) -> Result<Self, StorageError> {
        Self::open_with_step_limit(config, allow_local, std::time::Duration::MAX)
    }

    /// [`Self::open`] for a backup or restore: no single S3 request waits longer than
    /// `step_limit`, the run's stall deadline, before it is retried or fails.
    pub fn open_with_step_limit(
        config: &TargetConfig,
        allow_local: bool,
        step_limit: std::time::Duration,
    ) -> Result<Self, StorageError> {
        match config {
            TargetConfig::S3(c) => Ok(Self {
                op: operators::s3(c, step_limit)?,
                kind: StorageKind::S3,
                prefix: keys::normalize_prefix(c.prefix.as_deref()).map(str::to_owned),
                redactor: Redactor::new(vec![c.secret_access_key.clone()]),
                _key_file: None,
                recipients: None,
                keyring: Arc::default(),
            }),
            TargetConfig::Ssh(c) => {
                let key_file = c.private_key.as_ref().map(KeyFile::write).transpose()?;
                let op = operators::sftp(c, key_file.as_ref().map(KeyFile::path))?;
                let secrets: Vec<SecretString> = c.private_key.iter().cloned().collect();
                Ok(Self {
                    op,
                    kind: StorageKind::Ssh,
                    prefix: None,
                    redactor: Redactor::new(secrets),
                    _key_file: key_file.map(Arc::new),
                    recipients: None,
                    keyring: Arc::default(),
                })
            }
            TargetConfig::Local(c) => {
                if !allow_local {
                    return Err(StorageError::LocalNotAllowed);
                }
                Ok(Self {
                    op: operators::fs(c)?,
                    kind: StorageKind::Local,
                    prefix: None,
                    redactor: Redactor::default(),
                    _key_file: None,
                    recipients: None,
                    keyring: Arc::default(),
                })
            }
        }
    }

    /// This storage, encrypting what it uploads to `recipients` (a target with age encryption);
    /// `None` uploads plain objects.
    pub fn sealing_to(mut self, recipients: Option<Recipients>) -> Self {
        self.recipients = recipients.map(Arc::new);
        self
    }

    /// This storage, reading encrypted objects with `keyring`.
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Self {
        self.keyring = keyring;
        self
    }

    /// Whether the engine's identities open an archive encrypted to `recipients` (a backup's
    /// `encrypted_to`; `None`: a plain archive, always readable); if not, why, naming the
    /// fingerprints it would need.
    pub fn opens(&self, recipients: Option<&[String]>) -> Result<(), String> {
        match recipients {
            None => Ok(()),
            Some(r) => self.keyring.opens(r),
        }
    }

    /// The recipients uploads are encrypted to, if any.
    pub fn recipients(&self) -> Option<&Arc<Recipients>> {
        self.recipients.as_ref()
    }

    /// The suffix of the keys of objects uploaded here: `.age` when they are encrypted.
    pub fn sealed_suffix(&self) -> &'static str {
        if self.recipients.is_some() {
            SEALED_SUFFIX
        } else {
            ""
        }
    }

    /// How the object at `key` is read: its compression from the key, decrypted with the
    /// engine's identities when the key ends in `.age`.
    pub fn format(&self, key: &str) -> Result<Format, String> {
        let compression =
            Compression::of_key(key).ok_or_else(|| format!("unknown archive format of {key}"))?;
        Ok(Format {
            compression,
            keyring: key
                .ends_with(SEALED_SUFFIX)
                .then(|| Arc::clone(&self.keyring)),
        })
    }

    pub fn kind(&self) -> StorageKind {
        self.kind
    }

    /// The stored key of a relative key: `{prefix/}{relative}` for S3 kinds, `relative` otherwise
    /// (an ssh or local target's folder plays the prefix's part).
    pub fn object_key(&self, relative: &str) -> String {
        keys::prefixed_key(self.prefix.as_deref(), relative)
    }

    /// Where an object of this target lives, as one string (scheme, bucket or host, root, key):
    /// two targets that write to one place give the same location for the same key.
    pub fn location(&self, key: &str) -> String {
        let info = self.op.info();
        format!("{}:{}:{}{}", info.scheme(), info.name(), info.root(), key)
    }

    /// The size of the object at `key`, `None` if there is none.
    #[tracing::instrument(skip(self), fields(kind = self.kind.as_str()))]
    pub async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self.op.stat(key).await {
            Ok(meta) if meta.is_dir() => Ok(None),
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.backend_error("stat", key, e)),
        }
    }

    /// Deletes the object at `key`; an absent object counts as deleted.
    #[tracing::instrument(skip(self), fields(kind = self.kind.as_str()))]
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.backend_error("delete", key, e)),
        }
    }

    /// Streams the object at `key` in the backend's chunks (an S3 GET body, 2 MiB SFTP reads, file
    /// reads), never as one buffer. An absent object is [`StorageError::NotFound`].
    #[tracing::instrument(skip(self), fields(kind = self.kind.as_str()))]
    pub async fn download(&self, key: &str) -> Result<ByteStream, StorageError> {
        let reader = self
            .op
            .reader(key)
            .await
            .map_err(|e| self.read_error(key, e))?;
        self.stream(key, reader, ..).await
    }

    /// The body of `reader` over `range` as a [`ByteStream`], its first chunk already fetched.
    pub(super) async fn stream(
        &self,
        key: &str,
        reader: opendal::Reader,
        range: impl std::ops::RangeBounds<u64>,
    ) -> Result<ByteStream, StorageError> {
        let mut body = reader
            .into_bytes_stream(range)
            .await
            .map_err(|e| self.read_error(key, e))?;
        // opendal opens the object on the first poll: take the first chunk now so that a missing
        // object or a refusal is this call's error rather than the stream's.
        let first = match body.next().await {
            None => return Ok(stream::empty().boxed()),
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(self.read_error_io(key, e)),
        };
        let redactor = self.redactor.clone();
        let rest = body.map_err(move |e| stream_error(&redactor, e));
        Ok(stream::once(async move { Ok(first) }).chain(rest).boxed())
    }

    /// A pre-signed GET URL valid for `ttl` for S3 kinds (at most 7 days on AWS); `None` for ssh and
    /// local targets, whose downloads stream through the engine instead.
    #[tracing::instrument(skip(self), fields(kind = self.kind.as_str()))]
    pub async fn presign_read(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        if self.kind != StorageKind::S3 {
            return Ok(None);
        }
        let request = self
            .op
            .presign_read(key, ttl)
            .await
            .map_err(|e| self.backend_error("presign", key, e))?;
        Ok(Some(request.uri().to_string()))
    }

    /// The keys of the objects whose key starts with `prefix` (a stored key prefix, as
    /// [`Self::object_key`] makes them), sorted. Folders are not listed.
    #[tracing::instrument(skip(self), fields(kind = self.kind.as_str()))]
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let prefix = prefix.trim_start_matches('/');
        let root = keys::list_root(prefix);
        let list_error = |e| self.backend_error("list", prefix, e);
        let mut lister = self
            .op
            .lister_with(root)
            .recursive(true)
            .await
            .map_err(list_error)?;
        let mut found = Vec::new();
        while let Some(entry) = lister.try_next().await.map_err(list_error)? {
            if entry.metadata().is_file() && entry.path().starts_with(prefix) {
                found.push(entry.path().to_owned());
            }
        }
        found.sort();
        Ok(found)
    }

    /// A backend failure as a `StorageError`, its text stripped of this target's secrets.
    pub(super) fn backend_error(
        &self,
        op: &'static str,
        key: &str,
        e: opendal::Error,
    ) -> StorageError {
        StorageError::Backend {
            kind: self.kind.as_str(),
            op,
            key: key.to_owned(),
            message: self.redactor.redact(e.to_string()),
            retryable: is_retryable(&e),
        }
    }

    pub(super) fn read_error(&self, key: &str, e: opendal::Error) -> StorageError {
        if e.kind() == ErrorKind::ConditionNotMatch {
            return StorageError::Changed {
                kind: self.kind.as_str(),
                key: key.to_owned(),
                what: "the target refused the read: its ETag is no longer the one verified".into(),
            };
        }
        if e.kind() == ErrorKind::NotFound {
            return StorageError::NotFound {
                kind: self.kind.as_str(),
                key: key.to_owned(),
            };
        }
        self.backend_error("download", key, e)
    }

    fn read_error_io(&self, key: &str, e: std::io::Error) -> StorageError {
        // opendal wraps its own error in the io::Error of a bytes stream.
        match e
            .into_inner()
            .map(|inner| inner.downcast::<opendal::Error>())
        {
            Some(Ok(e)) => self.read_error(key, *e),
            Some(Err(other)) => StorageError::Backend {
                kind: self.kind.as_str(),
                op: "download",
                key: key.to_owned(),
                message: self.redactor.redact(other.to_string()),
                retryable: true,
            },
            None => StorageError::Backend {
                kind: self.kind.as_str(),
                op: "download",
                key: key.to_owned(),
                message: "the download stream failed".into(),
                retryable: true,
            },
        }
    }
}

/// Whether trying again later may help. By kind first: opendal's `RetryLayer` (on S3 operators) marks
/// every error that leaves it "persistent", a refusal included, so the status alone cannot tell.
fn is_retryable(e: &opendal::Error) -> bool {
    match e.kind() {
        ErrorKind::RateLimited => true,
        ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::ConfigInvalid
        | ErrorKind::Unsupported
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory
        | ErrorKind::AlreadyExists
        | ErrorKind::IsSameFile
        | ErrorKind::ConditionNotMatch
        | ErrorKind::RangeNotSatisfied => false,
        // Network trouble, 5xx, timeouts, ssh connection failures, and unclassified S3 errors.
        _ => !e.is_permanent(),
    }
}

/// An error in the middle of a download, for the stream's consumer. opendal marks most of them
/// `ErrorKind::Interrupted`, which std's read loops treat as "try again" and would retry for ever;
/// give them a kind that ends the read.
fn stream_error(redactor: &Redactor, e: std::io::Error) -> std::io::Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => std::io::ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, redactor.redact(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::target::{S3Config, SshConfig};

    fn s3(endpoint: Option<&str>, prefix: Option<&str>) -> TargetConfig {
        TargetConfig::S3(S3Config {
            bucket: "my-backups".into(),
            region: "auto".into(),
            access_key_id: "AKID".into(),
            secret_access_key: SecretString::from("very-secret-value"),
            endpoint: endpoint.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
        })
    }

    #[test]
    fn s3_object_keys_carry_the_prefix() -> Result<(), StorageError> {
        let storage = TargetStorage::open(&s3(Some("https://x.example"), Some("/p/q/")), false)?;
        assert_eq!(storage.kind(), StorageKind::S3);
        assert_eq!(
            storage.object_key("acme/a/v/t.tar.gz"),
            "p/q/acme/a/v/t.tar.gz"
        );
        let storage = TargetStorage::open(&s3(None, Some("")), false)?;
        assert_eq!(storage.object_key("acme/a/v/t.tar.gz"), "acme/a/v/t.tar.gz");
        Ok(())
    }

    // Presigning signs locally: no request is sent, so these need no server.
    #[tokio::test]
    async fn s3_presign_is_path_style_with_an_endpoint() -> Result<(), StorageError> {
        let storage = TargetStorage::open(&s3(Some("https://acc.r2.example.com"), None), false)?;
        let url = storage
            .presign_read("acme/a/v/t.tar.gz", Duration::from_secs(3600))
            .await?
            .unwrap_or_default();
        assert!(
            url.starts_with("https://acc.r2.example.com/my-backups/acme/a/v/t.tar.gz?"),
            "{url}"
        );
        assert!(url.contains("X-Amz-Expires=3600"), "{url}");
        assert!(!url.contains("very-secret-value"), "{url}");
        Ok(())
    }

    #[tokio::test]
    async fn s3_presign_is_virtual_host_style_on_aws() -> Result<(), StorageError> {
        let TargetConfig::S3(mut config) = s3(None, None) else {
            unreachable!()
        };
        config.region = "eu-west-1".into();
        let storage = TargetStorage::open(&TargetConfig::S3(config), false)?;
        let url = storage
            .presign_read("k", Duration::from_secs(60))
            .await?
            .unwrap_or_default();
        assert!(
            url.starts_with("https://my-backups.s3.eu-west-1.amazonaws.com/k?"),
            "{url}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn ssh_targets_do_not_presign_and_keep_their_key_file() -> Result<(), StorageError> {
        let config = TargetConfig::Ssh(SshConfig {
            host: "backup.example".into(),
            username: "vardo".into(),
            path: "/srv/backups".into(),
            port: 22,
            private_key: Some(SecretString::from("not a real key")),
        });
        let storage = TargetStorage::open(&config, false)?;
        assert_eq!(storage.kind(), StorageKind::Ssh);
        assert_eq!(storage.object_key("acme/a/v/t.tar.gz"), "acme/a/v/t.tar.gz");
        let path = storage
            ._key_file
            .as_ref()
            .map(|k| k.path().to_path_buf())
            .unwrap_or_default();
        assert!(path.is_file());
        let clone = storage.clone();
        drop(storage);
        assert!(path.is_file(), "a clone keeps the key file");
        assert_eq!(
            clone.presign_read("k", Duration::from_secs(60)).await?,
            None
        );
        drop(clone);
        assert!(!path.exists(), "the last clone removes it");
        Ok(())
    }
}

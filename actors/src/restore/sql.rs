//! A Postgres dump's restore: verified first, replayed second, never staged.
//!
//! 1. Verification: the archive is downloaded once and hashed — as a whole and block by block
//!    ([`codec::fingerprint`]) — and compared with the backup's recorded size and SHA-256. A
//!    mismatch, or a download that fails, refuses the restore before psql is started: nothing the
//!    archive says is executed, so a replaced archive cannot run its own `COMMIT`, `\connect`,
//!    `\!` or `\o`.
//! 2. Replay: the same object is downloaded again, pinned to what verification read (its stat,
//!    and on S3 kinds a read conditional on its ETag), and each block is handed on only once it is
//!    identical to the block verified ([`codec::same_blocks`]); psql can only ever receive a prefix
//!    of the verified dump. It goes through the decompressor into `psql` in the database
//!    container, framed as one transaction by the engine itself: `BEGIN` first; `COMMIT` only after
//!    the last byte arrived and matched the recorded size and SHA-256 again. Whatever else happens
//!    — the download is cut, the target stalls, the object changed after verification, the engine
//!    dies — psql's input ends without a `COMMIT`, its session ends with the transaction open, and
//!    the server rolls everything back. (`psql --single-transaction` is not used: it commits
//!    whatever it has read when its input ends.)
//!
//! psql's own `\restrict` (15.14 and later) is not added around the dump: `pg_dump` 15.14 and
//! later already writes `\restrict KEY` … `\unrestrict KEY` around its output, and psql in
//! restricted mode refuses a second `\restrict` ("backslash commands are restricted; only
//! \unrestrict is allowed"), so a wrapper of ours would break every dump of a current pg_dump,
//! while older ones (no `\restrict` in psql) would not have it at all. Checked with Debian's
//! PostgreSQL 15.18. Verification before replay is what keeps a dump we did not write from psql.
//!
//! Verification and replay each fail as stalled when they move nothing for the stall deadline;
//! a stalled replay's session is ended on the server.

use bytes::Bytes;
use futures::StreamExt as _;

use super::{Log, RestoreError};
use crate::codec::{self, Digest, Fingerprint, Payload};
use crate::docker::DockerClient;
use crate::progress::stage;
use crate::storage::{ObjectPin, StorageError, TargetStorage};
use crate::stream::ByteStream;
use crate::volume_runner::{PgLogin, PgSession};

const BEGIN: &[u8] = b"BEGIN;\n";
/// Printed by psql only once the `COMMIT` before it succeeded (with `ON_ERROR_STOP` a failing
/// statement ends psql before it).
pub(crate) const COMMITTED: &str = "vardo-backup: restore committed";

fn commit() -> Bytes {
    Bytes::from(format!("\nCOMMIT;\n\\echo {COMMITTED}\n"))
}

/// The dump framed by `BEGIN` and, only after `verified` says the whole archive matched, `COMMIT`.
/// An error of the dump stream, or a failed verification, ends the framed stream with that error
/// and no `COMMIT`.
pub fn framed(
    sql: ByteStream,
    verified: tokio::sync::oneshot::Receiver<Vec<crate::tar_guard::HeldSymlink>>,
) -> ByteStream {
    async_stream::stream! {
        yield Ok(Bytes::from_static(BEGIN));
        let mut sql = sql;
        while let Some(item) = sql.next().await {
            match item {
                Ok(chunk) => yield Ok(chunk),
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        match verified.await {
            Ok(_) => yield Ok(commit()),
            Err(_) => yield Err(std::io::Error::other(
                "the archive could not be verified to its end",
            )),
        }
    }
    .boxed()
}

/// What a dump's restore needs.
pub struct DumpRestore<'a> {
    pub docker: &'a DockerClient,
    pub storage: &'a TargetStorage,
    pub key: &'a str,
    pub format: crate::codec::Format,
    pub expected: Digest,
    pub volume: &'a str,
    pub restore_id: uuid::Uuid,
    /// The replay fails as stalled when the download or psql moves nothing for the deadline.
    pub watch: super::Watch<'a>,
    /// A shutdown whose grace ran out: the download ends, and psql never gets `COMMIT`.
    pub cancel: &'a tokio_util::sync::CancellationToken,
}

impl DumpRestore<'_> {
    pub async fn run(self, log: &Log<'_>) -> Result<(), RestoreError> {
        let docker = self.docker;
        let volume = self.volume;
        let container = docker
            .container_using_volume(volume)
            .await?
            .ok_or_else(|| {
                RestoreError::Failed(format!(
                    "no running container mounts {volume}: start the database container, then restore"
                ))
            })?;
        let pin = self.storage.pin(self.key).await?;
        log.line(&format!(
            "verifying {} before psql is started: downloading it once to check its size and SHA-256",
            self.key
        ))
        .await?;
        let progress = self.watch.progress;
        let verified = progress
            .deadline(
                self.watch.deadline,
                &[stage::DOWNLOAD],
                verify_first(self.storage, self.key, &pin, &self.expected, progress),
            )
            .await
            .map_err(|stalled| {
                RestoreError::Failed(format!(
                    "{stalled}; psql was not started, nothing was changed"
                ))
            })??;
        log.line(&format!(
            "the archive matches the backup's size and SHA-256; replaying the dump with psql in \
             container {} in one transaction, from a second download checked block by block \
             against the verified one, committed only once the archive is verified to its end",
            container.name
        ))
        .await?;
        let session = PgSession {
            container: container.id.clone(),
            login: PgLogin::of(&container),
            name: format!("vardo-backup restore {}", self.restore_id),
        };
        let mut replayed = super::sql_replay::Replayed::default();
        let replay = async {
            let download =
                self.storage
                    .download_pinned(self.key, &pin)
                    .await
                    .map_err(|e| match e {
                        StorageError::Changed { .. } => RestoreError::Failed(format!(
                            "the archive changed between verification and replay ({e}); psql was \
                         not started, nothing was changed"
                        )),
                        other => other.into(),
                    })?;
            let (sql, verified) = codec::unpack(
                progress
                    .meter(stage::DOWNLOAD)
                    .stream(crate::stream::until_cancelled(
                        codec::same_blocks(download, verified),
                        self.cancel.clone(),
                        super::SHUTTING_DOWN,
                    )),
                self.format,
                Payload::Sql,
                self.expected,
            );
            let sql = progress.meter(stage::REPLAY).stream(sql);
            Ok::<_, RestoreError>(
                super::sql_replay::replay(docker, &session, sql, verified, &mut replayed).await,
            )
        };
        let outcome = progress
            .deadline(
                self.watch.deadline,
                &[stage::DOWNLOAD, stage::REPLAY],
                replay,
            )
            .await;
        let committed = std::mem::take(&mut replayed.committed);
        let before = if committed.is_empty() {
            String::new()
        } else {
            format!(" (committed before it: {})", committed.join(", "))
        };
        match outcome {
            Ok(Ok(Ok(()))) => {
                log.line(&format!("restored and committed: {}", committed.join(", ")))
                    .await?;
                Ok(())
            }
            Ok(Ok(Err(why))) => Err(RestoreError::Failed(format!("{why}{before}"))),
            Ok(Err(e)) => Err(e),
            Err(stalled) => {
                // psql's input was dropped without COMMIT; ending its session on the server makes
                // sure the transaction is rolled back (and its locks gone) before the volume's
                // lock is released, even if psql itself is blocked.
                session.end(docker).await;
                Err(RestoreError::Failed(format!(
                    "{stalled}; psql never received COMMIT, so its transaction was rolled back \
                     and the database is as it was{before}"
                )))
            }
        }
    }
}

/// Pass 1: downloads the object pinned by `pin` once, hashing it whole and block by block, and
/// checks it against the backup's record. Any failure refuses the restore; psql has not started.
pub(crate) async fn verify_first(
    storage: &TargetStorage,
    key: &str,
    pin: &ObjectPin,
    expected: &Digest,
    progress: &crate::progress::Progress,
) -> Result<Fingerprint, RestoreError> {
    let refused = |why: String| {
        RestoreError::Failed(format!("{why}; psql was not started, nothing was changed"))
    };
    let mismatch = |size: u64, sha: Option<&str>| {
        let sha = sha.map(|s| format!(" with sha256:{s}")).unwrap_or_default();
        refused(format!(
            "checksum mismatch: the archive has {size} bytes{sha}, the backup recorded {} bytes \
             with sha256:{}",
            expected.size, expected.sha256_hex
        ))
    };
    if pin.size != expected.size {
        return Err(mismatch(pin.size, None));
    }
    let changed = |e: StorageError| match e {
        StorageError::Changed { .. } => {
            refused(format!("the archive changed while it was verified ({e})"))
        }
        other => other.into(),
    };
    let download = storage.download_pinned(key, pin).await.map_err(changed)?;
    let download = progress.meter(stage::DOWNLOAD).stream(download);
    let fingerprint = codec::fingerprint(download, codec::block_size(expected.size))
        .await
        .map_err(|e| {
            refused(format!(
                "the archive could not be downloaded to verify it ({e})"
            ))
        })?;
    storage.check_pin(key, pin).await.map_err(changed)?;
    if fingerprint.digest != *expected {
        return Err(mismatch(
            fingerprint.digest.size,
            Some(&fingerprint.digest.sha256_hex),
        ));
    }
    Ok(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    async fn collect(s: ByteStream) -> (Vec<u8>, bool) {
        let items: Vec<_> = s.collect().await;
        let failed = items.iter().any(Result::is_err);
        let bytes = items
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|b| b.to_vec())
            .collect();
        (bytes, failed)
    }

    #[tokio::test]
    async fn commit_only_after_a_clean_end_and_a_verified_archive() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(Vec::new());
        let sql = stream::iter([Ok(Bytes::from_static(b"DROP TABLE t;\n"))]).boxed();
        let (bytes, failed) = collect(framed(sql, rx)).await;
        let text = String::from_utf8(bytes).unwrap_or_default();
        assert!(!failed);
        assert!(text.starts_with("BEGIN;\nDROP TABLE t;\n"), "{text}");
        assert!(text.contains("\nCOMMIT;\n"), "{text}");
    }

    #[tokio::test]
    async fn a_cut_stream_never_gets_a_commit() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(Vec::new());
        let sql = stream::iter([
            Ok(Bytes::from_static(b"DROP TABLE t;\n")),
            Err(std::io::Error::other("connection reset")),
        ])
        .boxed();
        let (bytes, failed) = collect(framed(sql, rx)).await;
        assert!(failed);
        assert!(!String::from_utf8_lossy(&bytes).contains("COMMIT"));
    }

    #[tokio::test]
    async fn an_unverified_archive_never_gets_a_commit() {
        let (tx, rx) = tokio::sync::oneshot::channel::<Vec<crate::tar_guard::HeldSymlink>>();
        drop(tx);
        let sql = stream::iter([Ok(Bytes::from_static(b"DROP TABLE t;\n"))]).boxed();
        let (bytes, failed) = collect(framed(sql, rx)).await;
        assert!(failed);
        assert!(!String::from_utf8_lossy(&bytes).contains("COMMIT"));
    }
}

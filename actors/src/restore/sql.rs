//! A Postgres dump's restore: one download, streamed through the SHA-256 check and the
//! decompressor into `psql` in the database container, framed as one transaction by the engine
//! itself. `BEGIN` goes first; `COMMIT` is sent only after the last byte of the archive arrived and
//! matched the recorded size and SHA-256. Whatever else happens — the download is cut, the target
//! stalls, the archive differs, the engine dies — psql's input ends without a `COMMIT`, its session
//! ends with the transaction open, and the server rolls everything back. (`psql
//! --single-transaction` is not used: it commits whatever it has read when its input ends.)

use bytes::Bytes;
use futures::StreamExt as _;

use super::{Log, RestoreError};
use crate::codec::{self, Digest, Payload};
use crate::docker::DockerClient;
use crate::model::Compression;
use crate::storage::TargetStorage;
use crate::stream::ByteStream;
use crate::volume_runner::PgLogin;

const BEGIN: &[u8] = b"BEGIN;\n";
/// Printed by psql only once the `COMMIT` before it succeeded (with `ON_ERROR_STOP` a failing
/// statement ends psql before it).
const COMMITTED: &str = "vardo-backup: restore committed";

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

/// The archive a dump restore reads: where it is, and what ends its download early.
pub struct DumpArchive<'a> {
    pub storage: &'a TargetStorage,
    pub key: &'a str,
    pub compression: Compression,
    pub expected: Digest,
    /// A shutdown whose grace ran out: the download ends, and psql never gets `COMMIT`.
    pub cancel: &'a tokio_util::sync::CancellationToken,
}

pub async fn restore_dump(
    docker: &DockerClient,
    archive: DumpArchive<'_>,
    volume: &str,
    log: &Log<'_>,
) -> Result<(), RestoreError> {
    let DumpArchive {
        storage,
        key,
        compression,
        expected,
        cancel,
    } = archive;
    let container = docker
        .container_using_volume(volume)
        .await?
        .ok_or_else(|| {
            RestoreError::Failed(format!(
                "no running container mounts {volume}: start the database container, then restore"
            ))
        })?;
    log.line(&format!(
        "replaying the dump with psql in container {} in one transaction, committed only once \
         the archive is verified to its end",
        container.name
    ))
    .await?;
    let login = PgLogin::of(&container);
    let cmd = login.command(&["psql", "-X", "-v", "ON_ERROR_STOP=1", "--quiet"]);
    let (sql, verified) = codec::unpack(
        crate::stream::until_cancelled(
            storage.download(key).await?,
            cancel.clone(),
            super::SHUTTING_DOWN,
        ),
        compression,
        Payload::Sql,
        expected,
    );
    let outcome = docker
        .exec_write(&container.id, cmd, login.env(), framed(sql, verified))
        .await;
    match outcome {
        Err(crate::docker::DockerError::Input(e)) => Err(RestoreError::Failed(format!(
            "the archive did not arrive whole and unchanged ({e}); psql never received COMMIT, \
             so its transaction was rolled back and the database is as it was"
        ))),
        Err(e) => Err(RestoreError::Failed(format!(
            "the replay was interrupted ({e}); psql never received COMMIT, so its transaction \
             was rolled back and the database is as it was"
        ))),
        Ok(out) if out.exit_code == 0 && out.stdout.contains(COMMITTED) => Ok(()),
        Ok(out) if out.exit_code == 0 => Err(RestoreError::Failed(format!(
            "psql ended without confirming the commit; the transaction was rolled back: {}",
            out.stderr.trim()
        ))),
        Ok(out) => Err(RestoreError::Failed(format!(
            "psql exited with status {}; its transaction was rolled back and the database is \
             as it was: {}",
            out.exit_code,
            out.stderr.trim()
        ))),
    }
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

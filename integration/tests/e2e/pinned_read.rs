//! Reading an object again as the object read before (`TargetStorage::pin` and
//! `download_pinned`), against the real S3 server, sshd and a local folder: an object replaced
//! after it was pinned is refused before a byte of it is read. This is the storage half of a
//! Postgres restore's replay; the other half, each replayed block checked against the verified
//! one, is what covers a replacement that a stat cannot see (see `postgres_cut`).

use bytes::Bytes;
use futures::StreamExt as _;
use uuid::Uuid;
use vardo_actors::model::target::{LocalConfig, SshConfig, TargetConfig};
use vardo_actors::storage::{StorageError, TargetStorage};
use vardo_actors::stream::ByteStream;
use vardo_integration::s3::TestBucket;
use vardo_integration::setting;

fn body(bytes: &[u8]) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(Bytes::copy_from_slice(bytes))]))
}

async fn read(s: ByteStream) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Upload `first`, pin it, read it pinned; replace it with `second`; the pinned read is refused
/// and says what changed; a new pin reads `second`.
async fn replaced_after_pinning_is_refused(
    storage: &TargetStorage,
    first: &[u8],
    second: &[u8],
    changed: &str,
) -> anyhow::Result<()> {
    let key = storage.object_key(&format!("pinned/{}.sql.gz", Uuid::new_v4()));
    storage.upload(&key, body(first)).await?;
    let pin = storage.pin(&key).await?;
    assert_eq!(pin.size, first.len() as u64);
    assert_eq!(
        read(storage.download_pinned(&key, &pin).await?).await?,
        first
    );
    storage.check_pin(&key, &pin).await?;

    storage.upload(&key, body(second)).await?;
    match storage.download_pinned(&key, &pin).await {
        Err(e @ StorageError::Changed { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&key) && text.contains(changed), "{text}");
            assert!(!e.is_retryable());
        }
        Err(e) => panic!("expected Changed, got {e}"),
        Ok(_) => panic!("a replaced object was read under the old pin"),
    }
    let now = storage.pin(&key).await?;
    assert_eq!(
        read(storage.download_pinned(&key, &now).await?).await?,
        second
    );

    storage.delete(&key).await?;
    match storage.check_pin(&key, &now).await {
        Err(StorageError::Changed { what, .. }) => assert_eq!(what, "it was removed"),
        other => panic!("a removed object: expected Changed, got {other:?}"),
    }
    Ok(())
}

/// S3: the ETag pins it, so even a replacement of the same size within the same second is seen.
#[tokio::test]
async fn s3_an_object_replaced_after_pinning_is_refused() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let storage = bucket.storage();
    let result = replaced_after_pinning_is_refused(
        &storage,
        b"the verified dump",
        b"a crafted dump!!!",
        "ETag",
    )
    .await;
    bucket.remove().await?;
    result
}

/// SFTP reports size and mtime to the second: the replacement here differs in size.
#[tokio::test]
async fn ssh_an_object_replaced_after_pinning_is_refused() -> anyhow::Result<()> {
    let folder = std::path::Path::new(&setting("VARDO_TEST_SSH_ROOT"))
        .join(format!("vardo-{}", Uuid::new_v4()));
    let config = TargetConfig::Ssh(SshConfig {
        host: setting("VARDO_TEST_SSH_HOST"),
        username: setting("VARDO_TEST_SSH_USER"),
        path: folder.to_string_lossy().into_owned(),
        port: setting("VARDO_TEST_SSH_PORT").parse()?,
        private_key: Some(std::fs::read_to_string(setting("VARDO_TEST_SSH_KEY"))?.into()),
    });
    let storage = TargetStorage::open(&config, false)?;
    let result = replaced_after_pinning_is_refused(
        &storage,
        b"the verified dump",
        b"longer crafted dump",
        "size",
    )
    .await;
    let _ = std::fs::remove_dir_all(&folder);
    result
}

#[tokio::test]
async fn local_an_object_replaced_after_pinning_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = TargetConfig::Local(LocalConfig {
        path: dir.path().to_string_lossy().into_owned(),
    });
    let storage = TargetStorage::open(&config, true)?;
    replaced_after_pinning_is_refused(
        &storage,
        b"the verified dump",
        b"longer crafted dump",
        "size",
    )
    .await
}

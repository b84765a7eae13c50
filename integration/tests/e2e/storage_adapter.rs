//! The storage adapter (`vardo_actors::storage`) against the real services of the test bed: s3s-fs
//! (an S3 server that checks signatures), sshd (SFTP) and a temporary folder. No mocks. Each test
//! has its own bucket or folder, named by a UUID, and removes it at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use futures::{stream, StreamExt};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use vardo_actors::model::target::{LocalConfig, SshConfig, TargetConfig};
use vardo_actors::storage::{archive_relative_key, archive_timestamp, StorageError, TargetStorage};
use vardo_actors::stream::ByteStream;
use vardo_integration::s3::TestBucket;
use vardo_integration::setting;

const MIB: usize = 1024 * 1024;
const BIG: usize = 20 * MIB;
const CHUNK: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Data: a deterministic pseudo-random stream and its sha256, never held whole in memory.

/// xorshift64*: fast, deterministic, incompressible enough for an upload test.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

/// `total` bytes in `chunk`-sized pieces; after `fail_after` bytes (if any) the stream ends with an
/// error, first calling `at_failure` (to look at the backend while the upload is half way).
fn noise_stream(
    seed: u64,
    total: usize,
    chunk: usize,
    fail_after: Option<(usize, Box<dyn FnOnce() + Send>)>,
) -> ByteStream {
    let state = (Noise::new(seed), 0_usize, fail_after);
    stream::unfold(Some(state), move |state| async move {
        let (mut noise, sent, mut fail) = state?;
        if let Some((limit, _)) = &fail {
            if sent >= *limit {
                if let Some((_, at_failure)) = fail.take() {
                    at_failure();
                }
                let err = std::io::Error::other("the archive source failed half way");
                return Some((Err(err), None));
            }
        }
        if sent >= total {
            return None;
        }
        let n = chunk.min(total - sent);
        let mut buf = vec![0_u8; n];
        noise.fill(&mut buf);
        Some((Ok(Bytes::from(buf)), Some((noise, sent + n, fail))))
    })
    .boxed()
}

fn noise_sha256(seed: u64, total: usize, chunk: usize) -> String {
    let mut noise = Noise::new(seed);
    let mut hasher = Sha256::new();
    let mut left = total;
    let mut buf = vec![0_u8; chunk];
    while left > 0 {
        let n = chunk.min(left);
        noise.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n;
    }
    hex::encode(hasher.finalize())
}

/// Reads a download to its end: (sha256, size, number of chunks, largest chunk).
async fn drain(mut body: ByteStream) -> anyhow::Result<(String, usize, usize, usize)> {
    let mut hasher = Sha256::new();
    let (mut size, mut chunks, mut largest) = (0, 0, 0);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len();
        chunks += 1;
        largest = largest.max(chunk.len());
    }
    Ok((hex::encode(hasher.finalize()), size, chunks, largest))
}

fn relative_key(volume: &str) -> String {
    let ts = archive_timestamp(chrono::Utc::now());
    archive_relative_key("acme", "shop", volume, &ts, "tar.gz")
}

// ---------------------------------------------------------------------------------------------
// S3: a bucket per test, created with a signed CreateBucket (rusty-s3 presigns, reqwest sends).

/// s3s-fs keeps `.bucket-{b64(bucket)}.object-{b64(key)}.upload-{id}.metadata.json` in its data
/// folder from CreateMultipartUpload until the upload is completed or aborted (it has no
/// ListMultipartUploads).
fn open_multipart_uploads(bucket: &str, key: &str) -> Vec<String> {
    let marker = format!(
        ".bucket-{}.object-{}.upload-",
        URL_SAFE_NO_PAD.encode(bucket),
        URL_SAFE_NO_PAD.encode(key)
    );
    let root = PathBuf::from(setting("VARDO_TEST_S3_ROOT"));
    let Ok(entries) = std::fs::read_dir(&root) else {
        panic!("cannot read the s3s-fs data folder {}", root.display())
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(&marker))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// SSH: a folder per test under the sshd's base folder (same machine, so the test can look at it).

struct TestSshFolder {
    path: PathBuf,
}

impl TestSshFolder {
    fn new() -> Self {
        let path =
            Path::new(&setting("VARDO_TEST_SSH_ROOT")).join(format!("vardo-{}", Uuid::new_v4()));
        Self { path }
    }

    fn config(&self) -> anyhow::Result<TargetConfig> {
        let key = std::fs::read_to_string(setting("VARDO_TEST_SSH_KEY"))?;
        Ok(TargetConfig::Ssh(SshConfig {
            host: setting("VARDO_TEST_SSH_HOST"),
            username: setting("VARDO_TEST_SSH_USER"),
            path: self.path.to_string_lossy().into_owned(),
            port: setting("VARDO_TEST_SSH_PORT").parse()?,
            private_key: Some(SecretString::from(key)),
        }))
    }
}

impl Drop for TestSshFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The whole life of one object, the same for every kind.

/// Upload 20 MiB, stat, download and compare, presign, list, delete twice, stat → None.
/// Returns the presigned URL, if any, checked already.
async fn round_trip(storage: &TargetStorage, key: &str) -> anyhow::Result<Option<String>> {
    let seed = 0x5eed_0001;
    let expected = noise_sha256(seed, BIG, CHUNK);

    let size = storage
        .upload(key, noise_stream(seed, BIG, CHUNK, None))
        .await?;
    assert_eq!(size, BIG as u64);
    assert_eq!(storage.stat(key).await?, Some(BIG as u64));

    let (sha, got, chunks, largest) = drain(storage.download(key).await?).await?;
    assert_eq!(got, BIG);
    assert_eq!(sha, expected, "downloaded bytes differ");
    assert!(
        chunks > 1 && largest <= 8 * MIB,
        "streamed in {chunks} chunks, largest {largest}"
    );

    let url = storage.presign_read(key, Duration::from_secs(3600)).await?;
    if let Some(url) = &url {
        let resp = reqwest::get(url).await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "presigned GET: {}",
            resp.status()
        );
        let body = resp.bytes().await?;
        assert_eq!(body.len(), BIG);
        assert_eq!(
            hex::encode(Sha256::digest(&body)),
            expected,
            "presigned bytes differ"
        );
    }

    let folder = &key[..=key.rfind('/').unwrap_or(0)];
    assert_eq!(storage.list(folder).await?, vec![key.to_owned()]);
    assert_eq!(storage.list(key).await?, vec![key.to_owned()]);
    assert!(storage.list(&format!("{folder}nothing-")).await?.is_empty());
    assert!(storage.list("no-such-org/").await?.is_empty());

    storage.delete(key).await?;
    storage.delete(key).await?;
    assert_eq!(storage.stat(key).await?, None);
    assert!(storage.list(folder).await?.is_empty());
    match storage.download(key).await {
        Err(StorageError::NotFound { .. }) => {}
        Err(e) => panic!("download of a deleted object: expected NotFound, got {e}"),
        Ok(_) => panic!("download of a deleted object succeeded"),
    }
    Ok(url)
}

/// An upload whose source fails after 18 MiB (S3: a multipart upload is open by then) returns the
/// source's error and leaves no object. `partial_seen` reports what the backend held at the failure.
async fn failed_upload_leaves_nothing(
    storage: &TargetStorage,
    key: &str,
    look_at_backend: Box<dyn FnOnce() + Send>,
) -> anyhow::Result<()> {
    let body = noise_stream(7, BIG, CHUNK, Some((18 * MIB, look_at_backend)));
    match storage.upload(key, body).await {
        Err(e @ StorageError::Body { .. }) => {
            assert!(
                e.to_string().contains("the archive source failed half way"),
                "{e}"
            );
        }
        Err(e) => panic!("expected the body's error, got {e}"),
        Ok(n) => panic!("an upload whose source failed succeeded with {n} bytes"),
    }
    assert_eq!(storage.stat(key).await?, None);
    let folder = &key[..=key.rfind('/').unwrap_or(0)];
    assert!(storage.list(folder).await?.is_empty());
    Ok(())
}

/// Waits until `check` holds, polling every 20 ms, for at most 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `total` bytes, then a source that never yields again (a stalled archive).
fn stalling_stream(total: usize) -> ByteStream {
    noise_stream(11, total, CHUNK, None)
        .chain(stream::pending())
        .boxed()
}

/// Starts an upload, drops it once `started` holds (the backend holds a partial upload), then
/// waits until `cleaned` holds: the background cleanup of a cancelled upload.
async fn cancel_upload_when(
    storage: &TargetStorage,
    key: &str,
    started: impl FnMut() -> bool,
    cleaned: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    tokio::select! {
        r = storage.upload(key, stalling_stream(18 * MIB)) => panic!("a stalled upload ended: {r:?}"),
        () = eventually("the upload is under way", started) => {}
    }
    eventually("the cancelled upload is cleaned up", cleaned).await;
    assert_eq!(storage.stat(key).await?, None);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// S3

#[tokio::test]
async fn s3_round_trip_with_presigned_url() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let storage = TargetStorage::open(&bucket.config(None), false)?;
    let key = storage.object_key(&relative_key("data"));
    let url = round_trip(&storage, &key).await?;
    let Some(url) = url else {
        panic!("an S3 target presigns")
    };
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");
    bucket.remove().await
}

#[tokio::test]
async fn s3_small_and_empty_objects() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let storage = TargetStorage::open(&bucket.config(None), false)?;
    for (volume, total) in [("small", 100_000), ("empty", 0), ("one-part", 8 * MIB)] {
        let key = storage.object_key(&relative_key(volume));
        let size = storage
            .upload(&key, noise_stream(3, total, CHUNK, None))
            .await?;
        assert_eq!(size, total as u64, "{volume}");
        let (sha, got, _, _) = drain(storage.download(&key).await?).await?;
        assert_eq!(
            (got, sha),
            (total, noise_sha256(3, total, CHUNK)),
            "{volume}"
        );
        storage.delete(&key).await?;
    }
    bucket.remove().await
}

#[tokio::test]
async fn s3_failed_body_aborts_the_multipart_upload() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let storage = TargetStorage::open(&bucket.config(None), false)?;
    let key = storage.object_key(&relative_key("data"));

    let open_at_failure = Arc::new(AtomicBool::new(false));
    let look = {
        let (open, name, key) = (open_at_failure.clone(), bucket.name.clone(), key.clone());
        Box::new(move || {
            open.store(
                !open_multipart_uploads(&name, &key).is_empty(),
                Ordering::SeqCst,
            )
        })
    };
    failed_upload_leaves_nothing(&storage, &key, look).await?;

    assert!(
        open_at_failure.load(Ordering::SeqCst),
        "a multipart upload was open when the source failed"
    );
    assert_eq!(
        open_multipart_uploads(&bucket.name, &key),
        Vec::<String>::new(),
        "aborted"
    );
    assert!(storage.list("").await?.is_empty(), "the bucket is empty");
    bucket.remove().await
}

#[tokio::test]
async fn s3_cancelled_upload_aborts_the_multipart_upload() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let storage = TargetStorage::open(&bucket.config(None), false)?;
    let key = storage.object_key(&relative_key("data"));
    // Cancelled as soon as the multipart upload exists, possibly before its id reached the client:
    // the upload must still finish that request, then abort.
    cancel_upload_when(
        &storage,
        &key,
        || !open_multipart_uploads(&bucket.name, &key).is_empty(),
        || open_multipart_uploads(&bucket.name, &key).is_empty(),
    )
    .await?;
    assert!(storage.list("").await?.is_empty());
    bucket.remove().await
}

#[tokio::test]
async fn s3_wrong_secret_names_the_s3_error_and_hides_the_secret() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let wrong = "wrong-secret-Zq8vX2";
    let TargetConfig::S3(mut config) = bucket.config(None) else {
        unreachable!()
    };
    config.secret_access_key = SecretString::from(wrong);
    let storage = TargetStorage::open(&TargetConfig::S3(config), false)?;
    let key = storage.object_key(&relative_key("data"));

    let upload = storage.upload(&key, noise_stream(1, 1000, 100, None)).await;
    let Err(upload) = upload else {
        panic!("an upload with a wrong secret succeeded")
    };
    let list = storage.list("").await;
    let Err(list) = list else {
        panic!("a listing with a wrong secret succeeded")
    };
    for e in [upload, list] {
        let text = format!("{e} / {e:?}");
        assert!(
            text.contains("SignatureDoesNotMatch"),
            "names the S3 error: {text}"
        );
        assert!(!text.contains(wrong), "leaks the secret: {text}");
        assert!(!e.is_retryable(), "a refusal is not retryable: {text}");
    }
    // Nothing was written with the right credentials either.
    let right = TargetStorage::open(&bucket.config(None), false)?;
    assert!(right.list("").await?.is_empty());
    bucket.remove().await
}

#[tokio::test]
async fn s3_prefix_starts_every_key() -> anyhow::Result<()> {
    let bucket = TestBucket::create().await?;
    let storage = TargetStorage::open(&bucket.config(Some("/team-a/backups/")), false)?;
    let relative = relative_key("uploads");
    let key = storage.object_key(&relative);
    assert_eq!(key, format!("team-a/backups/{relative}"));

    let size = storage
        .upload(&key, noise_stream(9, 300_000, CHUNK, None))
        .await?;
    assert_eq!(size, 300_000);
    assert_eq!(storage.list("team-a/").await?, vec![key.clone()]);
    // The object sits at that path inside the bucket, as another S3 client sees it.
    let on_disk = Path::new(&setting("VARDO_TEST_S3_ROOT"))
        .join(&bucket.name)
        .join(&key);
    assert!(on_disk.is_file(), "{} exists", on_disk.display());

    storage.delete(&key).await?;
    assert!(storage.list("").await?.is_empty());
    bucket.remove().await
}

// ---------------------------------------------------------------------------------------------
// SSH (SFTP)

#[tokio::test]
async fn ssh_round_trip_without_presign() -> anyhow::Result<()> {
    let folder = TestSshFolder::new();
    let storage = TargetStorage::open(&folder.config()?, false)?;
    let relative = relative_key("data");
    let key = storage.object_key(&relative);
    assert_eq!(key, relative, "ssh keys have no prefix");
    assert_eq!(round_trip(&storage, &key).await?, None);
    Ok(())
}

#[tokio::test]
async fn ssh_file_lands_under_the_target_path() -> anyhow::Result<()> {
    let folder = TestSshFolder::new();
    let storage = TargetStorage::open(&folder.config()?, false)?;
    let key = storage.object_key(&relative_key("data"));
    storage
        .upload(&key, noise_stream(5, 123_457, CHUNK, None))
        .await?;
    let on_disk = folder.path.join(&key);
    assert_eq!(std::fs::metadata(&on_disk)?.len(), 123_457);
    storage.delete(&key).await?;
    assert!(!on_disk.exists());
    Ok(())
}

#[tokio::test]
async fn ssh_failed_body_removes_the_partial_file() -> anyhow::Result<()> {
    let folder = TestSshFolder::new();
    let storage = TargetStorage::open(&folder.config()?, false)?;
    let key = storage.object_key(&relative_key("data"));
    let on_disk = folder.path.join(&key);
    // Written as `{key}.partial` and renamed once whole.
    let partial = folder.path.join(format!("{key}.partial"));

    let partial_seen = Arc::new(AtomicBool::new(false));
    let look = {
        let (seen, path) = (partial_seen.clone(), partial.clone());
        Box::new(move || seen.store(path.is_file(), Ordering::SeqCst))
    };
    failed_upload_leaves_nothing(&storage, &key, look).await?;
    assert!(
        partial_seen.load(Ordering::SeqCst),
        "a partial file existed when the source failed"
    );
    assert!(!on_disk.exists() && !partial.exists());
    Ok(())
}

#[tokio::test]
async fn ssh_cancelled_upload_removes_the_partial_file() -> anyhow::Result<()> {
    let folder = TestSshFolder::new();
    let storage = TargetStorage::open(&folder.config()?, false)?;
    let key = storage.object_key(&relative_key("data"));
    let on_disk = folder.path.join(&key);
    let partial = folder.path.join(format!("{key}.partial"));
    cancel_upload_when(
        &storage,
        &key,
        || std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0) && !on_disk.exists(),
        || !on_disk.exists() && !partial.exists(),
    )
    .await
}

#[tokio::test]
async fn ssh_key_file_lives_while_a_clone_does() -> anyhow::Result<()> {
    let folder = TestSshFolder::new();
    let first = TargetStorage::open(&folder.config()?, false)?;
    let clone = first.clone();
    drop(first);
    // The clone still authenticates with the temporary key file.
    let key = clone.object_key(&relative_key("data"));
    assert_eq!(
        clone.upload(&key, noise_stream(2, 4096, 512, None)).await?,
        4096
    );
    clone.delete(&key).await?;
    Ok(())
}

#[tokio::test]
async fn ssh_relative_path_is_refused() -> anyhow::Result<()> {
    let folder = TestSshFolder::new();
    let TargetConfig::Ssh(mut config) = folder.config()? else {
        unreachable!()
    };
    config.path = "backups".into();
    match TargetStorage::open(&TargetConfig::Ssh(config), false) {
        Err(e @ StorageError::InvalidConfig { .. }) => {
            assert!(e.to_string().contains("absolute"), "{e}")
        }
        Err(e) => panic!("expected InvalidConfig, got {e}"),
        Ok(_) => panic!("a relative ssh path was accepted"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Local folders

#[tokio::test]
async fn local_round_trip_without_presign() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The target folder does not exist yet: opening creates it.
    let path = dir.path().join("targets/local-1");
    let config = TargetConfig::Local(LocalConfig {
        path: path.to_string_lossy().into_owned(),
    });
    let storage = TargetStorage::open(&config, true)?;
    assert!(path.is_dir());
    let key = storage.object_key(&relative_key("data"));
    assert_eq!(round_trip(&storage, &key).await?, None);
    Ok(())
}

#[tokio::test]
async fn local_failed_body_removes_the_partial_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = TargetConfig::Local(LocalConfig {
        path: dir.path().to_string_lossy().into_owned(),
    });
    let storage = TargetStorage::open(&config, true)?;
    let key = storage.object_key(&relative_key("data"));
    let on_disk = dir.path().join(&key);
    // Written as `{key}.partial` and renamed once whole.
    let partial = dir.path().join(format!("{key}.partial"));

    let partial_seen = Arc::new(AtomicBool::new(false));
    let look = {
        let (seen, path) = (partial_seen.clone(), partial.clone());
        Box::new(move || seen.store(path.is_file(), Ordering::SeqCst))
    };
    failed_upload_leaves_nothing(&storage, &key, look).await?;
    assert!(
        partial_seen.load(Ordering::SeqCst),
        "a partial file existed when the source failed"
    );
    assert!(!on_disk.exists() && !partial.exists());
    Ok(())
}

#[tokio::test]
async fn local_cancelled_upload_removes_the_partial_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = TargetConfig::Local(LocalConfig {
        path: dir.path().to_string_lossy().into_owned(),
    });
    let storage = TargetStorage::open(&config, true)?;
    let key = storage.object_key(&relative_key("data"));
    let on_disk = dir.path().join(&key);
    let partial = dir.path().join(format!("{key}.partial"));
    cancel_upload_when(
        &storage,
        &key,
        || std::fs::metadata(&partial).is_ok_and(|m| m.len() > 0) && !on_disk.exists(),
        || !on_disk.exists() && !partial.exists(),
    )
    .await
}

#[tokio::test]
async fn local_is_refused_unless_allowed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("never-created");
    let config = TargetConfig::Local(LocalConfig {
        path: path.to_string_lossy().into_owned(),
    });
    match TargetStorage::open(&config, false) {
        Err(e @ StorageError::LocalNotAllowed) => {
            assert_eq!(
                e.to_string(),
                "local targets are disabled; set ALLOW_LOCAL_BACKUPS=true"
            );
        }
        Err(e) => panic!("expected LocalNotAllowed, got {e}"),
        Ok(_) => panic!("a local target was opened without ALLOW_LOCAL_BACKUPS"),
    }
    assert!(!path.exists(), "a refused target creates nothing");
    Ok(())
}

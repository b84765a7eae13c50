//! Back up and restore real Docker volumes through the real binary, to the real S3 server, sshd
//! and a local folder; inspect the stored objects with GNU tar.

use uuid::Uuid;
use vardo_actors::model::{App, Compression, Status, TargetKind, VolumeKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::{describe as stdout, trees, volumes, TestBed};

/// Nested folders, an empty folder, symlinks (inside the volume, absolute, and relative ones that
/// climb above the volume root, which Docker's archive API alone will not extract), a 0600 file of
/// uid 1234, a ~200-byte non-ASCII name, and a 50 MiB random file.
const POPULATE: &str = r#"set -e; cd /volume
mkdir -p a/b/c empty
echo hello > a/b/c/file.txt
ln -s a/b/c/file.txt link
ln -s /run/app.sock a/absolute
ln -s ../../../shared/doc a/b/escapes && chown -h 1234:1234 a/b/escapes
ln -s .. up
echo key > secret.key && chmod 600 secret.key && chown 1234:1234 secret.key
n=$(printf 'ünïcødé-%.0s' 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16); echo long > "a/$n"
head -c 52428800 /dev/urandom > big.bin
"#;

async fn storage_for(bed: &TestBed, target_id: Uuid) -> TargetStorage {
    let target = bed.store.target(target_id).await.expect("target");
    TargetStorage::open(&target.config, true).expect("storage")
}

/// Downloads an object to a file and lists it with GNU tar.
async fn gnu_tar_listing(storage: &TargetStorage, key: &str) -> String {
    use futures::StreamExt as _;
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    let mut body = storage.download(key).await.expect("download");
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.expect("chunk")).expect("write");
    }
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "-tzvf"])
        .arg(file.path())
        .output()
        .expect("GNU tar runs");
    assert!(
        out.status.success(),
        "tar -tzvf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn file_volume_round_trip(kind: TargetKind) {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(
            &org,
            "files",
            &[
                ("uploads", VolumeKind::Generic),
                ("tmpcache", VolumeKind::Generic),
            ],
        )
        .await;
    let volume = bed.blue(&app, "uploads");
    volumes::sh(
        &bed.docker,
        &{
            bed.docker.create_volume(&volume).await.expect("volume");
            volume.clone()
        },
        POPULATE,
    )
    .await
    .expect("populate");
    let before = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");

    let config = match kind {
        TargetKind::Ssh => bed.ssh_config(),
        TargetKind::Local => bed.local_config(),
        _ => bed.bucket.target_json(Some("backups")),
    };
    let target = bed.target(Some(org.id), kind, config).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;

    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(rows.len(), 1, "the non-persistent volume is not backed up");
    let row = rows[0].clone();
    assert_eq!(row.status, Status::Success, "{}", row.log);
    assert_eq!(row.volume_name, "uploads");
    let key = row.storage_path.clone().expect("path");
    let prefix = if kind == TargetKind::S3 {
        "backups/"
    } else {
        ""
    };
    assert!(
        key.starts_with(&format!("{prefix}{}/{}/uploads/", org.slug, app.name))
            && key.ends_with(".tar.gz"),
        "{key}"
    );
    assert!(row
        .checksum
        .as_deref()
        .is_some_and(|c| c.starts_with("sha256:")));
    assert!(row.log.contains("success"), "{}", row.log);

    let storage = storage_for(&bed, target).await;
    assert_eq!(
        storage.stat(&key).await.expect("stat"),
        Some(row.size_bytes.expect("size") as u64)
    );
    let listing = gnu_tar_listing(&storage, &key).await;
    for expected in [
        "./a/b/c/file.txt",
        "./empty/",
        "./link -> a/b/c/file.txt",
        "-rw------- 1234/1234",
        "./big.bin",
        "ünïcødé-ünïcødé-",
    ] {
        assert!(
            listing.contains(expected),
            "{expected:?} missing from:\n{listing}"
        );
    }
    assert!(
        listing.contains("52428800"),
        "big.bin's size in:\n{listing}"
    );

    volumes::sh(
        &bed.docker,
        &volume,
        "cd /volume && echo changed > a/b/c/file.txt && rm -rf empty secret.key && echo new > new.txt && rm big.bin",
    )
    .await
    .expect("mutate");
    assert_ne!(
        volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing"),
        before
    );

    let out = bed.cli(&["restore", "--backup", &row.id.to_string()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let after = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    assert_eq!(
        after, before,
        "the restored volume differs from the original"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn file_volume_round_trip_through_s3() {
    file_volume_round_trip(TargetKind::S3).await;
}

#[tokio::test]
async fn file_volume_round_trip_through_ssh() {
    file_volume_round_trip(TargetKind::Ssh).await;
}

#[tokio::test]
async fn file_volume_round_trip_through_a_local_folder() {
    file_volume_round_trip(TargetKind::Local).await;
}

#[tokio::test]
async fn a_missing_volume_fails_its_row_and_the_others_still_run() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let present = bed
        .app(&org, "present", &[("files", VolumeKind::Generic)])
        .await;
    let absent = bed
        .app(&org, "absent", &[("files", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&present, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, "echo x > /volume/x")
        .await
        .expect("populate");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&present, &absent], Compression::Gzip)
        .await;

    let (out, rows) = bed.run_job(job).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let by_app = |a: &App| {
        rows.iter()
            .find(|r| r.app_id == a.id)
            .expect("row per app")
            .clone()
    };
    let failed = by_app(&absent);
    assert_eq!(failed.status, Status::Failed);
    assert!(failed.log.contains("volume not found"), "{}", failed.log);
    assert!(
        failed.log.contains(&format!("{}-green_files", absent.name)),
        "{}",
        failed.log
    );
    assert_eq!(by_app(&present).status, Status::Success);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_wrong_s3_secret_fails_the_row_and_leaves_nothing_in_the_bucket() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "badkey", &[("files", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        "head -c 20000000 /dev/urandom > /volume/r",
    )
    .await
    .expect("populate");
    let mut config = bed.bucket.target_json(None);
    config["secretAccessKey"] = "not-the-secret-0123456789".into();
    let target = bed.target(Some(org.id), TargetKind::S3, config).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;

    let (out, rows) = bed.run_job(job).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let row = &rows[0];
    assert_eq!(row.status, Status::Failed);
    assert!(
        row.log.contains("SignatureDoesNotMatch") || row.log.contains("403"),
        "{}",
        row.log
    );
    assert!(
        !row.log.contains("not-the-secret"),
        "the secret leaked into the log"
    );
    let real = TargetStorage::open(&bed.bucket.config(None), false).expect("storage");
    assert_eq!(real.list("").await.expect("list"), Vec::<String>::new());
    bed.cleanup().await;
}

/// Backs up a small volume to S3 and returns (row id, key, storage, volume).
async fn small_backup(bed: &TestBed, name: &str) -> (Uuid, String, TargetStorage, String) {
    let org = bed.organization().await;
    let app = bed.app(&org, name, &[("files", VolumeKind::Generic)]).await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        "mkdir /volume/d && echo one > /volume/d/one && head -c 3000000 /dev/urandom > /volume/r",
    )
    .await
    .expect("populate");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let (out, mut rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let row = rows.remove(0);
    (
        row.id,
        row.storage_path.expect("path"),
        storage_for(bed, target).await,
        volume,
    )
}

async fn read_object(storage: &TargetStorage, key: &str) -> Vec<u8> {
    use futures::StreamExt as _;
    let mut out = Vec::new();
    let mut body = storage.download(key).await.expect("download");
    while let Some(c) = body.next().await {
        out.extend_from_slice(&c.expect("chunk"));
    }
    out
}

async fn put_object(storage: &TargetStorage, key: &str, data: Vec<u8>) {
    let body: vardo_actors::stream::ByteStream = Box::pin(futures::stream::iter(
        data.chunks(1 << 20)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    ));
    storage.upload(key, body).await.expect("re-upload");
}

#[tokio::test]
async fn a_corrupted_or_truncated_archive_fails_the_restore_and_changes_nothing() {
    let bed = TestBed::new().await;
    let (id, key, storage, volume) = small_backup(&bed, "corrupt").await;
    volumes::sh(
        &bed.docker,
        &volume,
        "echo later > /volume/later && rm /volume/d/one",
    )
    .await
    .expect("mutate");
    let before = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    let original = read_object(&storage, &key).await;

    let mut flipped = original.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x01;
    let truncated = original[..original.len() / 2].to_vec();
    for (what, damaged) in [
        ("a flipped byte", flipped),
        ("a truncated object", truncated),
    ] {
        put_object(&storage, &key, damaged).await;
        let out = bed.cli(&["restore", "--backup", &id.to_string()]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stdout(&out));
        let text = stdout(&out);
        assert!(text.contains("failed"), "{what}: {text}");
        let after = volumes::listing(&bed.docker, &volume)
            .await
            .expect("listing");
        assert_eq!(after, before, "{what} changed the volume");
    }
    // The intact archive still restores.
    put_object(&storage, &key, original).await;
    let out = bed.cli(&["restore", "--backup", &id.to_string()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let restored = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    assert!(
        restored.contains("./d/one") && !restored.contains("./later"),
        "{restored}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn an_archive_with_a_parent_entry_is_refused_and_nothing_is_written() {
    use sha2::Digest as _;
    let bed = TestBed::new().await;
    let (id, key, storage, volume) = small_backup(&bed, "evil").await;
    let before = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");

    // A valid gzip'd tar whose second entry climbs out with `../`.
    let evil = trees::parent_entry_tar_gz();
    let checksum = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&evil)));
    let size = evil.len() as i64;
    put_object(&storage, &key, evil).await;
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup SET checksum = $2, size_bytes = $3 WHERE id = $1",
            &[&id, &checksum, &size],
        )
        .await
        .expect("point the row at the crafted archive");

    let out = bed.cli(&["restore", "--backup", &id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("unsafe archive entry"),
        "{}",
        stdout(&out)
    );
    let after = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    assert_eq!(after, before, "the refused archive changed the volume");
    assert!(
        !after.contains("ok.txt") && !after.contains(".vardo-restore"),
        "{after}"
    );
    bed.cleanup().await;
}

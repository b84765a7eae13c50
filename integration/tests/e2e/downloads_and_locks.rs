//! Downloads (pre-signed for S3, streamed for ssh and local) and the volume lock that keeps a
//! backup and a restore of one volume apart.

use futures::StreamExt as _;
use sha2::Digest as _;
use vardo_actors::download::{download, Download};
use vardo_actors::engine::Engine;
use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_integration::{describe, setting, volumes, TestBed};

fn engine(bed: &TestBed) -> Engine {
    bed.engine()
}

/// Backs up a small volume of a new app to a new target of `kind`; returns the row's id and checksum.
async fn backed_up(bed: &TestBed, kind: TargetKind, name: &str) -> (uuid::Uuid, String) {
    let org = bed.organization().await;
    let app = bed.app(&org, name, &[("files", VolumeKind::Generic)]).await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        "head -c 1000000 /dev/urandom > /volume/r",
    )
    .await
    .expect("populate");
    let config = match kind {
        TargetKind::Local => bed.local_config(),
        _ => bed.bucket.target_json(None),
    };
    let target = bed.target(Some(org.id), kind, config).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let out = bed.cli(&["backup", "--job", &job.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .expect("id");
    let row = bed.store.backup(id).await.expect("row");
    assert_eq!(row.status, Status::Success, "{}", row.log);
    (id, row.checksum.expect("checksum"))
}

#[tokio::test]
async fn s3_downloads_are_presigned_urls_valid_for_an_hour() {
    let bed = TestBed::new().await;
    let (id, checksum) = backed_up(&bed, TargetKind::S3, "dl").await;
    let Download::Redirect(url) = download(&engine(&bed), id).await.expect("download") else {
        panic!("an S3 target must give a pre-signed URL");
    };
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");
    assert!(
        !url.contains(&setting("VARDO_TEST_S3_SECRET_KEY")),
        "the secret is in the URL"
    );
    let body = reqwest::get(&url)
        .await
        .expect("GET")
        .error_for_status()
        .expect("200")
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body))),
        checksum
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn local_downloads_stream_through_the_engine_with_a_file_name() {
    let bed = TestBed::new().await;
    let (id, checksum) = backed_up(&bed, TargetKind::Local, "dlocal").await;
    let Download::Stream {
        file_name,
        size,
        mut body,
    } = download(&engine(&bed), id).await.expect("download")
    else {
        panic!("a local target streams");
    };
    assert!(
        file_name.starts_with("dlocal") && file_name.ends_with(".tar.gz"),
        "{file_name}"
    );
    let mut hasher = sha2::Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("chunk");
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(Some(n), size);
    assert_eq!(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        checksum
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_backup_of_a_volume_that_a_restore_holds_fails_as_busy() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "busy", &[("files", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    let engine = engine(&bed);
    let held = vardo_actors::lock::VolumeLock::acquire(engine.redis(), &volume)
        .await
        .expect("lock");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let out = bed.cli(&["backup", "--job", &job.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let id = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .expect("id");
    let row = bed.store.backup(id).await.expect("row");
    assert_eq!(row.status, Status::Failed);
    assert!(row.log.contains("is busy"), "{}", row.log);
    held.release().await;
    let (out, _) = bed.run_job(job).await;
    assert!(
        out.status.success(),
        "released, the volume backs up: {}",
        describe(&out)
    );
    bed.cleanup().await;
}

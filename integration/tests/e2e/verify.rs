//! Verification of backups, through the API of a serving engine and through `vardo-backup verify`:
//! an intact backup verifies; a flipped byte, a truncated object, a deleted object and a tar with
//! a `../` entry each fail with the reason, mark the backup `verifyOutcome: failed`, and change
//! nothing else (the row stays `success`, the object stays as it was); another organization can
//! neither verify a backup nor read a verification that is not its own.

use futures::StreamExt as _;
use serde_json::Value;
use sha2::Digest as _;
use uuid::Uuid;
use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::http::{ApiBed, Org};
use vardo_integration::{describe, postgres, trees, TestBed};

async fn storage_of(bed: &TestBed, target: Uuid) -> TargetStorage {
    let target = bed.store.target(target).await.expect("target");
    TargetStorage::open(&target.config, true).expect("storage")
}

async fn read(storage: &TargetStorage, key: &str) -> Vec<u8> {
    let mut body = storage.download(key).await.expect("download");
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk.expect("chunk"));
    }
    all
}

async fn put(storage: &TargetStorage, key: &str, data: Vec<u8>) {
    let body: vardo_actors::stream::ByteStream =
        Box::pin(futures::stream::iter([Ok(bytes::Bytes::from(data))]));
    storage.upload(key, body).await.expect("put");
}

/// Asks for a verification of `backup` and waits for its end; returns it.
async fn verify(org: &Org, backup: Uuid) -> Value {
    let id = org
        .api
        .post_empty(&org.path(&format!("/backups/history/{backup}/verify")))
        .await
        .expect(202)
        .id();
    let path = org.path(&format!("/backups/verifications/{id}"));
    let api = &org.api;
    let path = &path;
    vardo_integration::eventually(
        std::time::Duration::from_secs(60),
        "the verification ends",
        || async move {
            let v = api.get(path).await.expect(200).body;
            (v["status"] == "success" || v["status"] == "failed").then_some(v)
        },
    )
    .await
}

async fn backup_json(org: &Org, backup: Uuid) -> Value {
    org.api
        .get(&org.path(&format!("/backups/history/{backup}")))
        .await
        .expect(200)
        .body
}

/// Verifies, expects a failure whose log says `reason`, and checks that nothing else changed.
async fn expect_damaged(org: &Org, storage: &TargetStorage, backup: Uuid, key: &str, reason: &str) {
    let before = storage.stat(key).await.expect("stat");
    let v = verify(org, backup).await;
    assert_eq!(v["status"], "failed", "{v}");
    let log = v["log"].as_str().expect("log");
    assert!(log.contains(reason), "{reason:?} not in {log}");
    let row = backup_json(org, backup).await;
    assert_eq!(row["verifyOutcome"], "failed", "{row}");
    assert_eq!(
        row["status"], "success",
        "a verification never changes the backup: {row}"
    );
    assert_eq!(
        storage.stat(key).await.expect("stat"),
        before,
        "the object is untouched"
    );
}

#[tokio::test]
async fn an_intact_backup_verifies_and_each_kind_of_damage_fails_with_its_reason() {
    let api = ApiBed::start("all").await;
    let org = api.org("verify").await;
    let done = api.backed_up(&org, "verify", "s3").await;
    let row = &done.rows[0];
    let key = row.storage_path.clone().expect("key");
    let storage = storage_of(&api.bed, done.target).await;
    let original = read(&storage, &key).await;

    let never = backup_json(&org, row.id).await;
    assert!(
        never["verifiedAt"].is_null() && never["verifyOutcome"].is_null(),
        "{never}"
    );
    let v = verify(&org, row.id).await;
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(
        v["checked"],
        serde_json::json!(["object", "sha256", "tar entries"]),
        "{v}"
    );
    let verified = backup_json(&org, row.id).await;
    assert_eq!(verified["verifyOutcome"], "ok", "{verified}");
    assert!(verified["verifiedAt"].is_string(), "{verified}");
    let metrics = api.admin.get("/metrics").await.expect(200).text;
    let sample = format!(
        "vardo_backup_last_verified_timestamp_seconds{{job_id=\"{}\",organization_id=\"{}\"}}",
        done.job, org.id
    );
    assert!(metrics.contains(&sample), "{sample} not in\n{metrics}");

    // A flipped byte near the end: same size, another checksum.
    let mut flipped = original.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x01;
    put(&storage, &key, flipped.clone()).await;
    expect_damaged(&org, &storage, row.id, &key, "checksum mismatch").await;
    assert_eq!(
        read(&storage, &key).await,
        flipped,
        "verification wrote nothing"
    );

    // Truncated.
    put(&storage, &key, original[..original.len() / 2].to_vec()).await;
    expect_damaged(&org, &storage, row.id, &key, "the backup recorded").await;

    // Deleted.
    storage.delete(&key).await.expect("delete");
    expect_damaged(&org, &storage, row.id, &key, "is missing").await;

    // Whole again: the outcome follows the newest verification.
    put(&storage, &key, original.clone()).await;
    assert_eq!(verify(&org, row.id).await["status"], "success");
    assert_eq!(backup_json(&org, row.id).await["verifyOutcome"], "ok");

    // A tar with a `../` entry, recorded with its own size and checksum: the bytes are what the
    // row says, but a restore would refuse them.
    let evil = trees::parent_entry_tar_gz();
    let checksum = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&evil)));
    put(&storage, &key, evil.clone()).await;
    api.bed
        .db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup SET checksum = $2, size_bytes = $3 WHERE id = $1",
            &[&row.id, &checksum, &(evil.len() as i64)],
        )
        .await
        .expect("point the row at the crafted archive");
    expect_damaged(&org, &storage, row.id, &key, "unsafe archive entry").await;

    // Another organization: no verifying, no reading.
    let other = api.org("other").await;
    other
        .api
        .post_empty(&other.path(&format!("/backups/history/{}/verify", row.id)))
        .await
        .expect(404);
    let vid = v["id"].as_str().expect("id");
    other
        .api
        .get(&other.path(&format!("/backups/verifications/{vid}")))
        .await
        .expect(404);
    // Its own path with another organization's ids is no way round.
    other
        .api
        .get(&format!(
            "/api/v1/organizations/{}/backups/verifications/{vid}",
            other.id
        ))
        .await
        .expect(404);
    api.cleanup().await;
}

#[tokio::test]
async fn the_verify_command_exits_0_for_an_intact_dump_and_1_for_a_damaged_one() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "vdb", &[("data", VolumeKind::Postgres)])
        .await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(&bed, &volume).await.expect("postgres");
    postgres::psql(
        &bed.docker,
        &pg,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('x');",
    )
    .await
    .expect("table");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", describe(&out));
    let row = &rows[0];

    let out = bed.cli(&["verify", "--backup", &row.id.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "dump decompressed to its end: a cluster dump of the roles and 2 databases (appdb, postgres) to its end marker"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(" success"), "{stdout}");
    let after = bed.store.backup(row.id).await.expect("row");
    assert_eq!(after.verify_outcome.as_deref(), Some("ok"));

    let key = row.storage_path.clone().expect("key");
    let storage = storage_of(&bed, target).await;
    let mut bytes = read(&storage, &key).await;
    bytes[10] ^= 0xff;
    put(&storage, &key, bytes).await;
    let out = bed.cli(&["verify", "--backup", &row.id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum mismatch"),
        "{}",
        describe(&out)
    );
    let after = bed.store.backup(row.id).await.expect("row");
    assert_eq!(after.verify_outcome.as_deref(), Some("failed"));
    assert_eq!(after.status, Status::Success);

    let out = bed.cli(&["verify", "--backup", &Uuid::new_v4().to_string()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unknown backup: {}",
        describe(&out)
    );
    bed.cleanup().await;
}

//! Undoable restores: a restore first backs up the contents it replaces (reason `pre-restore`,
//! linked from the restore), and restoring that backup gives the volume back exactly as it was.
//! A safety backup that fails stops the restore before it changes anything; one can be declined;
//! job retention never counts it.

use uuid::Uuid;
use vardo_actors::model::{Compression, Status, TargetKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::fault_proxy::{Fault, FaultProxy};
use vardo_integration::http::ApiBed;
use vardo_integration::{describe, trees, volumes, TestBed};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The safety backup's id from `restore`'s output.
fn safety_backup_of(out: &std::process::Output) -> Uuid {
    let text = stdout(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("safety backup "))
        .unwrap_or_else(|| panic!("no safety backup line: {text}"));
    line["safety backup ".len()..]
        .split(':')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no id in {line}"))
}

#[tokio::test]
async fn a_restore_is_undone_by_restoring_its_safety_backup() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, volume) = bed
        .app_with_files(
            &org,
            "undo",
            "mkdir -p /volume/a && echo first > /volume/a/one && echo kept > '/volume/-n *'",
        )
        .await;
    let first = trees::read(&bed.docker, &volume).await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", describe(&out));
    let backup = rows[0].id;

    // Work done since: what a mistaken restore would lose.
    volumes::sh(
        &bed.docker,
        &volume,
        "rm -r /volume/a && echo newer > /volume/b && head -c 200000 /dev/urandom > '/volume/up load'",
    )
    .await
    .expect("newer contents");
    let newer = trees::read(&bed.docker, &volume).await;
    assert_ne!(newer, first);

    let out = bed.cli(&["restore", "--backup", &backup.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(trees::read(&bed.docker, &volume).await, first, "restored");
    let safety = safety_backup_of(&out);
    let db = bed.db.client().await.expect("db");
    let row = db
        .query_one(
            "SELECT reason, status, job_id FROM backup WHERE id = $1",
            &[&safety],
        )
        .await
        .expect("safety row");
    assert_eq!(row.get::<_, String>(0), "pre-restore");
    assert_eq!(row.get::<_, String>(1), "success");
    assert_eq!(row.get::<_, Option<Uuid>>(2), Some(job));
    let linked: Option<Uuid> = db
        .query_one(
            "SELECT pre_restore_backup_id FROM restore WHERE backup_id = $1",
            &[&backup],
        )
        .await
        .expect("restore")
        .get(0);
    assert_eq!(linked, Some(safety), "the restore links its safety backup");
    // Job retention never counts it.
    let counted = bed.store.job_success_backups(job).await.expect("rows");
    assert!(counted.iter().all(|b| b.id != safety), "{counted:?}");

    // Undo.
    let out = bed.cli(&["restore", "--backup", &safety.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        trees::read(&bed.docker, &volume).await,
        newer,
        "the volume is what it was before the restore:\n{}",
        trees::show(&trees::read(&bed.docker, &volume).await)
    );

    // Declined: no safety backup, nothing to undo with.
    let out = bed.cli(&[
        "restore",
        "--backup",
        &backup.to_string(),
        "--no-safety-backup",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        !stdout(&out)
            .lines()
            .any(|l| l.starts_with("safety backup ")),
        "{}",
        stdout(&out)
    );
    assert_eq!(trees::read(&bed.docker, &volume).await, first);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_failed_safety_backup_stops_the_restore_before_it_changes_anything() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, volume) = bed
        .app_with_files(&org, "unsafe", "echo backed-up > /volume/f")
        .await;
    let proxy = FaultProxy::to_s3().expect("proxy");
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", describe(&out));
    volumes::sh(
        &bed.docker,
        &volume,
        "head -c 3000000 /dev/urandom > /volume/big && echo changed > /volume/f",
    )
    .await
    .expect("newer contents");
    let before = trees::read(&bed.docker, &volume).await;

    // The target takes no upload now: the safety backup cannot be stored.
    proxy.set(Fault::CutAllUploadsAfter(1024 * 1024));
    let out = bed.cli(&["restore", "--backup", &rows[0].id.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let text = describe(&out);
    assert!(
        text.contains("the safety backup of the current contents failed"),
        "{text}"
    );
    assert!(text.contains("nothing was restored"), "{text}");
    assert_eq!(
        trees::read(&bed.docker, &volume).await,
        before,
        "the volume is untouched"
    );
    let failed: String = bed
        .db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT status FROM backup WHERE reason = 'pre-restore' AND app_id = $1",
            &[&app.id],
        )
        .await
        .expect("safety row")
        .get(0);
    assert_eq!(failed, "failed", "the safety backup's row says it failed");
    drop(proxy);
    bed.cleanup().await;
}

#[tokio::test]
async fn the_api_takes_a_safety_backup_unless_the_request_declines_it() {
    let api = ApiBed::start("all").await;
    let org = api.org("undoapi").await;
    let done = api.backed_up(&org, "undoapi", "local").await;
    let restore = |body: Option<serde_json::Value>| {
        let org = &org;
        let path = org.path(&format!("/backups/history/{}/restore", done.rows[0].id));
        async move {
            match body {
                Some(b) => org.api.post(&path, &b).await,
                None => org.api.post_empty(&path).await,
            }
        }
    };
    let finished = |id: Uuid| {
        let org = &org;
        async move {
            let path = org.path(&format!("/backups/restores/{id}"));
            let path = &path;
            vardo_integration::eventually(
                std::time::Duration::from_secs(60),
                "the restore ends",
                || async move {
                    let r = org.api.get(path).await.expect(200).body;
                    (r["status"] == "success" || r["status"] == "failed").then_some(r)
                },
            )
            .await
        }
    };
    let kept = finished(restore(None).await.expect(202).id()).await;
    assert_eq!(kept["status"], "success", "{kept}");
    let safety: Uuid = kept["preRestoreBackupId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a safety backup: {kept}"));
    let row = org
        .api
        .get(&org.path(&format!("/backups/history/{safety}")))
        .await
        .expect(200)
        .body;
    assert_eq!(row["status"], "success", "{row}");

    let declined = restore(Some(serde_json::json!({"safetyBackup": false})))
        .await
        .expect(202)
        .id();
    let declined = finished(declined).await;
    assert_eq!(declined["status"], "success", "{declined}");
    assert!(declined["preRestoreBackupId"].is_null(), "{declined}");

    let bad = restore(Some(serde_json::json!({"safetyBackup": "no"})))
        .await
        .expect(422);
    assert_eq!(bad.field(), Some("safetyBackup"), "{:?}", bad.body);
    let unknown = restore(Some(serde_json::json!({"safety": false}))).await;
    assert!(
        unknown.status == 400 || unknown.status == 422,
        "an unknown field is refused: {:?}",
        unknown.body
    );
    assert_eq!(unknown.field(), Some("safety"), "{:?}", unknown.body);
    assert_eq!(
        api.bed.store.backup(safety).await.expect("row").status,
        Status::Success
    );
    api.cleanup().await;
}

#[tokio::test]
async fn expired_safety_backups_are_deleted_unless_a_restore_is_using_them() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, _volume) = bed
        .app_with_files(&org, "expiry", "echo one > /volume/f")
        .await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", describe(&out));
    let backup = rows[0].id;
    let mut safety = Vec::new();
    for _ in 0..2 {
        let out = bed.cli(&["restore", "--backup", &backup.to_string()]);
        assert!(out.status.success(), "{}", describe(&out));
        safety.push(safety_backup_of(&out));
    }
    let (old, in_use) = (safety[0], safety[1]);
    let db = bed.db.client().await.expect("db");
    // Both taken eight days ago; a restore of the second is queued (nobody performs it here).
    db.execute(
        "UPDATE backup SET finished_at = now() - interval '8 days' WHERE id = ANY($1)",
        &[&safety],
    )
    .await
    .expect("age them");
    let queued = bed
        .store
        .insert_restore(org.id, in_use, true)
        .await
        .expect("queued restore");
    let engine = bed.engine();
    let storage = TargetStorage::open(&bed.store.target(target).await.expect("t").config, true)
        .expect("storage");
    let key_of = |id: Uuid| {
        let store = &bed.store;
        async move {
            store
                .backup(id)
                .await
                .expect("row")
                .storage_path
                .expect("key")
        }
    };
    let (old_key, in_use_key, kept_key) = (
        key_of(old).await,
        key_of(in_use).await,
        key_of(backup).await,
    );

    let pruned = vardo_actors::pruner::safety::prune_expired(&engine)
        .await
        .expect("sweep");
    assert_eq!(pruned, 1, "only the safety backup nobody is restoring");
    assert_eq!(
        bed.store.backup(old).await.expect("row").status,
        Status::Pruned
    );
    assert_eq!(
        storage.stat(&old_key).await.expect("stat"),
        None,
        "its object is gone"
    );
    assert_eq!(
        bed.store.backup(in_use).await.expect("row").status,
        Status::Success
    );
    assert!(storage.stat(&in_use_key).await.expect("stat").is_some());
    // The job's own backup is never the sweep's business.
    assert_eq!(
        bed.store.backup(backup).await.expect("row").status,
        Status::Success
    );
    assert!(storage.stat(&kept_key).await.expect("stat").is_some());

    // Once that restore has ended, the expired safety backup goes too.
    db.execute(
        "UPDATE restore SET status = 'failed' WHERE id = $1",
        &[&queued],
    )
    .await
    .expect("end it");
    let pruned = vardo_actors::pruner::safety::prune_expired(&engine)
        .await
        .expect("sweep");
    assert_eq!(pruned, 1);
    assert_eq!(
        bed.store.backup(in_use).await.expect("row").status,
        Status::Pruned
    );
    assert_eq!(storage.stat(&in_use_key).await.expect("stat"), None);
    bed.cleanup().await;
}

//! The supervisor's restart budget: a run that stops because the database went away is restarted
//! after a backoff and carries on with its rows — one row per volume, its object where the first
//! attempt put it (no orphan), `success` only with the whole object. A database that stays away
//! past the budget fails the run (see `faults::postgres_restarted_…`).

use vardo_actors::model::Status;
use vardo_integration::fault_proxy::Fault;
use vardo_integration::{describe, TestBed};

use super::faults::{exit_of, objects, postgres_gone_mid_upload, PostgresGone};

#[tokio::test]
async fn a_run_stopped_by_a_short_database_outage_is_restarted_and_succeeds_in_place() {
    let bed = TestBed::new().await;
    // Mid-upload the database goes away for 5 s: the attempt cannot record its end and stops;
    // the first restart (after 2 s) finds the database still away; the second (4 s later) runs.
    let PostgresGone {
        pg,
        job,
        env,
        mut child,
        admin,
        _s3,
    } = postgres_gone_mid_upload(&bed, 8).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    pg.set(Fault::PassThrough);
    let status = exit_of(&mut child, std::time::Duration::from_secs(120)).await;

    let rows = admin
        .query("SELECT id FROM backup WHERE job_id = $1", &[&job])
        .await
        .expect("rows");
    assert_eq!(rows.len(), 1, "a restart records no second row");
    let row = bed.store.backup(rows[0].get(0)).await.expect("backup");
    assert!(
        status.success(),
        "exit {:?}, row {}: {}",
        status.code(),
        row.status.as_str(),
        row.log
    );
    assert_eq!(row.status, Status::Success, "{}", row.log);
    assert!(
        row.log.contains("restarted after 2 s (restart 1 of 3)"),
        "the row says why the run restarted: {}",
        row.log
    );
    let key = row.storage_path.clone().expect("key");
    let stored = bed.bucket.storage().stat(&key).await.expect("stat");
    assert_eq!(stored, row.size_bytes.map(|s| s as u64), "the whole object");
    assert_eq!(
        objects(&bed).await,
        vec![key],
        "the restarted attempt wrote where the first one did: no orphan object"
    );
    assert!(bed.bucket.open_multipart_uploads().is_empty());

    // And the archive is the volume: a restore of it succeeds.
    let out = vardo_integration::process::run(&["restore", "--backup", &row.id.to_string()], &env);
    assert!(out.status.success(), "{}", describe(&out));
    bed.cleanup().await;
}

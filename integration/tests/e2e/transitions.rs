//! Status transitions are guarded by the state they come from, and what a failure took it gives
//! back: a row the janitor failed never becomes `success`; a restore handed back after its claim
//! went stale is performed once; a tick that errors after taking a minute's lock releases it, so
//! the next good tick fires that minute. Real Postgres and Redis; the scheduler stepped with
//! `Tick` messages.

use std::time::Duration;

use actix::Actor as _;
use chrono::{DateTime, Utc};
use deadpool_redis::redis;
use vardo_actors::model::{Compression, Status, VolumeKind};
use vardo_actors::scheduler::{Scheduler, Tick};
use vardo_actors::store::{NewBackupRow, RunRef};
use vardo_integration::TestBed;

/// One `pending` row of `app`'s volume `data` in a new manual run of `job`.
async fn pending_row(
    bed: &TestBed,
    org: &vardo_actors::model::Organization,
    app: &vardo_actors::model::App,
    job: uuid::Uuid,
    target: uuid::Uuid,
) -> uuid::Uuid {
    let ids = bed
        .store
        .insert_pending_backups(
            RunRef {
                run_id: uuid::Uuid::new_v4(),
                job_id: job,
                organization_id: org.id,
                target_id: target,
                reason: vardo_actors::model::RunReason::Manual,
                scheduled_for: None,
            },
            &[NewBackupRow {
                app_id: app.id.clone(),
                app_name: app.name.clone(),
                volume_name: "data".into(),
                volume_kind: VolumeKind::Generic,
            }],
        )
        .await
        .expect("row");
    ids[0]
}

#[tokio::test]
async fn a_row_failed_by_the_janitor_never_becomes_success() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "late", &[("data", VolumeKind::Generic)])
        .await;
    let job = bed.job(&org, None, &[&app], Compression::Gzip).await;
    let target = bed
        .target(
            Some(org.id),
            vardo_actors::model::TargetKind::Local,
            bed.local_config(),
        )
        .await;
    let row = pending_row(&bed, &org, &app, job, target).await;
    bed.store
        .mark_backup_running(row, "started")
        .await
        .expect("running");
    // The janitor believes the engine dead (a lease of zero) and fails the row.
    bed.store
        .fail_abandoned(Duration::ZERO)
        .await
        .expect("sweep");
    let settled = bed
        .store
        .mark_backup_success(row, 10, "k", &"0".repeat(64), "late success")
        .await
        .expect("update");
    assert!(!settled, "a failed row is not turned into a success");
    let row = bed.store.backup(row).await.expect("row");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(row.storage_path.is_none() && row.checksum.is_none());
    bed.cleanup().await;
}

#[tokio::test]
async fn a_restore_queued_longer_than_the_lease_is_performed_once() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "queued", &[("data", VolumeKind::Generic)])
        .await;
    let job = bed.job(&org, None, &[&app], Compression::Gzip).await;
    let target = bed
        .target(
            Some(org.id),
            vardo_actors::model::TargetKind::Local,
            bed.local_config(),
        )
        .await;
    let row = pending_row(&bed, &org, &app, job, target).await;
    let restore = bed
        .store
        .insert_restore(org.id, row, true)
        .await
        .expect("restore");
    let db = bed.db.client().await.expect("db");
    // Queued for an hour before anyone claimed it.
    db.execute(
        "UPDATE restore SET heartbeat_at = now() - interval '1 hour' WHERE id = $1",
        &[&restore],
    )
    .await
    .expect("age");
    assert_eq!(
        bed.store.claim_restore("first").await.expect("claim"),
        Some(restore)
    );
    // The janitor's sweep right after the claim does not hand it back.
    let lease = Duration::from_secs(120);
    assert_eq!(
        bed.store
            .release_abandoned_claims(lease)
            .await
            .expect("sweep"),
        0
    );
    assert_eq!(
        bed.store.claim_restore("second").await.expect("claim"),
        None
    );
    // And were it handed back and claimed again, only the first to start performs it.
    db.execute(
        "UPDATE restore SET claimed_by = NULL WHERE id = $1",
        &[&restore],
    )
    .await
    .expect("hand back");
    assert_eq!(
        bed.store.claim_restore("second").await.expect("claim"),
        Some(restore)
    );
    assert!(bed
        .store
        .mark_restore_running(restore)
        .await
        .expect("start"));
    assert!(!bed
        .store
        .mark_restore_running(restore)
        .await
        .expect("start"));
    bed.cleanup().await;
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

#[actix::test]
async fn a_tick_that_fails_after_taking_the_minute_gives_it_back() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed.app(&org, "tick", &[]).await;
    let job = bed.job(&org, None, &[&app], Compression::Gzip).await;
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET schedule = '* * * * *' WHERE id = $1",
        &[&job],
    )
    .await
    .expect("every minute");
    db.batch_execute(
        "CREATE FUNCTION refuse_minute() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'the minute is refused by a trigger'; END $$;
         CREATE TRIGGER refuse_minute BEFORE UPDATE OF last_scheduled_for ON backup_job
         FOR EACH ROW EXECUTE FUNCTION refuse_minute();",
    )
    .await
    .expect("trigger");

    let engine = bed.engine();
    let crew = vardo_actors::crew::Crew::start(&engine);
    let supervisor = vardo_actors::run::RunSupervisor::start(engine.clone(), crew.clone());
    let scheduler =
        Scheduler::new(engine.clone(), crew, supervisor, format!("t-{}", bed.id)).start();
    // A minute two days ahead, so the scheduler's own ticks at the real minute never reach it.
    let minute = minute_of(Utc::now()) + chrono::Duration::days(2);
    let now = minute + chrono::Duration::seconds(5);
    let key = format!("lock:backup:{job}:{}", minute.timestamp().div_euclid(60));

    let failed = scheduler.send(Tick { now }).await.expect("mailbox");
    assert!(
        failed.is_err(),
        "the refused minute fails the tick: {failed:?}"
    );
    let mut redis = engine.redis().get().await.expect("redis");
    let held: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("get");
    assert_eq!(held, None, "the minute's lock was given back");

    db.batch_execute("DROP TRIGGER refuse_minute ON backup_job")
        .await
        .expect("drop trigger");
    let report = scheduler
        .send(Tick { now })
        .await
        .expect("mailbox")
        .expect("tick");
    assert!(
        report.started.contains(&(job, minute)),
        "the next good tick fires the minute: {report:?}"
    );
    bed.cleanup().await;
}

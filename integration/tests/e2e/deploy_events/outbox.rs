//! The event outbox: a run's events wait in Postgres while Redis is away and are published once
//! it answers again, once; a run whose process died before it enqueued them gets them from a
//! live engine's sweep; the outbox keeps order, records failures and hands a locked row to no
//! second publisher.

use std::time::Duration;

use deadpool_redis::redis;
use serde_json::{json, Value as Json};
use uuid::Uuid;
use vardo_actors::model::{Compression, Organization, RunReason, TargetKind, VolumeKind};
use vardo_actors::store::{EventRow, NewEvent};
use vardo_integration::process::{self, Server};
use vardo_integration::redis::PrivateRedis;
use vardo_integration::{eventually, setting, TestBed};

use super::support::Entry;

/// A job over one app whose volume `data` has no Docker volume (its run fails with "volume not
/// found", whatever Redis does), to a local target, on a schedule that never fires in a test.
async fn failing_job(bed: &TestBed, org: &Organization) -> Uuid {
    let app = bed.app(org, "evt", &[("data", VolumeKind::Generic)]).await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed.job(org, Some(target), &[&app], Compression::Gzip).await;
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup_job SET schedule = '0 3 29 2 *' WHERE id = $1",
            &[&job],
        )
        .await
        .expect("schedule");
    job
}

/// The stream's entries for `run_id`, in order.
async fn entries_of(redis_url: &str, stream: &str, run_id: Uuid) -> Vec<Entry> {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    let all: Vec<Entry> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    all.into_iter()
        .filter(|(_, f)| f.get("runId") == Some(&run_id.to_string()))
        .collect()
}

fn payload(entry: &Entry) -> Json {
    serde_json::from_str(entry.1.get("payload").expect("payload field")).expect("JSON payload")
}

fn kinds(entries: &[Entry]) -> Vec<&str> {
    entries
        .iter()
        .map(|(_, f)| f.get("type").map(String::as_str).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn events_of_a_run_ending_while_redis_is_down_are_published_once_when_it_answers_again() {
    let bed = TestBed::new().await;
    let mut redis = PrivateRedis::start();
    let org = bed.organization().await;
    let job = failing_job(&bed, &org).await;
    let stream = format!("vardo:backup-events:{}", bed.id);
    let mut env = bed.env();
    env.retain(|(k, _)| k != "REDIS_URL");
    env.extend([
        ("REDIS_URL".to_owned(), redis.url()),
        (
            "VARDO_EVENTS_STREAM".to_owned(),
            format!("vardo:events:{}", bed.id),
        ),
        ("VARDO_BACKUP_EVENTS_STREAM".to_owned(), stream.clone()),
    ]);
    // Two engines share the outbox; neither may publish a row the other publishes.
    let engines: Vec<Server> = (0..2)
        .map(|_| Server::spawn(&["--role", "scheduler"], &env).expect("engine"))
        .collect();
    redis.stop();
    let request_id = format!("req-{}", bed.id);
    let run_id = bed
        .store
        .request_run(job, RunReason::Deploy, Some(&request_id))
        .await
        .expect("request");

    // The run ends; its events wait in the outbox, tried and failed while Redis is away.
    let store = &bed.store;
    let waiting = eventually(
        Duration::from_secs(60),
        "the run's events in the outbox, failed at least twice",
        || async move {
            let rows = store.run_events(run_id).await.ok()?;
            (rows.len() == 2 && rows[0].attempts >= 2).then_some(rows)
        },
    )
    .await;
    assert!(
        waiting.iter().all(|r| r.published_at.is_none()),
        "{waiting:?}"
    );
    assert_eq!(
        waiting.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        ["backup.failed", "backup.completed"]
    );
    assert!(
        waiting[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("redis")),
        "{:?}",
        waiting[0].last_error
    );

    redis.resume();
    let published: Vec<EventRow> = eventually(
        Duration::from_secs(60),
        "the run's events published",
        || async move {
            let rows = store.run_events(run_id).await.ok()?;
            rows.iter()
                .all(|r| r.published_at.is_some())
                .then_some(rows)
        },
    )
    .await;
    assert_eq!(published.len(), 2);
    // A published row is never sent again, so the stream now holds all there will be.
    let entries = entries_of(&redis.url(), &stream, run_id).await;
    assert_eq!(
        kinds(&entries),
        ["backup.failed", "backup.completed"],
        "each event once, in order: {entries:?}"
    );
    let failed = payload(&entries[0]);
    assert_eq!(failed["type"], "backup.failed");
    assert_eq!(failed["failedCount"], 1);
    let completed = payload(&entries[1]);
    assert_eq!(completed["type"], "backup.completed");
    assert_eq!(completed["requestId"], request_id.as_str());
    assert_eq!(completed["runId"], run_id.to_string());
    assert_eq!(completed["status"], "failed");
    assert_eq!(completed["requestRuns"], 1);
    assert_eq!(completed["volumes"][0]["volumeName"], "data");
    drop(engines);
    drop(redis);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_run_whose_process_died_before_enqueuing_its_events_gets_them_from_a_live_engine() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let job = failing_job(&bed, &org).await;
    let stream = format!("vardo:backup-events:{}", bed.id);
    let mut env = bed.env();
    env.extend([
        (
            "VARDO_EVENTS_STREAM".to_owned(),
            format!("vardo:events:{}", bed.id),
        ),
        ("VARDO_BACKUP_EVENTS_STREAM".to_owned(), stream.clone()),
    ]);
    // The run's process enqueues nothing for other systems...
    let mut quiet = env.clone();
    quiet.push(("VARDO_EVENTS_PUBLISH".to_owned(), "false".to_owned()));
    let out = process::run(&["backup", "--job", &job.to_string()], &quiet);
    assert_eq!(out.status.code(), Some(1), "the volume fails: {out:?}");
    let db = bed.db.client().await.expect("db");
    let run_id: Uuid = db
        .query_one("SELECT run_id FROM backup WHERE job_id = $1", &[&job])
        .await
        .expect("the run's row")
        .get(0);
    assert!(bed
        .store
        .run_events(run_id)
        .await
        .expect("outbox")
        .is_empty());
    // ...and looks like one that died after its rows settled, before it wrote its outbox: no
    // marker, settled over a minute ago. The deploy pipeline had asked for it.
    db.execute("DELETE FROM notification_run WHERE run_id = $1", &[&run_id])
        .await
        .expect("marker");
    // (The sweep leaves runs older than the first marker alone: history from before the outbox.)
    db.execute(
        "INSERT INTO notification_run (run_id, notices, created_at)
         VALUES (gen_random_uuid(), 0, now() - interval '1 hour')",
        &[],
    )
    .await
    .expect("an earlier run's marker");
    db.execute(
        "UPDATE backup SET finished_at = finished_at - interval '2 minutes' WHERE run_id = $1",
        &[&run_id],
    )
    .await
    .expect("age");
    let request_id = format!("req-{}", bed.id);
    db.execute(
        "INSERT INTO run_request (id, job_id, reason, request_id, claimed_at, claimed_by, finished_at)
         VALUES ($1, $2, 'deploy', $3, now(), 'dead', now())",
        &[&run_id, &job, &request_id],
    )
    .await
    .expect("request");

    let server = Server::spawn(&["--role", "scheduler"], &env).expect("server");
    let store = &bed.store;
    eventually(
        Duration::from_secs(30),
        "the swept run's events published",
        || async move {
            let rows = store.run_events(run_id).await.ok()?;
            (rows.len() == 2 && rows.iter().all(|r| r.published_at.is_some())).then_some(())
        },
    )
    .await;
    let redis_url = setting("REDIS_URL");
    let entries = entries_of(&redis_url, &stream, run_id).await;
    assert_eq!(kinds(&entries), ["backup.failed", "backup.completed"]);
    assert_eq!(payload(&entries[1])["requestId"], request_id.as_str());
    drop(server);
    let _: Result<i64, _> = redis::cmd("DEL")
        .arg(&stream)
        .arg(format!("vardo:events:{}", bed.id))
        .query_async(
            &mut redis::Client::open(redis_url)
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .expect("redis"),
        )
        .await;
    bed.cleanup().await;
}

#[tokio::test]
async fn the_outbox_keeps_order_records_failures_and_never_hands_a_locked_row_to_another() {
    let bed = TestBed::new().await;
    let store = &bed.store;
    let run = Uuid::new_v4();
    let event = |kind: &str| NewEvent {
        stream: "s".into(),
        kind: kind.into(),
        payload: json!({"type": kind}),
        run_id: Some(run),
    };
    let events = [event("e.1"), event("e.2"), event("e.3")];
    store.enqueue_events(&events).await.expect("enqueue");
    store
        .enqueue_events(&events[..1])
        .await
        .expect("enqueue again");
    assert_eq!(
        store.run_events(run).await.expect("rows").len(),
        3,
        "one event of a type per run"
    );

    // While one publisher holds the batch (inside its first send), another finds nothing.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let mut gate = Some((started_tx, release_rx));
    let mut sent = Vec::new();
    let first = store.publish_events(Some(run), 10, |row| {
        sent.push(row.kind.clone());
        let gate = gate.take();
        async move {
            if let Some((started, release)) = gate {
                let _ = started.send(());
                let _ = release.await;
            }
            if row.kind == "e.2" {
                Err("redis: connection refused".to_owned())
            } else {
                Ok(())
            }
        }
    });
    let second = async {
        started_rx.await.expect("the first publisher started");
        let pass = store
            .publish_events(Some(run), 10, |row| async move {
                Err(format!("{} was handed out while locked", row.kind))
            })
            .await
            .expect("second pass");
        let _ = release_tx.send(());
        pass
    };
    let (first, second) = tokio::join!(first, second);
    let first = first.expect("first pass");
    assert_eq!(
        (second.published, second.failed),
        (0, None),
        "the rows were locked"
    );
    assert_eq!(first.published, 1);
    assert_eq!(
        sent,
        ["e.1", "e.2"],
        "oldest first, stopping at the failure"
    );

    let rows = store.run_events(run).await.expect("rows");
    let state: Vec<(&str, bool, i32, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                r.kind.as_str(),
                r.published_at.is_some(),
                r.attempts,
                r.last_error.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [
            ("e.1", true, 0, None),
            ("e.2", false, 1, Some("redis: connection refused")),
            ("e.3", false, 0, None),
        ]
    );
    assert_eq!(
        first.failed,
        Some((rows[1].id, 1, "redis: connection refused".into()))
    );

    // The retry starts at the failed row and goes on in order.
    let mut retried = Vec::new();
    let pass = store
        .publish_events(Some(run), 10, |row| {
            retried.push(row.kind.clone());
            async { Ok(()) }
        })
        .await
        .expect("retry");
    assert_eq!(
        (pass.published, retried),
        (2, vec!["e.2".to_owned(), "e.3".to_owned()])
    );

    // Published rows are deleted once old enough; unpublished ones never.
    store
        .enqueue_events(&[NewEvent {
            run_id: None,
            ..event("e.4")
        }])
        .await
        .expect("enqueue");
    assert_eq!(
        store
            .delete_published_events(Duration::from_secs(3600))
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        store
            .delete_published_events(Duration::ZERO)
            .await
            .expect("delete"),
        3
    );
    let left: i64 = bed
        .db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT count(*) FROM event_outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 1);
    bed.cleanup().await;
}

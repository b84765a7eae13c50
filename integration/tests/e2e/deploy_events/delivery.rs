//! Delivery: two engines at once, a killed engine, dead letters.

use serde_json::json;
use vardo_actors::model::TargetKind;
use vardo_integration::process::Server;
use vardo_integration::{eventually, TestBed};

use super::support::*;

#[tokio::test]
async fn the_same_event_handled_by_two_engines_at_once_creates_one_job() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    bed.target(None, TargetKind::Local, bed.local_config())
        .await;
    let org = bed.organization().await;
    let env = streams.env(&bed, &[]);
    let a = Server::spawn(&["--role", "scheduler"], &env).expect("engine a");
    let b = Server::spawn(&["--role", "scheduler"], &env).expect("engine b");
    let app_id = format!("race-{}", bed.id);
    let event = deployed(
        &org.slug,
        &app_id,
        &format!("race{}", bed.id),
        json!([{"name": "data"}]),
    );

    // Each engine takes one copy and waits at the organization's row, so both handle the event at
    // the same time when the lock goes; the database decides which one creates the job.
    let lock = lock_org(&bed, &org.slug).await;
    streams.send("app.deployed", &event).await;
    eventually(WAIT, "one engine waiting in the database", || async {
        (waiting_on_locks(&bed).await >= 1).then_some(())
    })
    .await;
    let last = streams.send("app.deployed", &event).await;
    eventually(
        WAIT,
        "both engines holding a copy, waiting in the database",
        || async {
            let pending = streams.pending_by_consumer().await;
            let split = pending.len() == 2 && pending.iter().all(|(_, n)| *n == 1);
            (split && waiting_on_locks(&bed).await >= 2).then_some(())
        },
    )
    .await;
    lock.batch_execute("COMMIT").await.expect("release");
    streams.settled(&last).await;

    let jobs = auto_jobs(&bed, &app_id).await;
    assert_eq!(jobs.len(), 1, "one auto job");
    assert_eq!(
        jobs[0].get::<_, Option<Vec<String>>>("apps"),
        Some(vec![app_id.clone()])
    );
    assert_eq!(jobs_in_org(&bed, &org.slug).await, 1);
    assert!(
        streams.range(&streams.dead).await.is_empty(),
        "no dead letters"
    );
    streams.cleanup(vec![a, b]).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn an_engine_killed_before_acknowledging_is_replaced_and_the_effect_happens_once() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    bed.target(None, TargetKind::Local, bed.local_config())
        .await;
    let org = bed.organization().await;
    let app_id = format!("crash-{}", bed.id);
    let event = deployed(
        &org.slug,
        &app_id,
        &format!("crash{}", bed.id),
        json!([{"name": "data"}]),
    );

    let mut a = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine a");
    let lock = lock_org(&bed, &org.slug).await;
    let id = streams.send("app.deployed", &event).await;
    eventually(
        WAIT,
        "engine a to read the message and wait in the database",
        || async {
            let pending = streams.pending_by_consumer().await;
            (pending.len() == 1 && waiting_on_locks(&bed).await >= 1).then_some(())
        },
    )
    .await;
    a.kill();
    lock.batch_execute("COMMIT").await.expect("release");
    assert_eq!(
        streams.pending_by_consumer().await.len(),
        1,
        "still pending with the dead consumer"
    );
    assert!(
        auto_jobs(&bed, &app_id).await.is_empty(),
        "the killed engine committed nothing"
    );

    let env = streams.env(&bed, &[("VARDO_EVENTS_CLAIM_IDLE_SECONDS", "1")]);
    let b = Server::spawn(&["--role", "scheduler"], &env).expect("engine b");
    streams.settled(&id).await;
    assert_eq!(auto_jobs(&bed, &app_id).await.len(), 1, "handled once");
    assert_eq!(jobs_in_org(&bed, &org.slug).await, 1);
    assert!(
        streams.range(&streams.dead).await.is_empty(),
        "no dead letters"
    );
    streams.cleanup(vec![a, b]).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn malformed_messages_are_dead_lettered_with_their_reason_and_the_next_is_processed() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    bed.target(None, TargetKind::Local, bed.local_config())
        .await;
    let other_org = bed
        .store
        .upsert_organization(&format!("other-{}", bed.id), None)
        .await
        .expect("org");
    let foreign = bed.app(&other_org, "theirs", &[]).await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let slug = format!("org-{}", bed.id);
    let bad: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![
                ("type", "app.deployed".into()),
                ("payload", "{not json".into()),
            ],
            "not valid JSON",
        ),
        (
            vec![
                ("type", "app.deployed".into()),
                (
                    "payload",
                    json!({"orgSlug": slug, "appName": "x", "volumes": []}).to_string(),
                ),
            ],
            "missing field `appId`",
        ),
        (
            vec![
                ("type", "app.deployed".into()),
                (
                    "payload",
                    json!({"orgSlug": slug, "appId": "x", "appName": "x", "volumes": "data"})
                        .to_string(),
                ),
            ],
            "invalid type: string \"data\", expected a sequence",
        ),
        (
            vec![("type", "app.renamed".into()), ("payload", "{}".into())],
            "unknown event type \"app.renamed\"",
        ),
        (vec![("kind", "app.deployed".into())], "no `type` field"),
        (
            vec![
                ("type", "app.deleted".into()),
                (
                    "payload",
                    json!({"orgSlug": slug, "appId": foreign.id}).to_string(),
                ),
            ],
            "belongs to another organization",
        ),
    ];
    let mut ids = Vec::new();
    for (fields, _) in &bad {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ids.push(streams.send_fields(&fields).await);
    }
    let good = format!("good-{}", bed.id);
    let last = streams
        .send(
            "app.deployed",
            &deployed(
                &slug,
                &good,
                &format!("good{}", bed.id),
                json!([{"name": "data"}]),
            ),
        )
        .await;
    streams.settled(&last).await;
    assert_eq!(
        auto_jobs(&bed, &good).await.len(),
        1,
        "the valid message after them is processed"
    );
    bed.store
        .app(&foreign.id)
        .await
        .expect("the other organization's app is untouched");

    let dead = streams.range(&streams.dead).await;
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    for ((_, fields), ((sent, reason), id)) in dead.iter().zip(bad.iter().zip(&ids)) {
        let error = fields.get("error").expect("error field");
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
        assert_eq!(fields.get("sourceId"), Some(id));
        assert_eq!(fields.get("sourceStream"), Some(&streams.events));
        for (k, v) in sent {
            assert_eq!(fields.get(*k), Some(v), "the original {k} is kept");
        }
    }
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn a_message_failing_every_time_is_dead_lettered_after_max_deliveries() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    // The database refuses this one app (a real error on every attempt); others go through.
    let app_id = format!("cursed-{}", bed.id);
    bed.db
        .client()
        .await
        .expect("db")
        .batch_execute(&format!(
            "CREATE FUNCTION refuse_app() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'app % is refused by a trigger', NEW.id; END $$;
             CREATE TRIGGER refuse_app BEFORE INSERT ON app FOR EACH ROW
             WHEN (NEW.id = '{app_id}') EXECUTE FUNCTION refuse_app();"
        ))
        .await
        .expect("trigger");
    let env = streams.env(
        &bed,
        &[
            ("VARDO_EVENTS_CLAIM_IDLE_SECONDS", "1"),
            ("VARDO_EVENTS_MAX_DELIVERIES", "3"),
        ],
    );
    let engine = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let slug = format!("org-{}", bed.id);
    let id = streams
        .send(
            "app.deployed",
            &deployed(&slug, &app_id, "cursed", json!([])),
        )
        .await;
    let after = streams
        .send(
            "app.deployed",
            &deployed(&slug, &format!("fine-{}", bed.id), "fine", json!([])),
        )
        .await;
    let dead = eventually(
        WAIT,
        "the failing message in the dead-letter stream",
        || async { streams.range(&streams.dead).await.into_iter().next() },
    )
    .await;
    streams.settled(&after).await;
    let (_, fields) = dead;
    assert_eq!(fields.get("sourceId"), Some(&id));
    assert_eq!(fields.get("deliveries").map(String::as_str), Some("3"));
    let error = fields.get("error").expect("error");
    assert!(
        error.contains("failed 3 times") && error.contains("refused by a trigger"),
        "{error}"
    );
    bed.store
        .app(&format!("fine-{}", bed.id))
        .await
        .expect("the next message was processed meanwhile");
    assert!(bed.store.app(&app_id).await.is_err());
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

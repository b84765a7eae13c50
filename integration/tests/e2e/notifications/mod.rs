//! Notifications end to end: the real binary runs real jobs and delivers its notices to the real
//! SMTP sink (read back from its Maildir) and to HTTP receivers that each test starts on loopback;
//! the outbox, its attempts and the receivers show what was sent, how often, and how it ended.

pub(crate) mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;
use uuid::Uuid;
use vardo_actors::model::{ChannelKind, Status};
use vardo_integration::process::{self, Server};
use vardo_integration::{describe, eventually, repo_root, TestBed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_sends_one_email_one_signed_webhook_and_one_slack_post() {
    let bed = TestBed::new().await;
    let s = setup(&bed, &["data"], &["uploads", "media"]).await;
    let receiver = Receiver::start(&[]).await;
    let recipient = format!("ops-{}@example.com", bed.id);
    let secret = format!("whsec-{}", bed.id);
    channel(&bed, &s.org, ChannelKind::Email, json!({"to": [recipient]})).await;
    channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": receiver.url("/hook"), "secret": secret}),
    )
    .await;
    channel(
        &bed,
        &s.org,
        ChannelKind::Slack,
        json!({"url": receiver.url("/slack")}),
    )
    .await;

    let (out, rows) = run_job(&bed, &engine_env(&bed), s.job).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(rows.len(), 3, "{}", describe(&out));
    let run_id = rows[0].run_id;
    let stored = rows
        .iter()
        .find(|r| r.status == Status::Success)
        .expect("data succeeded");

    // The command delivered its run's notices before exiting: one each, on the first attempt.
    let outbox = settled(&bed, run_id).await;
    assert_eq!(outbox.len(), 3);
    for n in &outbox {
        assert_eq!(
            (n.status.as_str(), n.attempts, n.event.as_str()),
            ("delivered", 1, "backup.failed"),
            "{n:?}"
        );
    }

    let hooks = receiver.requests("/hook");
    assert_eq!(hooks.len(), 1, "exactly one webhook");
    let hook = &hooks[0];
    let body = hook.json();
    assert_eq!(body["type"], "backup.failed");
    assert_eq!(body["organizationId"], s.org.id.to_string());
    assert_eq!(body["jobId"], s.job.to_string());
    assert_eq!(body["jobName"], s.job_name);
    assert_eq!(
        (body["failedCount"].as_u64(), body["totalCount"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(body["totalSizeBytes"].as_i64(), stored.size_bytes);
    assert!(
        body["startedAt"].is_string() && body["finishedAt"].is_string(),
        "{body}"
    );
    let volumes = body["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 3);
    for v in volumes {
        for key in [
            "appName",
            "volumeName",
            "status",
            "sizeBytes",
            "storagePath",
            "error",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        if v["volumeName"] == "data" {
            assert_eq!(v["status"], "success");
            assert_eq!(v["storagePath"].as_str(), stored.storage_path.as_deref());
            assert!(v["error"].is_null());
        } else {
            assert_eq!(v["status"], "failed");
            assert!(
                v["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("volume not found")),
                "{v}"
            );
        }
    }
    let signature = hook.headers.get("x-signature-256").expect("a signature");
    assert_eq!(
        signature,
        &hmac_hex(&secret, &hook.body),
        "verifies with the secret"
    );
    assert_ne!(
        signature,
        &hmac_hex("another-secret", &hook.body),
        "fails with another"
    );
    assert_eq!(
        hook.headers.get("x-vardo-event").map(String::as_str),
        Some("backup.failed")
    );

    let slacks = receiver.requests("/slack");
    assert_eq!(slacks.len(), 1, "exactly one Slack post");
    let slack = slacks[0].json();
    assert!(!slacks[0].headers.contains_key("x-signature-256"));
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.contains(&format!("Backup failed: {}", s.job_name)),
        "{text}"
    );
    let blocks = slack["blocks"].to_string();
    for volume in ["uploads", "media", "data"] {
        assert!(
            blocks.contains(&format!("/{volume}: ")),
            "{volume} missing in {blocks}"
        );
    }

    let mail = one_mail_to(&recipient).await;
    assert_eq!(mail.subject, format!("Backup failed: {}", s.job_name));
    assert!(mail.to.contains(&recipient));
    for body in [&mail.text, &mail.html] {
        assert!(body.contains("2 of 3 volumes failed"), "{body}");
        for v in ["uploads", "media"] {
            let failed = rows.iter().find(|r| r.volume_name == v).expect("row");
            let reason = failed.log.lines().last().expect("a log line");
            assert!(reason.contains("volume not found"), "{reason}");
            assert!(
                body.contains(v) && body.contains("volume not found: neither"),
                "{v}: {body}"
            );
        }
    }
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_run_is_silent_unless_notify_on_success_and_then_reports_the_size() {
    let bed = TestBed::new().await;
    let s = setup(&bed, &["data", "files"], &[]).await;
    let receiver = Receiver::start(&[]).await;
    let recipient = format!("ok-{}@example.com", bed.id);
    channel(&bed, &s.org, ChannelKind::Email, json!({"to": [recipient]})).await;
    channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": receiver.url("/hook")}),
    )
    .await;
    let env = engine_env(&bed);

    let (out, rows) = run_job(&bed, &env, s.job).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(bed
        .store
        .run_notices(rows[0].run_id)
        .await
        .expect("outbox")
        .is_empty());
    assert!(receiver.requests("/hook").is_empty() && mails_to(&recipient).is_empty());

    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET notify_on_success = true WHERE id = $1",
        &[&s.job],
    )
    .await
    .expect("flag");
    let (out, rows) = run_job(&bed, &env, s.job).await;
    assert!(out.status.success(), "{}", describe(&out));
    let total: i64 = rows.iter().map(|r| r.size_bytes.expect("size")).sum();
    let outbox = settled(&bed, rows[0].run_id).await;
    assert_eq!(outbox.len(), 2);
    assert!(outbox
        .iter()
        .all(|n| n.status == "delivered" && n.event == "backup.succeeded"));

    let hooks = receiver.requests("/hook");
    assert_eq!(hooks.len(), 1, "only the second run notified");
    let body = hooks[0].json();
    assert_eq!(body["type"], "backup.succeeded");
    assert_eq!(body["totalSizeBytes"].as_i64(), Some(total));
    assert_eq!(
        (body["failedCount"].as_u64(), body["totalCount"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(
        !hooks[0].headers.contains_key("x-signature-256"),
        "no secret, no signature"
    );

    let mail = one_mail_to(&recipient).await;
    assert_eq!(mail.subject, format!("Backup succeeded: {}", s.job_name));
    assert!(
        mail.text.contains(&format!("({total} bytes)")),
        "{}",
        mail.text
    );
    assert!(
        mail.text.contains("KiB in total"),
        "human-readable size: {}",
        mail.text
    );
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retry_5xx_until_delivered_and_give_up_on_dead_or_refusing_receivers() {
    let bed = TestBed::new().await;
    let s = setup(&bed, &[], &["data"]).await;
    let flaky = Receiver::start(&[Reply::Status(500), Reply::Status(500)]).await;
    let refusing = Receiver::start(&[Reply::Status(400), Reply::Status(400)]).await;
    let flaky_id = channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": flaky.url("/hook")}),
    )
    .await;
    let dead_id = channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": dead_url()}),
    )
    .await;
    let refused_id = channel(
        &bed,
        &s.org,
        ChannelKind::Slack,
        json!({"url": refusing.url("/slack")}),
    )
    .await;
    let env = engine_env(&bed);
    // The server's delivery loop makes the retries the command leaves behind.
    let server = Server::spawn(&["--role", "scheduler"], &env).expect("server");

    let (out, rows) = run_job(&bed, &env, s.job).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let run_id = rows[0].run_id;
    let outbox = settled(&bed, run_id).await;
    let by_channel = |id: Uuid| {
        outbox
            .iter()
            .find(|n| n.channel_id == id)
            .expect("notice")
            .clone()
    };

    let delivered = by_channel(flaky_id);
    assert_eq!(
        (delivered.status.as_str(), delivered.attempts),
        ("delivered", 3)
    );
    assert_eq!(
        attempts(&bed, delivered.id).await,
        [
            (1, "retry".into(), Some(500)),
            (2, "retry".into(), Some(500)),
            (3, "delivered".into(), Some(200))
        ]
    );
    let got = flaky.requests("/hook");
    assert_eq!(got.len(), 3, "two refusals, then exactly one delivery");
    assert_eq!(got.iter().filter(|r| r.answered == Some(200)).count(), 1);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "every attempt sends the same notice"
    );
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.headers.get("x-vardo-delivery").cloned())
        .collect();
    assert!(
        ids.iter().all(|id| id.is_some() && *id == ids[0]),
        "{ids:?}"
    );

    let dead = by_channel(dead_id);
    assert_eq!(
        (dead.status.as_str(), dead.attempts),
        ("failed", 3),
        "{dead:?}"
    );
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("network")),
        "{dead:?}"
    );
    let outcomes: Vec<String> = attempts(&bed, dead.id)
        .await
        .into_iter()
        .map(|a| a.1)
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "failed"]);

    let refused = by_channel(refused_id);
    assert_eq!(
        (refused.status.as_str(), refused.attempts),
        ("failed", 1),
        "a 4xx is not retried"
    );
    assert_eq!(
        attempts(&bed, refused.id).await,
        [(1, "failed".into(), Some(400))]
    );
    assert_eq!(refusing.requests("/slack").len(), 1);

    // The run's own rows are as the run left them.
    for row in &rows {
        let now = bed.store.backup(row.id).await.expect("row");
        assert_eq!(
            (now.status, &now.log, now.finished_at),
            (Status::Failed, &row.log, row.finished_at)
        );
    }
    drop(server);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_in_flight_when_the_engine_is_killed_is_delivered_once_after_restart() {
    let bed = TestBed::new().await;
    let s = setup(&bed, &[], &["data"]).await;
    let receiver = Receiver::start(&[Reply::Hold]).await;
    let secret = format!("whsec-{}", bed.id);
    channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": receiver.url("/hook"), "secret": secret}),
    )
    .await;
    let env = engine_env(&bed);

    // The run ends, its notice is in the outbox, and the engine is killed while delivering it.
    let mut cli = Command::new(process::binary())
        .args(["backup", "--job", &s.job.to_string()])
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .iter()
                .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(repo_root().join("integration"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the command starts");
    eventually(Duration::from_secs(30), "the held delivery", || async {
        (receiver.requests("/hook").len() == 1).then_some(())
    })
    .await;
    cli.kill().expect("kill -9");
    cli.wait().expect("reaped");

    let db = bed.db.client().await.expect("db");
    let run_id: Uuid = db
        .query_one("SELECT run_id FROM backup WHERE job_id = $1", &[&s.job])
        .await
        .expect("the run's row")
        .get(0);
    let pending = bed.store.run_notices(run_id).await.expect("outbox");
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].status.as_str(), pending[0].attempts),
        ("pending", 0),
        "the killed attempt left no outcome"
    );

    let server = Server::spawn(&["--role", "scheduler"], &env).expect("server");
    let outbox = settled(&bed, run_id).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].status.as_str(), outbox[0].attempts),
        ("delivered", 1)
    );
    assert_eq!(
        attempts(&bed, outbox[0].id).await,
        [(1, "delivered".into(), Some(200))]
    );
    let got = receiver.requests("/hook");
    assert_eq!(got.len(), 2, "the held request and the delivery");
    assert_eq!(
        got.iter().filter(|r| r.answered == Some(200)).count(),
        1,
        "delivered once"
    );
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(
        got[0].headers.get("x-vardo-delivery"),
        got[1].headers.get("x-vardo-delivery")
    );
    assert_eq!(
        got[1].headers.get("x-signature-256"),
        Some(&hmac_hex(&secret, &got[1].body))
    );
    drop(server);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_process_died_before_enqueuing_is_notified_by_the_sweep() {
    let bed = TestBed::new().await;
    let s = setup(&bed, &[], &["data"]).await;
    let env = engine_env(&bed);
    // Two runs while the organization has no channel: both leave their marker, no notice.
    let (_, first) = run_job(&bed, &env, s.job).await;
    let (_, second) = run_job(&bed, &env, s.job).await;
    let (first, second) = (first[0].run_id, second[0].run_id);
    // Make the second look like a run whose process died after its rows settled and before it
    // enqueued its notices: no marker, settled over a minute ago.
    let db = bed.db.client().await.expect("db");
    db.execute("DELETE FROM notification_run WHERE run_id = $1", &[&second])
        .await
        .expect("marker");
    db.execute(
        "UPDATE backup SET finished_at = finished_at - interval '2 minutes' WHERE run_id = $1",
        &[&second],
    )
    .await
    .expect("age");
    let receiver = Receiver::start(&[]).await;
    channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": receiver.url("/hook")}),
    )
    .await;

    let server = Server::spawn(&["--role", "scheduler"], &env).expect("server");
    let got = eventually(
        Duration::from_secs(20),
        "the swept run's notice",
        || async {
            let got = receiver.requests("/hook");
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "backup.failed");
    let outbox = settled(&bed, second).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].status, "delivered");
    assert!(
        bed.store
            .run_notices(first)
            .await
            .expect("outbox")
            .is_empty(),
        "the other run was notified already"
    );
    drop(server);
    bed.cleanup().await;
}

#[tokio::test]
async fn channels_keep_their_secrets_sealed_at_rest() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let other = bed
        .store
        .upsert_organization(&format!("other-{}", bed.id), None)
        .await
        .expect("organization");
    let url = "https://hooks.example.com/services/T000/B000/token-1234567890";
    let id = channel(
        &bed,
        &org,
        ChannelKind::Webhook,
        json!({"url": url, "secret": "hunter2-secret"}),
    )
    .await;
    channel(
        &bed,
        &org,
        ChannelKind::Email,
        json!({"to": ["a@example.com"]}),
    )
    .await;

    let db = bed.db.client().await.expect("db");
    let raw: Value = db
        .query_one(
            "SELECT config FROM notification_channel WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row")
        .get(0);
    let raw = raw.to_string();
    assert!(
        !raw.contains("token-1234567890") && !raw.contains("hunter2"),
        "{raw}"
    );

    let listed = bed.store.list_channels(org.id).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].kind, listed[0].config["url"].as_str()),
        (ChannelKind::Webhook, Some(url))
    );
    assert_eq!(listed[0].config["secret"], "hunter2-secret");
    assert_eq!(listed[1].config, json!({"to": ["a@example.com"]}));

    assert!(
        !bed.store
            .delete_channel(other.id, id)
            .await
            .expect("delete"),
        "not another org's"
    );
    assert!(bed.store.delete_channel(org.id, id).await.expect("delete"));
    assert!(!bed.store.delete_channel(org.id, id).await.expect("delete"));
    assert_eq!(
        bed.store.list_channels(org.id).await.expect("list").len(),
        1
    );
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_job_sends_one_overdue_notice_per_episode() {
    use vardo_actors::engine::{Engine, EngineSettings};
    let bed = TestBed::new().await;
    let s = setup(&bed, &[], &["data"]).await;
    let receiver = Receiver::start(&[]).await;
    channel(
        &bed,
        &s.org,
        ChannelKind::Webhook,
        json!({"url": receiver.url("/hook")}),
    )
    .await;
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET last_run_at = '2024-01-15T02:00:00Z' WHERE id = $1",
        &[&s.job],
    )
    .await
    .expect("last run");
    let engine = Engine::build(EngineSettings {
        database_url: bed.db.url.clone().into(),
        database_pool_size: 2,
        redis_url: vardo_integration::setting("REDIS_URL").into(),
        secret_key: bed.secret_key.clone().into(),
        age_identity_file: None,
        docker_host: None,
        helper_image: vardo_integration::setting("VARDO_HELPER_IMAGE"),
        allow_local_backups: true,
        read_volumes_from_host: false,
        heartbeat_interval: Duration::from_secs(10),
        run_lease: Duration::from_secs(120),
        max_concurrent_runs: 1,
        stall_deadline: Duration::from_secs(300),
        catch_up: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(60),
        keep_pre_restore: Duration::from_secs(7 * 86_400),
        drill_postgres_image: None,
        notifications: Default::default(),
        events: Default::default(),
    })
    .expect("engine");

    // The scheduler calls this once when an episode starts.
    let enqueued = vardo_actors::notify::enqueue_overdue(&engine, s.job)
        .await
        .expect("enqueued");
    assert_eq!(enqueued, 1);
    // A job that does not notify on failure is not reported overdue either.
    db.execute(
        "UPDATE backup_job SET notify_on_failure = false WHERE id = $1",
        &[&s.job],
    )
    .await
    .expect("flag");
    let silent = vardo_actors::notify::enqueue_overdue(&engine, s.job)
        .await
        .expect("nothing to enqueue");
    assert_eq!(silent, 0);

    let server = Server::spawn(&["--role", "scheduler"], &engine_env(&bed)).expect("server");
    let got = eventually(Duration::from_secs(20), "the overdue notice", || async {
        let got = receiver.requests("/hook");
        (!got.is_empty()).then_some(got)
    })
    .await;
    let body = got[0].json();
    assert_eq!(body["type"], "backup.overdue");
    assert_eq!(body["jobName"], s.job_name);
    assert_eq!(body["lastRunAt"], "2024-01-15T02:00:00Z");
    assert_eq!(
        got[0].headers.get("x-vardo-event").map(String::as_str),
        Some("backup.overdue")
    );
    eventually(
        Duration::from_secs(10),
        "the overdue notice recorded delivered",
        || async {
            let row = db
                .query_one(
                    "SELECT status FROM notification_outbox WHERE run_id IS NULL",
                    &[],
                )
                .await
                .expect("the overdue notice");
            (row.get::<_, String>(0) == "delivered").then_some(())
        },
    )
    .await;
    assert_eq!(receiver.requests("/hook").len(), 1);
    drop(server);
    bed.cleanup().await;
}

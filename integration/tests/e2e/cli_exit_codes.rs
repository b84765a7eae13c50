//! The exit codes of `backup`, `restore` and `prune`, and what a run that backed up nothing leaves
//! behind: exit 1 with the reason on stderr, a `run` record in the history API, a failure notice
//! in the SMTP sink and a `backup.failed` event on the Redis stream. The real binary runs against
//! the test's own database, bucket, streams and volumes.

use std::time::Duration;

use deadpool_redis::redis;
use serde_json::{json, Value};
use uuid::Uuid;
use vardo_actors::model::{
    ChannelKind, Compression, Organization, RunFailureReason, Status, TargetKind, VolumeKind,
};
use vardo_integration::http::ApiBed;
use vardo_integration::process::Server;
use vardo_integration::{describe, eventually, setting, TestBed};

use crate::notifications::support::{
    channel, engine_env, mails_to, run_job, settled, Mail, Receiver,
};

const WAIT: Duration = Duration::from_secs(20);

/// The test's own result stream on the shared Redis.
struct Results {
    conn: redis::aio::MultiplexedConnection,
    key: String,
}

impl Results {
    async fn new(bed: &TestBed) -> Self {
        let client = redis::Client::open(setting("REDIS_URL")).expect("REDIS_URL");
        Self {
            conn: client
                .get_multiplexed_async_connection()
                .await
                .expect("redis answers (run scripts/services)"),
            key: format!("vardo:backup-events:{}", bed.id),
        }
    }

    /// The engine's environment: SMTP, fast retries, and this stream for its results.
    fn env(&self, bed: &TestBed) -> Vec<(String, String)> {
        let mut env = engine_env(bed);
        env.push(("VARDO_BACKUP_EVENTS_STREAM".into(), self.key.clone()));
        env
    }

    /// The payload of the `kind` event of `run_id`, once it is on the stream.
    async fn event(&self, kind: &str, run_id: Uuid) -> Value {
        eventually(WAIT, &format!("{kind} of run {run_id}"), || async {
            let entries: Vec<(String, std::collections::HashMap<String, String>)> =
                redis::cmd("XRANGE")
                    .arg(&self.key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut self.conn.clone())
                    .await
                    .ok()?;
            entries.into_iter().find_map(|(_, f)| {
                (f.get("type")? == kind && f.get("runId")? == &run_id.to_string())
                    .then(|| serde_json::from_str(f.get("payload")?).ok())
                    .flatten()
            })
        })
        .await
    }

    async fn cleanup(self) {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(&self.key)
            .query_async(&mut self.conn.clone())
            .await;
    }
}

/// A job over `apps` whose schedule never fires during a test.
async fn job(bed: &TestBed, org: &Organization, target: Option<Uuid>, volumes: &[&str]) -> Uuid {
    let volumes: Vec<(&str, VolumeKind)> =
        volumes.iter().map(|v| (*v, VolumeKind::Generic)).collect();
    let app = bed
        .app(
            org,
            &format!("a{}", &Uuid::new_v4().simple().to_string()[..6]),
            &volumes,
        )
        .await;
    let job = bed.job(org, target, &[&app], Compression::Gzip).await;
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

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn count(bed: &TestBed, sql: &str) -> i64 {
    bed.db
        .client()
        .await
        .expect("db")
        .query_one(sql, &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_refused_with_exit_1_and_the_reason_on_stderr() {
    let bed = TestBed::new().await;
    let env = engine_env(&bed);
    let (job, backup) = (Uuid::new_v4(), Uuid::new_v4());
    let (out, rows) = run_job(&bed, &env, job).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        rows.is_empty() && out.stdout.is_empty(),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains(&format!("error: job {job} not found")),
        "{}",
        describe(&out)
    );
    for (args, what) in [
        (
            vec!["restore", "--backup", &backup.to_string()],
            format!("backup {backup} not found"),
        ),
        (
            vec!["prune", "--job", &job.to_string()],
            format!("job {job} not found"),
        ),
        (
            vec!["prune", "--job", &job.to_string(), "--dry-run"],
            format!("job {job} not found"),
        ),
    ] {
        let out = bed.cli(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(stderr(&out).contains(&what), "{args:?}: {}", describe(&out));
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
    }
    // Refused before anything ran: no run, no restore, nothing for other systems.
    assert_eq!(count(&bed, "SELECT count(*) FROM run").await, 0);
    assert_eq!(count(&bed, "SELECT count(*) FROM restore").await, 0);
    assert_eq!(count(&bed, "SELECT count(*) FROM event_outbox").await, 0);
    bed.cleanup().await;
}

/// The one email to `recipient` whose subject names `job_name`.
fn mail_for(recipient: &str, job_name: &str) -> Option<Mail> {
    let mut mails: Vec<Mail> = mails_to(recipient)
        .into_iter()
        .filter(|m| m.subject == format!("Backup failed: {job_name}"))
        .collect();
    assert!(mails.len() <= 1, "one email per run to {recipient}");
    mails.pop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_backs_up_nothing_exits_1_and_is_recorded_notified_and_published() {
    let t = ApiBed::start("web").await;
    let bed = &t.bed;
    let results = Results::new(bed).await;
    let org = bed.organization().await;
    let recipient = format!("nothing-{}@example.com", bed.id);
    channel(bed, &org, ChannelKind::Email, json!({"to": [recipient]})).await;
    let s3 = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    // A job's target is its own, else its organization's, else the system's: the no-target job
    // belongs to a second organization that has none (and the test's database has no system one).
    let lonely = bed
        .store
        .upsert_organization(&format!("lonely-{}", bed.id), Some("No targets"))
        .await
        .expect("organization");
    channel(bed, &lonely, ChannelKind::Email, json!({"to": [recipient]})).await;
    let no_target = job(bed, &lonely, None, &["data"]).await;
    let no_volumes = job(bed, &org, Some(s3), &["tmpcache"]).await;
    let env = results.env(bed);

    let mut runs = Vec::new();
    for (job_id, org_id, reason, says) in [
        (
            no_target,
            lonely.id,
            RunFailureReason::NoTarget,
            "no backup target resolves",
        ),
        (
            no_volumes,
            org.id,
            RunFailureReason::NoVolumes,
            "covers no persistent volume",
        ),
    ] {
        let (out, rows) = run_job(bed, &env, job_id).await;
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        assert!(
            rows.is_empty() && out.stdout.is_empty(),
            "{}",
            describe(&out)
        );
        let err = stderr(&out);
        assert!(
            err.contains("backed up nothing") && err.contains(says),
            "{}",
            describe(&out)
        );

        // The history API shows the run, with its reason; it has no backup rows.
        let path = format!("/api/v1/organizations/{org_id}/backups/runs?jobId={job_id}");
        let listed = t.admin.get(&path).await.expect(200);
        let items = listed.body["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 1, "{}", listed.body);
        let run = &items[0];
        let run_id = Uuid::parse_str(run["id"].as_str().expect("id")).expect("a run id");
        assert!(
            err.contains(&run_id.to_string()),
            "stderr names the run: {err}"
        );
        assert_eq!(run["jobId"], job_id.to_string().as_str());
        assert_eq!(run["status"], "failed");
        assert_eq!(run["reason"], reason.as_str());
        assert!(
            run["message"].as_str().is_some_and(|m| m.contains(says)),
            "{run}"
        );
        assert!(
            run["startedAt"].is_string() && run["finishedAt"].is_string(),
            "{run}"
        );
        let history = t
            .admin
            .get(&format!(
                "/api/v1/organizations/{org_id}/backups/history?runId={run_id}"
            ))
            .await
            .expect(200);
        assert_eq!(history.body["items"], json!([]));

        // One failure notice, delivered by the command before it exited.
        let outbox = settled(bed, run_id).await;
        assert_eq!(outbox.len(), 1, "{outbox:?}");
        assert_eq!(
            (outbox[0].status.as_str(), outbox[0].event.as_str()),
            ("delivered", "backup.failed")
        );
        let name = bed.store.job(job_id).await.expect("job").name;
        let mail = eventually(WAIT, "the failure email", || async {
            mail_for(&recipient, &name)
        })
        .await;
        for body in [&mail.text, &mail.html] {
            assert!(
                body.contains("No volume was backed up") && body.contains(says),
                "{body}"
            );
        }

        // And `backup.failed` on the stream, with the reason.
        let event = results.event("backup.failed", run_id).await;
        assert_eq!(event["jobId"], job_id.to_string().as_str());
        assert_eq!(event["reason"], reason.as_str());
        assert_eq!(event["volumes"], json!([]));
        assert!(
            event["error"].as_str().is_some_and(|e| e.contains(says)),
            "{event}"
        );
        runs.push(run_id);
    }
    // Only the organization's own runs are listed to it.
    let own = t
        .admin
        .get(&format!("/api/v1/organizations/{}/backups/runs", org.id))
        .await
        .expect(200);
    assert_eq!(
        own.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        own.body
    );
    assert_eq!(own.body["items"][0]["id"], runs[1].to_string().as_str());
    results.cleanup().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_only_volume_is_missing_exits_1_with_a_notice_and_an_event() {
    let bed = TestBed::new().await;
    let results = Results::new(&bed).await;
    let org = bed.organization().await;
    let recipient = format!("missing-{}@example.com", bed.id);
    channel(&bed, &org, ChannelKind::Email, json!({"to": [recipient]})).await;
    let s3 = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job_id = job(&bed, &org, Some(s3), &["data"]).await;

    let (out, rows) = run_job(&bed, &results.env(&bed), job_id).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(rows.len(), 1, "{}", describe(&out));
    let row = &rows[0];
    assert_eq!(row.status, Status::Failed);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim_end(),
        format!("{} {}/data failed - -", row.id, row.app_name),
        "the stdout line keeps its format"
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: {}/data failed: volume not found",
            row.app_name
        )),
        "{}",
        describe(&out)
    );
    assert_eq!(
        count(&bed, "SELECT count(*) FROM run").await,
        0,
        "a run with rows is told by them"
    );

    let outbox = settled(&bed, row.run_id).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].status, "delivered");
    let name = bed.store.job(job_id).await.expect("job").name;
    let mail = eventually(WAIT, "the failure email", || async {
        mail_for(&recipient, &name)
    })
    .await;
    assert!(
        mail.text.contains("1 of 1 volumes failed") && mail.text.contains("volume not found"),
        "{}",
        mail.text
    );
    let event = results.event("backup.failed", row.run_id).await;
    assert_eq!(
        (event["failedCount"].as_u64(), event["totalCount"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(
        event["volumes"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("volume not found")),
        "{event}"
    );
    results.cleanup().await;
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_rows_whose_process_died_before_enqueuing_is_notified_once_by_the_sweep() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let job_id = job(&bed, &org, None, &["data"]).await;
    let env = engine_env(&bed);
    // Two runs while the organization has no channel: both leave their marker, no notice.
    let (first, _) = run_job(&bed, &env, job_id).await;
    let (second, _) = run_job(&bed, &env, job_id).await;
    assert_eq!(
        (first.status.code(), second.status.code()),
        (Some(1), Some(1))
    );
    let runs = bed
        .store
        .list_runs(org.id, Some(job_id), None, 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 2);
    let (died, notified) = (runs[0].id, runs[1].id);
    // Both ended over a minute ago; the newer looks like a run whose process died before it
    // enqueued its notices (no marker).
    let db = bed.db.client().await.expect("db");
    db.execute("DELETE FROM notification_run WHERE run_id = $1", &[&died])
        .await
        .expect("marker");
    db.execute(
        "UPDATE run SET finished_at = finished_at - interval '2 minutes'",
        &[],
    )
    .await
    .expect("age");
    let receiver = Receiver::start(&[]).await;
    channel(
        &bed,
        &org,
        ChannelKind::Webhook,
        json!({"url": receiver.url("/hook")}),
    )
    .await;

    let server = Server::spawn(&["--role", "scheduler"], &env).expect("server");
    let got = eventually(WAIT, "the swept run's notice", || async {
        let got = receiver.requests("/hook");
        (!got.is_empty()).then_some(got)
    })
    .await;
    let outbox = settled(&bed, died).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].status, "delivered");
    let body = got[0].json();
    assert_eq!(body["type"], "backup.failed");
    assert_eq!(body["reason"], "no_target");
    // Sent once: the sweep wrote the run's marker with its notice, and the run that had its
    // marker got nothing.
    assert_eq!(
        count(&bed, "SELECT count(*) FROM notification_outbox").await,
        1
    );
    assert!(
        bed.store
            .run_notices(notified)
            .await
            .expect("outbox")
            .is_empty(),
        "the other run had its marker"
    );
    assert_eq!(receiver.requests("/hook").len(), 1);
    drop(server);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_stops_before_its_rows_exits_1_and_is_recorded_with_the_error() {
    let bed = TestBed::new().await;
    let results = Results::new(&bed).await;
    let org = bed.organization().await;
    let recipient = format!("stopped-{}@example.com", bed.id);
    channel(&bed, &org, ChannelKind::Email, json!({"to": [recipient]})).await;
    let s3 = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job_id = job(&bed, &org, Some(s3), &["data"]).await;
    // An engine with another secret key cannot open the target's credentials: the run stops
    // while it resolves its target, before it records any volume.
    let mut env = results.env(&bed);
    env.retain(|(k, _)| k != "VARDO_SECRET_KEY");
    env.push((
        "VARDO_SECRET_KEY".into(),
        vardo_actors::secrets::SecretBox::generate_key(),
    ));

    let (out, rows) = run_job(&bed, &env, job_id).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        rows.is_empty() && out.stdout.is_empty(),
        "{}",
        describe(&out)
    );
    let runs = bed
        .store
        .list_runs(org.id, Some(job_id), None, 10)
        .await
        .expect("runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.reason, RunFailureReason::Error);
    assert!(run.message.starts_with("run failed: "), "{}", run.message);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: run {} backed up nothing: {}",
            run.id, run.message
        )),
        "{}",
        describe(&out)
    );
    let name = bed.store.job(job_id).await.expect("job").name;
    let mail = eventually(WAIT, "the failure email", || async {
        mail_for(&recipient, &name)
    })
    .await;
    assert!(mail.text.contains(&run.message), "{}", mail.text);
    let event = results.event("backup.failed", run.id).await;
    assert_eq!(event["reason"], "error");
    results.cleanup().await;
    bed.cleanup().await;
}

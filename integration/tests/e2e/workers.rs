//! `GET /api/v1/workers`: every actor of a serving engine reports what it did — a run started
//! through the API moves the counts of the lock, the volume runner, the uploader, the pruner and
//! the supervisor; a volume runner that cannot open an archive reports the error it met; only the
//! admin may look.

use serde_json::Value;
use vardo_integration::http::ApiBed;

fn worker<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name} in {list}"))
}

fn count(w: &Value, field: &str) -> u64 {
    w[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {w}"))
}

/// Runs `job` through the API and waits until it has `rows` settled rows.
async fn run_through_api(
    api: &ApiBed,
    org: &vardo_integration::http::Org,
    job: uuid::Uuid,
    rows: usize,
) {
    org.api
        .post_empty(&org.path(&format!("/backups/jobs/{job}/run")))
        .await
        .expect(202);
    let db = api.bed.db.client().await.expect("db");
    let db = &db;
    vardo_integration::eventually(
        std::time::Duration::from_secs(90),
        "the server's run settles",
        || async move {
            let settled: i64 = db
                .query_one(
                    "SELECT count(*) FROM backup WHERE job_id = $1
                     AND status IN ('success', 'failed')",
                    &[&job],
                )
                .await
                .ok()?
                .get(0);
            (settled as usize >= rows).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn workers_report_what_each_actor_did_and_the_errors_they_met() {
    let api = ApiBed::start("all").await;
    let org = api.org("crew").await;
    // The first run is the CLI's, in its own process: the server's actors did none of it.
    let done = api.backed_up(&org, "crew", "s3").await;
    let before = api.admin.get("/api/v1/workers").await.expect(200).body;
    assert_eq!(count(worker(&before, "uploader"), "done"), 0, "{before}");
    assert!(before["instance"].as_str().is_some_and(|i| !i.is_empty()));
    for name in [
        "lock",
        "volume-runner",
        "uploader",
        "pruner",
        "supervisor",
        "scheduler",
    ] {
        assert_eq!(worker(&before, name)["state"], "idle", "{before}");
    }

    run_through_api(&api, &org, done.job, 2).await;
    let after = api.admin.get("/api/v1/workers").await.expect(200).body;
    let uploader = worker(&after, "uploader");
    assert_eq!(
        (count(uploader, "done"), count(uploader, "errors")),
        (1, 0),
        "{after}"
    );
    assert_eq!(count(worker(&after, "volume-runner"), "done"), 1, "{after}");
    // The volume lock at least (and the scheduler's minute locks, if a minute came).
    assert!(count(worker(&after, "lock"), "done") >= 1, "{after}");
    // The supervisor settles a run after its rows (pruning, notices): a moment behind them.
    let settled = vardo_integration::eventually(
        std::time::Duration::from_secs(20),
        "the supervisor settles the run",
        || async {
            let now = api.admin.get("/api/v1/workers").await.body;
            (worker(&now, "supervisor")["state"] == "idle").then_some(now)
        },
    )
    .await;
    let supervisor = worker(&settled, "supervisor");
    assert_eq!(
        (count(supervisor, "done"), count(supervisor, "errors")),
        (1, 0),
        "{settled}"
    );
    assert_eq!(count(worker(&settled, "pruner"), "done"), 1, "{settled}");

    // A Postgres volume without a running database container cannot be dumped: the volume runner
    // says so, and the supervisor counts a failed run.
    let app_id = format!("pg-{}", api.bed.id);
    let app_name = format!("pg{}", api.bed.id);
    org.api
        .put(
            &org.path(&format!("/apps/{app_id}")),
            &serde_json::json!({"name": app_name, "volumes": [{"name": "db", "persistent": true, "kind": "postgres"}]}),
        )
        .await
        .expect(201);
    let volume = api.bed.track_volume(&format!("{app_name}-blue_db"));
    api.bed.docker.create_volume(&volume).await.expect("volume");
    let job = org
        .api
        .post(
            &org.path("/backups/jobs"),
            &serde_json::json!({"name": "pg job", "schedule": "0 3 * * *",
                "targetId": done.target, "appIds": [app_id], "keepAll": true}),
        )
        .await
        .expect(201)
        .id();
    run_through_api(&api, &org, job, 1).await;
    let failed = vardo_integration::eventually(
        std::time::Duration::from_secs(20),
        "the supervisor settles the failed run",
        || async {
            let now = api.admin.get("/api/v1/workers").await.body;
            (worker(&now, "supervisor")["state"] == "idle").then_some(now)
        },
    )
    .await;
    let runner = worker(&failed, "volume-runner");
    assert_eq!(count(runner, "errors"), 1, "{failed}");
    assert_eq!(count(runner, "consecutiveErrors"), 1, "{failed}");
    let last = runner["lastError"].as_str().expect("lastError");
    assert!(last.contains("no running container mounts"), "{last}");
    assert!(runner["lastErrorAt"].as_str().is_some(), "{failed}");
    let supervisor = worker(&failed, "supervisor");
    assert_eq!(
        (count(supervisor, "done"), count(supervisor, "errors")),
        (1, 1),
        "{failed}"
    );
    // The uploader never saw that run.
    assert_eq!(count(worker(&failed, "uploader"), "done"), 1, "{failed}");

    // Only the admin sees the engine's actors.
    org.api.get("/api/v1/workers").await.expect(403);
    api.admin
        .with_token(None)
        .get("/api/v1/workers")
        .await
        .expect(401);
    api.cleanup().await;
}

//! `backup.requested`: runs on demand and their `backup.completed` answer.

use std::time::Duration;

use serde_json::{json, Value as Json};
use uuid::Uuid;
use vardo_actors::model::{Status, TargetKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::process::Server;
use vardo_integration::{eventually, volumes, TestBed};

use super::support::*;

#[tokio::test]
async fn backup_requested_runs_the_apps_job_and_publishes_its_completion() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    let org = bed.organization().await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let app_id = format!("pre-{}", bed.id);
    let app_name = format!("pre{}", bed.id);
    let volume = bed.track_volume(&format!("{app_name}-blue_data"));
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        "head -c 300000 /dev/urandom > /volume/blob",
    )
    .await
    .expect("populate");
    let id = streams
        .send(
            "app.deployed",
            &deployed(&org.slug, &app_id, &app_name, json!([{"name": "data"}])),
        )
        .await;
    streams.settled(&id).await;
    let job: Uuid = auto_jobs(&bed, &app_id).await[0].get("id");

    let request = format!("deploy-{}", Uuid::new_v4());
    let ask = json!({"orgSlug": org.slug, "appId": app_id, "requestId": request});
    streams.send("backup.requested", &ask).await;
    let completed: Json = eventually(Duration::from_secs(60), "backup.completed", || async {
        streams
            .range(&streams.results)
            .await
            .into_iter()
            .find_map(|(_, f)| {
                let body: Json = serde_json::from_str(f.get("payload")?).ok()?;
                (f.get("type")? == "backup.completed" && body["requestId"] == request.as_str())
                    .then_some(body)
            })
    })
    .await;
    assert_eq!(completed["type"], "backup.completed");
    assert_eq!(completed["status"], "success", "{completed}");
    assert_eq!(completed["job"]["id"], job.to_string());
    assert_eq!(completed["job"]["name"], format!("Auto: {app_name}"));
    assert_eq!(completed["orgSlug"], org.slug.as_str());
    assert_eq!(completed["requestRuns"], 1);
    let vols = completed["volumes"].as_array().expect("volumes");
    assert_eq!(vols.len(), 1, "{completed}");
    assert_eq!(vols[0]["volumeName"], "data");
    assert_eq!(vols[0]["status"], "success");
    let size = vols[0]["sizeBytes"].as_i64().expect("size");
    assert!(size > 300_000, "{size}");
    let key = vols[0]["storagePath"]
        .as_str()
        .expect("storage path")
        .to_owned();
    assert!(
        key.starts_with(&format!("{}/{app_name}/data/", org.slug)),
        "{key}"
    );

    // The backup rows say the same, and the archive is where the event says.
    let run: Uuid = completed["runId"]
        .as_str()
        .expect("runId")
        .parse()
        .expect("uuid");
    let rows = bed.store.run_backups(run).await.expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Status::Success, "{}", rows[0].log);
    assert_eq!(rows[0].storage_path.as_deref(), Some(key.as_str()));
    assert_eq!(rows[0].size_bytes, Some(size));
    let config = bed.store.target(target).await.expect("target").config;
    let stored = TargetStorage::open(&config, true)
        .expect("storage")
        .stat(&key)
        .await
        .expect("stat");
    assert_eq!(stored.and_then(|n| i64::try_from(n).ok()), Some(size));

    // Every run's end is published with the webhook's body too.
    let entries = streams.range(&streams.results).await;
    let succeeded: Json = entries
        .iter()
        .find(|(_, f)| f.get("type").map(String::as_str) == Some("backup.succeeded"))
        .and_then(|(_, f)| serde_json::from_str(f.get("payload")?).ok())
        .expect("a backup.succeeded event");
    assert_eq!(succeeded["type"], "backup.succeeded");
    assert_eq!(succeeded["jobId"], job.to_string());
    assert_eq!(
        (
            succeeded["failedCount"].as_i64(),
            succeeded["totalCount"].as_i64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(succeeded["volumes"][0]["storagePath"], key.as_str());

    // The same request again starts nothing new.
    let again = streams.send("backup.requested", &ask).await;
    streams.settled(&again).await;
    let runs: i64 = bed
        .db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT count(*) FROM run_request WHERE request_id = $1",
            &[&request],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(runs, 1, "one run per request and job");

    // A request nothing can serve is answered at once.
    let unknown = format!("deploy-{}", Uuid::new_v4());
    streams
        .send(
            "backup.requested",
            &json!({"orgSlug": org.slug, "appId": "no-such-app", "requestId": unknown}),
        )
        .await;
    let answer: Json = eventually(WAIT, "the skipped answer", || async {
        streams
            .range(&streams.results)
            .await
            .into_iter()
            .find_map(|(_, f)| {
                let body: Json = serde_json::from_str(f.get("payload")?).ok()?;
                (body["requestId"] == unknown.as_str()).then_some(body)
            })
    })
    .await;
    assert_eq!(answer["status"], "skipped");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no-such-app"),
        "{answer}"
    );
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

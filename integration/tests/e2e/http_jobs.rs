//! Control plane: backup jobs — every field round-trips to the database, `nextRunAt` follows the
//! job's time zone, `overdue` and `lastRunAt` show the scheduler's columns, deleting a job keeps
//! its history and archives unless `purge=true`, and `run` queues a run a scheduler claims.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use vardo_actors::model::Compression;
use vardo_actors::storage::TargetStorage;
use vardo_integration::eventually;
use vardo_integration::http::ApiBed;

#[tokio::test]
async fn jobs_round_trip_every_field_and_compute_their_schedule() {
    let t = ApiBed::start("web").await;
    let org = t.org("jobs").await;
    let target = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "t", "type": "s3", "config": t.bed.bucket.target_json(None)}),
        )
        .await
        .expect(201)
        .id();
    for app in ["a1", "a2"] {
        org.api
            .put(
                &org.path(&format!("/apps/{app}-{}", t.bed.id)),
                &json!({"name": format!("{app}{}", t.bed.id)}),
            )
            .await
            .expect(201);
    }
    let a1 = format!("a1-{}", t.bed.id);
    let a2 = format!("a2-{}", t.bed.id);
    let body = json!({
        "name": "nightly", "schedule": "0 2 * * *", "enabled": true, "targetId": target,
        "appIds": [a1], "keepAll": false, "keepLast": 3, "keepHourly": null, "keepDaily": 7,
        "keepWeekly": 4, "keepMonthly": 6, "keepYearly": 1, "notifyOnSuccess": true,
        "notifyOnFailure": false, "timezone": "Europe/Berlin", "compression": "zstd",
        "incremental": {"fullEvery": 7}
    });
    for bad in [
        json!({"fullEvery": 0}),
        json!({"fullEvery": 1001}),
        json!({"every": 3}),
    ] {
        let mut wrong = body.clone();
        wrong["incremental"] = bad.clone();
        let refused = org.api.post(&org.path("/backups/jobs"), &wrong).await;
        assert!(
            matches!(refused.status, 400 | 422),
            "{bad}: {}",
            refused.text
        );
        assert!(
            refused.text.contains("incremental") || refused.text.contains("every"),
            "{}",
            refused.text
        );
    }
    let created = org
        .api
        .post(&org.path("/backups/jobs"), &body)
        .await
        .expect(201);
    let id = created.id();
    for key in [
        "name",
        "schedule",
        "enabled",
        "appIds",
        "keepAll",
        "keepLast",
        "keepHourly",
        "keepDaily",
        "keepWeekly",
        "keepMonthly",
        "keepYearly",
        "notifyOnSuccess",
        "notifyOnFailure",
        "timezone",
        "compression",
        "incremental",
    ] {
        assert_eq!(created.body[key], body[key], "{key}: {}", created.text);
    }
    assert_eq!(created.body["targetId"], target.to_string().as_str());
    assert!(created.body["lastRunAt"].is_null());
    assert_eq!(created.body["overdue"], false);
    // 02:00 in Berlin is 00:00 or 01:00 UTC.
    let next: DateTime<Utc> = created.body["nextRunAt"]
        .as_str()
        .expect("nextRunAt")
        .parse()
        .expect("rfc3339");
    assert!(
        next > Utc::now()
            && next < Utc::now() + chrono::Duration::days(1) + chrono::Duration::minutes(1)
    );
    assert!(matches!(chrono::Timelike::hour(&next), 0 | 1), "{next}");

    let job = t.bed.store.job(id).await.expect("row");
    assert_eq!(job.timezone, "Europe/Berlin");
    assert_eq!(job.compression, Compression::Zstd);
    assert_eq!(job.retention.keep_last, Some(3));
    assert_eq!(job.retention.keep_hourly, None);
    assert!(job.notify_on_success && !job.notify_on_failure);
    let apps = t.bed.store.job_apps(id).await.expect("apps");
    assert_eq!(
        apps.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        vec![a1.clone()]
    );

    // The scheduler's columns show through.
    let db = t.bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET overdue_since = now(), last_run_at = now() - interval '1 day' WHERE id = $1",
        &[&id],
    )
    .await
    .expect("update");
    let got = org
        .api
        .get(&org.path(&format!("/backups/jobs/{id}")))
        .await
        .expect(200);
    assert_eq!(got.body["overdue"], true);
    assert!(got.body["lastRunAt"].as_str().is_some());

    // PUT replaces: defaults for what is omitted; disabled jobs have no next run.
    let put = org
        .api
        .put(
            &org.path(&format!("/backups/jobs/{id}")),
            &json!({"name": "renamed", "schedule": "*/5 * * * *", "enabled": false, "appIds": [a2, a1]}),
        )
        .await
        .expect(200);
    assert_eq!(put.body["name"], "renamed");
    assert!(put.body["nextRunAt"].is_null());
    assert!(put.body["targetId"].is_null());
    assert_eq!(put.body["timezone"], "UTC");
    assert_eq!(put.body["notifyOnFailure"], true);
    let job = t.bed.store.job(id).await.expect("row");
    assert!(!job.enabled && job.target_id.is_none() && job.retention.keep_last.is_none());
    assert_eq!(t.bed.store.job_apps(id).await.expect("apps").len(), 2);

    // Listing pages.
    org.api
        .post(
            &org.path("/backups/jobs"),
            &json!({"name": "second", "schedule": "0 3 * * *"}),
        )
        .await
        .expect(201);
    let page = org
        .api
        .get(&org.path("/backups/jobs?limit=1"))
        .await
        .expect(200);
    assert_eq!(page.body["items"][0]["id"], id.to_string().as_str());
    let cursor = page.body["nextCursor"].as_str().expect("cursor").to_owned();
    let rest = org
        .api
        .get(&org.path(&format!("/backups/jobs?limit=1&cursor={cursor}")))
        .await
        .expect(200);
    assert_eq!(rest.body["items"][0]["name"], "second");

    org.api
        .get(&org.path(&format!("/backups/jobs/{}", uuid::Uuid::new_v4())))
        .await
        .expect(404);
    org.api
        .get(&org.path("/backups/jobs/not-a-uuid"))
        .await
        .expect(404);
    t.cleanup().await;
}

fn storage(t: &ApiBed) -> TargetStorage {
    TargetStorage::open(&t.bed.bucket.config(None), false).expect("storage")
}

#[tokio::test]
async fn deleting_a_job_keeps_its_history_and_archives_unless_purged() {
    let t = ApiBed::start("web").await;
    let org = t.org("del").await;
    let kept = t.backed_up(&org, "keep", "s3").await;
    let row = &kept.rows[0];
    let key = row.storage_path.clone().expect("path");
    org.api
        .delete(&org.path(&format!("/backups/jobs/{}", kept.job)))
        .await
        .expect(204);
    assert!(t.bed.store.job(kept.job).await.is_err());
    // The row stays (jobId null), listable and readable; the archive stays.
    let item = org
        .api
        .get(&org.path(&format!("/backups/history/{}", row.id)))
        .await
        .expect(200);
    assert!(item.body["jobId"].is_null());
    assert_eq!(item.body["status"], "success");
    let listed = org
        .api
        .get(&org.path(&format!("/backups/history?appId={}", kept.app_id)))
        .await
        .expect(200);
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    assert!(storage(&t).stat(&key).await.expect("stat").is_some());
    // …and restorable: the restore is queued.
    org.api
        .post_empty(&org.path(&format!("/backups/history/{}/restore", row.id)))
        .await
        .expect(202);

    let purged = t.backed_up(&org, "purge", "s3").await;
    let pkey = purged.rows[0].storage_path.clone().expect("path");
    assert!(storage(&t).stat(&pkey).await.expect("stat").is_some());
    org.api
        .delete(&org.path(&format!("/backups/jobs/{}?purge=true", purged.job)))
        .await
        .expect(204);
    assert!(
        storage(&t).stat(&pkey).await.expect("stat").is_none(),
        "the archive is gone"
    );
    org.api
        .get(&org.path(&format!("/backups/history/{}", purged.rows[0].id)))
        .await
        .expect(404);
    assert!(t.bed.store.backup(purged.rows[0].id).await.is_err());
    // The other job's archive is untouched.
    assert!(storage(&t).stat(&key).await.expect("stat").is_some());
    t.cleanup().await;
}

#[tokio::test]
async fn run_queues_a_request_with_the_runs_id() {
    let t = ApiBed::start("web").await;
    let org = t.org("run").await;
    let job = org
        .api
        .post(
            &org.path("/backups/jobs"),
            &json!({"name": "j", "schedule": "0 2 * * *"}),
        )
        .await
        .expect(201)
        .id();
    let r = org
        .api
        .post_empty(&org.path(&format!("/backups/jobs/{job}/run")))
        .await
        .expect(202);
    let run = r.id();
    let row = t
        .bed
        .db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT job_id, reason FROM run_request WHERE id = $1",
            &[&run],
        )
        .await
        .expect("the request is stored");
    assert_eq!(row.get::<_, uuid::Uuid>(0), job);
    assert_eq!(row.get::<_, String>(1), "manual");
    org.api
        .post_empty(&org.path(&format!("/backups/jobs/{}/run", uuid::Uuid::new_v4())))
        .await
        .expect(404);
    t.cleanup().await;
}

/// Needs the scheduler role's request dispatcher: the run's rows appear and finish.
#[tokio::test]
async fn run_through_the_api_backs_the_job_up() {
    let t = ApiBed::start("all").await;
    let org = t.org("e2e").await;
    let done = t.backed_up(&org, "e2e", "s3").await;
    let r = org
        .api
        .post_empty(&org.path(&format!("/backups/jobs/{}/run", done.job)))
        .await
        .expect(202);
    let run = r.id();
    let finished = eventually(Duration::from_secs(60), "the run's rows to finish", || {
        let api = org.api.clone();
        let path = org.path(&format!("/backups/history?runId={run}"));
        async move {
            let r = api.get(&path).await;
            let items = r.body["items"].as_array()?.clone();
            (!items.is_empty()
                && items
                    .iter()
                    .all(|i| i["status"] == "success" || i["status"] == "failed"))
            .then_some(items)
        }
    })
    .await;
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["status"], "success", "{:?}", finished[0]);
    assert_eq!(finished[0]["jobId"], done.job.to_string().as_str());
    let last = org
        .api
        .get(&org.path(&format!("/backups/jobs/{}", done.job)))
        .await
        .expect(200);
    assert!(last.body["lastRunAt"].as_str().is_some());
    t.cleanup().await;
}

//! `app.deployed` and `app.deleted`: auto-created jobs and app removal.

use serde_json::json;
use uuid::Uuid;
use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::process::Server;
use vardo_integration::TestBed;

use super::support::*;

#[tokio::test]
async fn app_deployed_creates_one_auto_job_with_the_seeds_settings_however_often_it_arrives() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    bed.target(None, TargetKind::Local, bed.local_config())
        .await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let slug = format!("org-{}", bed.id);
    let app_id = format!("shop-{}", bed.id);
    let app_name = format!("shop{}", bed.id);
    let event = deployed(
        &slug,
        &app_id,
        &app_name,
        json!([{"name": "data", "persistent": true, "kind": "postgres"},
               {"name": "cache", "persistent": false, "kind": "generic"}]),
    );
    let first = streams.send("app.deployed", &event).await;
    streams.settled(&first).await;

    let jobs = auto_jobs(&bed, &app_id).await;
    assert_eq!(jobs.len(), 1, "one auto job");
    let j = &jobs[0];
    assert_eq!(j.get::<_, String>("name"), format!("Auto: {app_name}"));
    assert_eq!(j.get::<_, String>("schedule"), "0 2 * * *");
    assert_eq!(j.get::<_, String>("timezone"), "UTC");
    assert!(j.get::<_, bool>("enabled"));
    assert_eq!(
        j.get::<_, Option<Uuid>>("target_id"),
        None,
        "follows the resolution order"
    );
    assert!(!j.get::<_, bool>("keep_all"));
    let keep = |c: &str| j.get::<_, Option<i32>>(c);
    assert_eq!(
        [
            keep("keep_last"),
            keep("keep_hourly"),
            keep("keep_daily"),
            keep("keep_weekly"),
            keep("keep_monthly"),
            keep("keep_yearly")
        ],
        [Some(1), None, Some(7), Some(1), Some(1), None]
    );
    assert!(!j.get::<_, bool>("notify_on_success"), "failure only");
    assert!(j.get::<_, bool>("notify_on_failure"));
    assert_eq!(
        j.get::<_, Option<Vec<String>>>("apps"),
        Some(vec![app_id.clone()])
    );
    let app = bed.store.app(&app_id).await.expect("the app is recorded");
    assert_eq!(app.name, app_name);
    assert_eq!(
        app.volumes
            .iter()
            .map(|v| (v.name.as_str(), v.persistent, v.kind))
            .collect::<Vec<_>>(),
        [
            ("cache", false, VolumeKind::Generic),
            ("data", true, VolumeKind::Postgres)
        ]
    );

    // The same event again, twice more: still one job.
    streams.send("app.deployed", &event).await;
    let again = streams.send("app.deployed", &event).await;
    streams.settled(&again).await;
    assert_eq!(auto_jobs(&bed, &app_id).await.len(), 1, "still one job");

    // An app without a persistent volume gets no job.
    let eph = format!("eph-{}", bed.id);
    let last = streams
        .send(
            "app.deployed",
            &deployed(
                &slug,
                &eph,
                &format!("eph{}", bed.id),
                json!([{"name": "tmp", "persistent": false}]),
            ),
        )
        .await;
    streams.settled(&last).await;
    bed.store.app(&eph).await.expect("recorded");
    assert!(
        auto_jobs(&bed, &eph).await.is_empty(),
        "no persistent volume, no job"
    );
    assert_eq!(jobs_in_org(&bed, &slug).await, 1);
    assert!(
        streams.range(&streams.dead).await.is_empty(),
        "no dead letters"
    );
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn no_target_anywhere_means_no_job_until_one_exists() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let slug = format!("org-{}", bed.id);
    let app_id = format!("db-{}", bed.id);
    let event = deployed(
        &slug,
        &app_id,
        &format!("db{}", bed.id),
        json!([{"name": "data"}]),
    );
    let id = streams.send("app.deployed", &event).await;
    streams.settled(&id).await;
    bed.store.app(&app_id).await.expect("the app is recorded");
    assert!(
        auto_jobs(&bed, &app_id).await.is_empty(),
        "no target, no job"
    );

    // An organization target appears; the next deploy creates the job.
    let org = bed
        .store
        .upsert_organization(&slug, None)
        .await
        .expect("org");
    bed.target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let id = streams.send("app.deployed", &event).await;
    streams.settled(&id).await;
    assert_eq!(auto_jobs(&bed, &app_id).await.len(), 1);
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn app_deleted_uncovers_the_app_disables_an_emptied_job_and_keeps_history() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    let org = bed.organization().await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let app_id = format!("gone-{}", bed.id);
    let app_name = format!("gone{}", bed.id);
    let volume = bed.track_volume(&format!("{app_name}-blue_data"));
    bed.docker.create_volume(&volume).await.expect("volume");
    let id = streams
        .send(
            "app.deployed",
            &deployed(&org.slug, &app_id, &app_name, json!([{"name": "data"}])),
        )
        .await;
    streams.settled(&id).await;
    let auto: Uuid = auto_jobs(&bed, &app_id).await[0].get("id");
    let (out, rows) = bed.run_job(auto).await;
    assert!(
        out.status.success(),
        "{}",
        vardo_integration::describe(&out)
    );
    let key = rows[0].storage_path.clone().expect("archived");
    // A second job covers this app and another one.
    let other = bed
        .app(&org, "other", &[("files", VolumeKind::Generic)])
        .await;
    let deployed_app = bed.store.app(&app_id).await.expect("app");
    let shared = bed
        .job(&org, None, &[&deployed_app, &other], Compression::Gzip)
        .await;

    let id = streams
        .send(
            "app.deleted",
            &json!({"orgSlug": org.slug, "appId": app_id}),
        )
        .await;
    streams.settled(&id).await;
    assert!(bed.store.app(&app_id).await.is_err(), "the app is gone");
    let auto_job = bed.store.job(auto).await.expect("the auto job stays");
    assert!(!auto_job.enabled, "a job left with no apps is disabled");
    assert!(bed.store.job_apps(auto).await.expect("apps").is_empty());
    let shared_job = bed.store.job(shared).await.expect("job");
    assert!(shared_job.enabled, "a job with apps left keeps running");
    let left: Vec<String> = bed
        .store
        .job_apps(shared)
        .await
        .expect("apps")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&other.id));
    let row = bed.store.backup(rows[0].id).await.expect("history stays");
    assert_eq!(row.status, Status::Success);
    let config = bed.store.target(target).await.expect("target").config;
    let storage = TargetStorage::open(&config, true).expect("storage");
    assert!(
        storage.stat(&key).await.expect("stat").is_some(),
        "the archive stays"
    );

    // Deleting it again is a no-op, not an error.
    let id = streams
        .send(
            "app.deleted",
            &json!({"orgSlug": org.slug, "appId": app_id}),
        )
        .await;
    streams.settled(&id).await;
    assert!(
        streams.range(&streams.dead).await.is_empty(),
        "no dead letters"
    );
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

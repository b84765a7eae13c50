//! Retention end to end, through the real binary against the real S3 server: runs prune their
//! job's series afterwards (objects deleted, rows `pruned`), series never mix apps, a delete that
//! fails leaves the row `success` for a later `prune --job` to finish, `prune --dry-run` changes
//! nothing, and `retention` plans timestamps read on stdin.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

use uuid::Uuid;
use vardo_actors::model::{
    App, Backup, Compression, Organization, RetentionPolicy, Status, VolumeKind,
};
use vardo_actors::storage::TargetStorage;
use vardo_actors::store::NewJob;
use vardo_integration::{describe, process, volumes, TestBed};

/// Creates the app's blue volume with one small file.
async fn data_volume(bed: &TestBed, app: &App, volume: &str) -> String {
    let name = bed.blue(app, volume);
    bed.docker.create_volume(&name).await.expect("volume");
    volumes::sh(&bed.docker, &name, "echo retained > /volume/file.txt")
        .await
        .expect("populate");
    name
}

async fn job(
    bed: &TestBed,
    org: &Organization,
    target: Uuid,
    apps: &[&App],
    keep_last: u32,
) -> Uuid {
    bed.store
        .insert_job(&NewJob {
            organization_id: org.id,
            name: format!("retention-{}", Uuid::new_v4()),
            schedule: "0 2 * * *".into(),
            timezone: "Europe/Berlin".into(),
            enabled: true,
            target_id: Some(target),
            retention: RetentionPolicy {
                keep_last: Some(keep_last),
                ..Default::default()
            },
            notify_on_success: false,
            notify_on_failure: false,
            compression: Compression::Gzip,
            compression_level: None,
            drill_schedule: None,
            incremental_full_every: None,
            app_ids: apps.iter().map(|a| a.id.clone()).collect(),
        })
        .await
        .expect("job")
}

/// The bucket's objects, read with the bed's own (correct) credentials.
async fn objects(bed: &TestBed) -> BTreeSet<String> {
    let storage = TargetStorage::open(&bed.bucket.config(None), false).expect("storage");
    storage.list("").await.expect("list").into_iter().collect()
}

async fn reread(bed: &TestBed, rows: &[Backup]) -> Vec<Backup> {
    let mut out = Vec::new();
    for r in rows {
        out.push(bed.store.backup(r.id).await.expect("row"));
    }
    out
}

fn paths<'a>(rows: impl IntoIterator<Item = &'a Backup>) -> BTreeSet<String> {
    rows.into_iter()
        .filter_map(|r| r.storage_path.clone())
        .collect()
}

/// Runs the job once and returns its rows (one per volume).
async fn run(bed: &TestBed, job: Uuid) -> Vec<Backup> {
    let (out, rows) = bed.run_job(job).await;
    assert!(!rows.is_empty(), "{}", describe(&out));
    rows
}

#[tokio::test]
async fn keep_last_two_of_four_runs_leaves_two_objects_and_two_pruned_rows() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "keep", &[("data", VolumeKind::Generic)])
        .await;
    data_volume(&bed, &app, "data").await;
    let target = bed
        .target(
            Some(org.id),
            vardo_actors::model::TargetKind::S3,
            bed.bucket.target_json(Some("r")),
        )
        .await;
    let job = job(&bed, &org, target, &[&app], 2).await;

    let mut rows = Vec::new();
    for _ in 0..4 {
        let run = run(&bed, job).await;
        assert_eq!(run[0].status, Status::Success, "{}", run[0].log);
        rows.extend(run);
    }
    let rows = reread(&bed, &rows).await;
    let statuses: Vec<Status> = rows.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Pruned,
            Status::Pruned,
            Status::Success,
            Status::Success
        ],
        "the two oldest are pruned"
    );
    assert_eq!(
        objects(&bed).await,
        paths(&rows[2..]),
        "exactly the two newest objects remain"
    );
    for pruned in &rows[..2] {
        assert!(pruned.log.contains("pruned by retention"), "{}", pruned.log);
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn apps_with_a_volume_of_the_same_name_are_pruned_independently() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let alpha = bed
        .app(&org, "alpha", &[("data", VolumeKind::Generic)])
        .await;
    let beta = bed
        .app(&org, "beta", &[("data", VolumeKind::Generic)])
        .await;
    data_volume(&bed, &alpha, "data").await;
    let beta_volume = data_volume(&bed, &beta, "data").await;
    let target = bed
        .target(
            Some(org.id),
            vardo_actors::model::TargetKind::S3,
            bed.bucket.target_json(None),
        )
        .await;
    let job = job(&bed, &org, target, &[&alpha, &beta], 1).await;
    let of = |rows: &[Backup], app: &App| -> Backup {
        rows.iter()
            .find(|r| r.app_id == app.id)
            .cloned()
            .expect("a row of the app")
    };

    let first = run(&bed, job).await;
    // beta's volume goes away: its second backup fails, so its only backup is the first one.
    volumes::remove(&bed.docker, &beta_volume).await;
    let second = run(&bed, job).await;
    assert_eq!(of(&second, &beta).status, Status::Failed);
    let (a1, b1, a2) = (of(&first, &alpha), of(&first, &beta), of(&second, &alpha));
    let now = reread(&bed, &[a1.clone(), b1.clone(), a2.clone()]).await;
    assert_eq!(
        now.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::Pruned, Status::Success, Status::Success],
        "keepLast 1 per series: alpha's older backup goes, beta's only backup stays"
    );
    assert_eq!(objects(&bed).await, paths([&b1, &a2]));

    data_volume(&bed, &beta, "data").await;
    let third = run(&bed, job).await;
    let (a3, b3) = (of(&third, &alpha), of(&third, &beta));
    let now = reread(&bed, &[a2, b1, a3.clone(), b3.clone()]).await;
    assert_eq!(
        now.iter().map(|r| r.status).collect::<Vec<_>>(),
        [
            Status::Pruned,
            Status::Pruned,
            Status::Success,
            Status::Success
        ]
    );
    assert_eq!(objects(&bed).await, paths([&a3, &b3]));
    bed.cleanup().await;
}

/// A loopback port that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn a_failed_delete_keeps_the_row_and_a_later_prune_finishes_the_work() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "flaky", &[("data", VolumeKind::Generic)])
        .await;
    data_volume(&bed, &app, "data").await;
    let config = bed.bucket.target_json(None);
    let target = bed
        .target(
            Some(org.id),
            vardo_actors::model::TargetKind::S3,
            config.clone(),
        )
        .await;
    // keepAll while the backups are made.
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let mut rows = Vec::new();
    for _ in 0..3 {
        rows.extend(run(&bed, job).await);
    }
    assert_eq!(objects(&bed).await.len(), 3);
    let db = bed.db.client().await.expect("database");
    db.execute(
        "UPDATE backup_job SET keep_all = false, keep_last = 1 WHERE id = $1",
        &[&job],
    )
    .await
    .expect("set keepLast 1");

    // A dry run prints the plan and changes nothing.
    let out = bed.cli(&["prune", "--job", &job.to_string(), "--dry-run"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for (row, word) in rows.iter().zip(["prune", "prune", "keep"]) {
        assert!(
            text.contains(&format!(" {word} {}", row.id)),
            "{word} {}: {text}",
            row.id
        );
    }
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(reread(&bed, &rows)
        .await
        .iter()
        .all(|r| r.status == Status::Success));
    assert_eq!(objects(&bed).await.len(), 3);

    // The target goes down: its endpoint now points at a closed port.
    let endpoint = config["endpoint"].as_str().expect("endpoint").to_owned();
    let set_endpoint = |e: String| {
        let db = &db;
        async move {
            db.execute(
                "UPDATE backup_target SET config = jsonb_set(config, '{endpoint}', to_jsonb($1::text))
                 WHERE id = $2",
                &[&e, &target],
            )
            .await
            .expect("update the target")
        }
    };
    set_endpoint(format!("http://127.0.0.1:{}", closed_port())).await;
    // opendal's retry layer backs off for several seconds before it gives up on the first delete;
    // the second is not attempted once the target has failed like that.
    let out = bed.cli(&["prune", "--job", &job.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let now = reread(&bed, &rows).await;
    assert!(now.iter().all(|r| r.status == Status::Success), "{now:?}");
    for failed in &now[..2] {
        assert!(
            failed.log.contains("retention could not delete"),
            "{}",
            failed.log
        );
    }
    assert_eq!(objects(&bed).await.len(), 3, "nothing was deleted");

    // Back up: the next prune finishes the work.
    set_endpoint(endpoint).await;
    let out = bed.cli(&["prune", "--job", &job.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pruned 2, failed 0"),
        "{}",
        describe(&out)
    );
    let now = reread(&bed, &rows).await;
    assert_eq!(
        now.iter().map(|r| r.status).collect::<Vec<_>>(),
        [Status::Pruned, Status::Pruned, Status::Success]
    );
    assert_eq!(objects(&bed).await, paths(&now[2..]));
    bed.cleanup().await;
}

fn retention_cli(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(process::binary())
        .arg("retention")
        .args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("output")
}

#[test]
fn the_retention_command_plans_stdin_without_any_configuration() {
    let input = "2024-03-31T00:30:00Z\n2024-03-30T23:30:00Z\n2024-03-29T12:00:00Z\n";
    // In Berlin the first two are both March 31st.
    let out = retention_cli(&["--keep-daily", "2", "--timezone", "Europe/Berlin"], input);
    assert!(out.status.success(), "{}", describe(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        plan,
        serde_json::json!({
            "keep": [
                {"time": "2024-03-31T00:30:00Z", "reasons": ["daily"]},
                {"time": "2024-03-29T12:00:00Z", "reasons": ["daily"]},
            ],
            "prune": [{"time": "2024-03-30T23:30:00Z"}],
        })
    );

    let out = retention_cli(&["--keep-last", "1"], "2024-01-01T00:00:00Z\nnot a time\n");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 2"),
        "{}",
        describe(&out)
    );
    let out = retention_cli(&["--keep-last", "-1"], "");
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

//! `vardo-backup status` and `migrate` need only the database: they run with neither Redis nor the
//! secret key set; a command that needs one names the missing setting; `status` prints every job
//! with its last run and exits 1 once an enabled job failed its last run.

use serde_json::Value;
use vardo_actors::model::{Compression, TargetKind, VolumeKind};
use vardo_integration::{describe, process, volumes, TestBed};

/// The bed's environment without Redis and without the secret key.
fn database_only(bed: &TestBed) -> Vec<(String, String)> {
    let mut env = bed.env();
    env.retain(|(k, _)| k != "REDIS_URL" && k != "VARDO_SECRET_KEY");
    env
}

#[tokio::test]
async fn status_and_migrate_need_only_the_database_and_status_exits_1_on_a_failed_job() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let env = database_only(&bed);

    let out = process::run(&["migrate"], &env);
    assert!(out.status.success(), "{}", describe(&out));
    let out = process::run(
        &["backup", "--job", &uuid::Uuid::new_v4().to_string()],
        &env,
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redis_url is not set") && stderr.contains("REDIS_URL"),
        "{stderr}"
    );

    let out = process::run(&["status"], &env);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no jobs");

    // A job whose backup succeeds.
    let app = bed
        .app(&org, "statusok", &[("files", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(&bed.docker, &volume, "echo data > /volume/a")
        .await
        .expect("populate");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let healthy = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    // `backup --json`: one object for scripts, the same exit code.
    let out = bed.cli(&["backup", "--job", &healthy.to_string(), "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let run: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(run["ok"], true, "{run}");
    let row = &run["backups"][0];
    assert_eq!(
        (
            row["status"].as_str(),
            row["kind"].as_str(),
            row["app"].as_str()
        ),
        (Some("success"), Some("full"), Some(app.name.as_str())),
        "{run}"
    );
    assert!(
        row["error"].is_null() && row["storagePath"].is_string(),
        "{run}"
    );
    let backup_id = row["id"].as_str().expect("id").to_owned();
    let out = bed.cli(&["verify", "--backup", &backup_id, "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let verified: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(verified["status"], "success", "{verified}");
    let out = bed.cli(&["restore", "--backup", &backup_id, "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let restored: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(restored["status"], "success", "{restored}");
    assert!(restored["preRestoreBackupId"].is_string(), "{restored}");

    let out = process::run(&["status", "--json"], &env);
    assert!(out.status.success(), "{}", describe(&out));
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let jobs = jobs.as_array().expect("an array");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["jobId"], healthy.to_string().as_str());
    assert_eq!(jobs[0]["organization"], org.slug.as_str());
    assert_eq!(jobs[0]["lastOutcome"], "success");
    assert!(jobs[0]["lastSuccessAt"].is_string(), "{jobs:?}");
    assert!(jobs[0]["nextRunAt"].is_string(), "{jobs:?}");
    assert_eq!(jobs[0]["overdue"], false);

    // A job whose volume does not exist: its run fails, and status says so with exit 1.
    let missing = bed
        .app(&org, "statusbad", &[("files", VolumeKind::Generic)])
        .await;
    let failing = bed
        .job(&org, Some(target), &[&missing], Compression::Gzip)
        .await;
    let out = bed.cli(&["backup", "--job", &failing.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let run: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(run["ok"], false, "{run}");
    assert_eq!(run["backups"][0]["status"], "failed", "{run}");
    assert!(
        run["backups"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{run}"
    );

    let out = process::run(&["status"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ORGANIZATION"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    let failed = lines
        .iter()
        .find(|l| l.contains(" failed "))
        .unwrap_or_else(|| panic!("a failed job in:\n{table}"));
    assert!(failed.contains(&org.slug), "{table}");
    assert!(
        lines.iter().any(|l| l.contains(" success ")),
        "the healthy job too:\n{table}"
    );
    bed.cleanup().await;
}

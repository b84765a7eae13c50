//! The engine's own database: `self_backup` in vardo.yml makes a system job that dumps
//! DATABASE_URL to a system target; `restore-self` replays it into an empty database, on which
//! the engine starts and shows the same jobs and history. Only the system organization can hold
//! such a backup, and no tenant can take its slug.

use serde_json::json;
use uuid::Uuid;
use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_actors::self_backup::{SYSTEM_JOB_ID, SYSTEM_ORG_ID};
use vardo_integration::db::TestDatabase;
use vardo_integration::process::{self, Server};
use vardo_integration::{describe as text, TestBed};

fn printed_id(out: &std::process::Output) -> Uuid {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no row printed: {}", text(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_database_is_backed_up_and_restored_into_a_fresh_one_the_engine_starts_on() {
    let bed = TestBed::new().await;
    // Something to find again: a tenant's job with one backup in its history.
    let org = bed.organization().await;
    let (app, _) = bed
        .app_with_files(&org, "tenant", "echo hi > /volume/a")
        .await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let tenant_backup = rows[0].id;

    let dir = std::path::PathBuf::from(bed.local_dir());
    std::fs::create_dir_all(&dir).expect("local dir");
    let config = dir.join("vardo.yml");
    std::fs::write(
        &config,
        format!(
            "backup:\n  type: local\n  path: {}\nself_backup:\n  schedule: \"0 3 29 2 *\"\n  keep_last: 3\n",
            dir.join("system").display()
        ),
    )
    .expect("config");
    let mut env = bed.env();
    env.push(("VARDO_CONFIG".into(), config.display().to_string()));
    let out = process::run(&["backup", "--job", &SYSTEM_JOB_ID.to_string()], &env);
    assert!(out.status.success(), "{}", text(&out));
    let row = bed.store.backup(printed_id(&out)).await.expect("row");
    assert_eq!(row.status, Status::Success, "{}", row.log);
    assert_eq!(row.organization_id, SYSTEM_ORG_ID);
    assert_eq!(row.volume_kind, VolumeKind::Engine);
    assert!(
        row.log.contains("pg_dump of the engine's own database"),
        "{}",
        row.log
    );
    let key = row.storage_path.clone().expect("key");
    assert!(
        key.starts_with("vardo-system/vardo-engine/database/") && key.ends_with(".sql.gz"),
        "{key}"
    );
    assert!(
        !row.log.contains(&bed.secret_key) && !row.log.contains("password"),
        "{}",
        row.log
    );
    let system_job = bed.store.job(SYSTEM_JOB_ID).await.expect("system job");
    assert!(system_job.enabled && system_job.drill_schedule.is_none());

    // Verified like any backup; never restored into a volume.
    let out = process::run(&["verify", "--backup", &row.id.to_string()], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = process::run(&["restore", "--backup", &row.id.to_string()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("restore-self"), "{}", text(&out));

    // Not into a database that holds tables: the engine's own is refused, and unchanged.
    let out = process::run(
        &[
            "restore-self",
            "--backup",
            &row.id.to_string(),
            "--to",
            &bed.db.url,
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("holds"), "{}", text(&out));

    let fresh = TestDatabase::create().await.expect("fresh database");
    let mut restore_env = env.clone();
    restore_env.push(("VARDO_RESTORE_SELF_TO".into(), fresh.url.clone()));
    let out = process::run(
        &["restore-self", "--backup", &row.id.to_string()],
        &restore_env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replayed and committed"),
        "{}",
        text(&out)
    );

    // The engine starts on the restored database and shows the same jobs and history.
    let admin = format!("admin-{}", bed.id);
    let mut serve_env: Vec<(String, String)> = bed
        .env()
        .into_iter()
        .filter(|(k, _)| k != "DATABASE_URL")
        .collect();
    serve_env.push(("DATABASE_URL".into(), fresh.url.clone()));
    serve_env.push(("VARDO_ADMIN_TOKEN".into(), admin.clone()));
    let server = Server::spawn(&["--role", "web"], &serve_env).expect("engine on the copy");
    let api = vardo_integration::http::Api::new(&server.base_url, Some(&admin));
    let jobs = vardo_integration::eventually(
        std::time::Duration::from_secs(30),
        "the engine on the copy answers",
        || async {
            let r = api
                .get(&format!("/api/v1/organizations/{}/backups/jobs", org.id))
                .await;
            (r.status == 200).then_some(r.body)
        },
    )
    .await;
    let ids: Vec<&str> = jobs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, vec![job.to_string()], "{jobs}");
    let history = api
        .get(&format!("/api/v1/organizations/{}/backups/history", org.id))
        .await
        .expect(200)
        .body;
    let backups: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(backups, vec![tenant_backup.to_string()], "{history}");
    drop(server);
    fresh.drop_database().await.expect("drop the copy");
    bed.cleanup().await;
}

/// The system organization's slug is reserved, and the engine's volume kind is never input: the
/// API refuses both (the deploy pipeline's refusal is a unit test of its parser).
#[tokio::test]
async fn no_tenant_can_take_the_system_organizations_slug() {
    let t = vardo_integration::http::ApiBed::start("web").await;
    let refused = t
        .admin
        .post(
            "/api/v1/organizations",
            &json!({"slug": "vardo-system", "name": "Mine now"}),
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.text);
    assert_eq!(refused.field(), Some("slug"));
    // Nor can an app of a tenant claim a volume of the engine's kind.
    let org = t.org("engine-kind").await;
    let app = org
        .api
        .put(
            &org.path(&format!("/apps/sneaky-{}", t.bed.id)),
            &json!({"name": "sneaky", "volumes": [{"name": "db", "kind": "engine"}]}),
        )
        .await;
    assert!(matches!(app.status, 400 | 422), "{}", app.text);
    // Nor take the engine's app id, nor get a token of the system organization.
    org.api
        .put(
            &org.path("/apps/vardo-engine"),
            &json!({"name": "mine", "volumes": [{"name": "database"}]}),
        )
        .await
        .expect(404);
    t.admin
        .post_empty(&format!("/api/v1/organizations/{SYSTEM_ORG_ID}/tokens"))
        .await
        .expect(409);
    t.cleanup().await;
}

//! Drills: a job's newest backups restored into scratch volumes and containers — never the live
//! ones — and checked; red when a dump does not replay, with a notice; nothing left behind, also
//! after kill -9 of the engine; each scheduled drill performed once across three schedulers.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;
use vardo_actors::model::{
    App, ChannelKind, Compression, Organization, Status, TargetKind, VolumeKind,
};
use vardo_integration::process::Server;
use vardo_integration::{describe as text, eventually, postgres, TestBed};

use crate::notifications::support::{channel, engine_env, one_mail_to};

/// Files a restore must bring back exactly: odd names, a symlink, modes and owners.
const FILL: &str = r#"
mkdir -p /volume/docs/deep "/volume/-dash" && cd /volume
printf 'hello' > docs/a.txt && printf 'x%.0s' $(seq 1 5000) > docs/deep/big
printf 'q' > "docs/\$(touch pwned) 'q' *"
printf 'n' > "$(printf 'new\nline')"
ln -s docs/a.txt link && chmod 0640 docs/a.txt && chmod 0711 docs/deep
chown 1234:5678 docs/deep/big
"#;

async fn set_drill_schedule(bed: &TestBed, job: Uuid, schedule: Option<&str>) {
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup_job SET drill_schedule = $2, schedule = '0 3 29 2 *' WHERE id = $1",
        &[&job, &schedule],
    )
    .await
    .expect("drill schedule");
}

/// The scratch volumes and containers a drill left (by its label).
async fn left_behind(bed: &TestBed, drill: Uuid) -> Vec<String> {
    let (containers, volumes) = bed.docker.list_scratch().await.expect("list scratch");
    containers
        .into_iter()
        .chain(volumes)
        .filter(|i| i.drill == drill.to_string())
        .map(|i| i.id)
        .collect()
}

/// An app with a Postgres volume and a running database holding `items`.
async fn database(bed: &TestBed, org: &Organization, name: &str) -> (App, String) {
    let app = bed.app(org, name, &[("data", VolumeKind::Postgres)]).await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(bed, &volume).await.expect("postgres");
    postgres::psql(
        &bed.docker,
        &pg,
        "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3);",
    )
    .await
    .expect("rows");
    (app, pg)
}

fn drill_id(out: &std::process::Output) -> Uuid {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("drill "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no drill printed: {}", text(out)))
}

#[tokio::test]
async fn a_file_volume_and_a_postgres_volume_drill_green_and_leave_nothing() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (files, _) = bed.app_with_files(&org, "drillfiles", FILL).await;
    let (db, pg) = database(&bed, &org, "drilldb").await;
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&files, &db], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(rows.len(), 2);
    // The live database moves on; the drill must not touch it.
    postgres::psql(&bed.docker, &pg, "INSERT INTO items VALUES (4)")
        .await
        .expect("insert");

    let out = bed.cli(&["drill", "--job", &job.to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let drill = bed.store.drill(drill_id(&out)).await.expect("drill row");
    assert_eq!(drill.status, Status::Success, "{}", drill.log);
    // For scripts: one JSON object, the same exit code, the row it names.
    let out = bed.cli(&["drill", "--job", &job.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let body: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["jobId"], job.to_string().as_str());
    let row: uuid::Uuid = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    assert_eq!(
        bed.store.drill(row).await.expect("drill row").status,
        Status::Success
    );
    assert!(
        drill.log.contains("/files: restored 8 entries")
            && drill.log.contains(
                "names, types, sizes, modes, owners and link targets equal the archive's"
            ),
        "{}",
        drill.log
    );
    assert!(
        drill.log.contains("rows per table: appdb (public.items 3)"),
        "{}",
        drill.log
    );
    assert!(drill.log.contains("drilled 2 volumes"), "{}", drill.log);
    let job_row = bed.store.job(job).await.expect("job");
    assert_eq!(job_row.last_drill_outcome.as_deref(), Some("ok"));
    assert!(job_row.last_drill_at.is_some());
    assert_eq!(left_behind(&bed, drill.id).await, Vec::<String>::new());
    assert_eq!(
        postgres::psql(&bed.docker, &pg, "SELECT count(*) FROM items")
            .await
            .expect("count")
            .trim(),
        "4",
        "the live database is as it was"
    );
    bed.cleanup().await;
}

/// Replaces a backup's object with `sql` (gzip) and makes its row record the new size and sha256:
/// a dump stored whole that does not replay.
async fn store_broken_dump(bed: &TestBed, backup: Uuid, sql: &[u8]) {
    let row = bed.store.backup(backup).await.expect("row");
    let key = row.storage_path.expect("key");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(sql).expect("gzip");
    let body = bytes::Bytes::from(gz.finish().expect("gzip"));
    let storage = vardo_actors::storage::TargetStorage::open(&bed.bucket.config(None), false)
        .expect("storage");
    storage
        .upload(&key, Box::pin(futures::stream::iter([Ok(body.clone())])))
        .await
        .expect("upload");
    let digest = vardo_actors::codec::digest(Box::pin(futures::stream::iter([Ok(body)])))
        .await
        .expect("digest");
    let db = bed.db.client().await.expect("db");
    db.execute(
        "UPDATE backup SET size_bytes = $2, checksum = $3 WHERE id = $1",
        &[
            &backup,
            &i64::try_from(digest.size).expect("size"),
            &format!("sha256:{}", digest.sha256_hex),
        ],
    )
    .await
    .expect("row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_that_replays_with_an_error_drills_red_and_a_notice_arrives() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (db, _pg) = database(&bed, &org, "reddb").await;
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed.job(&org, Some(target), &[&db], Compression::Gzip).await;
    set_drill_schedule(&bed, job, None).await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    store_broken_dump(
        &bed,
        rows[0].id,
        b"CREATE TABLE fine (v int);\nINSERT INTO missing_table VALUES (1);\n",
    )
    .await;
    let recipient = format!("drills-{}@example.com", bed.id);
    channel(&bed, &org, ChannelKind::Email, json!({"to": [recipient]})).await;

    let admin = format!("admin-{}", bed.id);
    let mut env = engine_env(&bed);
    env.push(("VARDO_ADMIN_TOKEN".into(), admin.clone()));
    let server = Server::spawn(&["--role", "all"], &env).expect("engine");
    let api = vardo_integration::http::Api::new(&server.base_url, Some(&admin));
    let accepted = api
        .post_empty(&format!(
            "/api/v1/organizations/{}/backups/jobs/{job}/drill",
            org.id
        ))
        .await
        .expect(202);
    let id: Uuid = accepted.id();
    let path = format!("/api/v1/organizations/{}/backups/drills/{id}", org.id);
    let drill = eventually(Duration::from_secs(120), "the drill's end", || async {
        let d = api.get(&path).await.expect(200).body;
        (d["status"] == "failed" || d["status"] == "success").then_some(d)
    })
    .await;
    assert_eq!(drill["status"], "failed", "{drill}");
    let log = drill["log"].as_str().unwrap_or_default();
    assert!(
        log.contains("the dump did not replay") && log.contains("missing_table"),
        "{log}"
    );
    let mail = one_mail_to(&recipient).await;
    let job_name = bed.store.job(job).await.expect("job").name;
    assert_eq!(mail.subject, format!("Backup drill failed: {job_name}"));
    assert!(mail.text.contains("missing_table"), "{}", mail.text);
    let job_view = api
        .get(&format!(
            "/api/v1/organizations/{}/backups/jobs/{job}",
            org.id
        ))
        .await
        .expect(200)
        .body;
    assert_eq!(job_view["lastDrillOutcome"], "failed", "{job_view}");
    assert!(job_view["drillSchedule"].is_null(), "{job_view}");
    let metrics = api.get("/metrics").await.text;
    assert!(
        metrics.contains(&format!(
            "vardo_backup_drill_failures_total{{job_id=\"{job}\",organization_id=\"{}\"}} 1",
            org.id
        )),
        "{metrics}"
    );
    eventually(Duration::from_secs(20), "nothing left behind", || async {
        left_behind(&bed, id).await.is_empty().then_some(())
    })
    .await;
    drop(server);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_drill_killed_with_its_engine_leaves_nothing_after_a_restart() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (db, _pg) = database(&bed, &org, "killdb").await;
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed.job(&org, Some(target), &[&db], Compression::Gzip).await;
    set_drill_schedule(&bed, job, None).await;
    let (out, _) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let id = bed
        .store
        .insert_drill(org.id, job, None)
        .await
        .expect("drill");

    let mut env = bed.env();
    env.push(("VARDO_RUN_LEASE_SECONDS".into(), "6".into()));
    env.push(("VARDO_HEARTBEAT_SECONDS".into(), "1".into()));
    let engine = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    // Killed once its scratch container exists.
    eventually(
        Duration::from_secs(60),
        "the drill's scratch container",
        || async {
            let (containers, _) = bed.docker.list_scratch().await.ok()?;
            containers
                .iter()
                .any(|c| c.drill == id.to_string())
                .then_some(())
        },
    )
    .await;
    engine.signal("KILL");
    drop(engine);
    assert!(!left_behind(&bed, id).await.is_empty(), "killed mid-drill");

    let engine = Server::spawn(&["--role", "scheduler"], &env).expect("engine again");
    eventually(
        Duration::from_secs(60),
        "the scratch place swept",
        || async { left_behind(&bed, id).await.is_empty().then_some(()) },
    )
    .await;
    let drill = bed.store.drill(id).await.expect("drill");
    assert_eq!(drill.status, Status::Failed, "{}", drill.log);
    assert!(
        drill.log.contains("engine stopped during the drill"),
        "{}",
        drill.log
    );
    drop(engine);
    bed.cleanup().await;
}

#[tokio::test]
async fn three_schedulers_perform_each_due_drill_exactly_once() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, _) = bed
        .app_with_files(&org, "everyminute", "echo hi > /volume/a")
        .await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let (out, _) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    set_drill_schedule(&bed, job, Some("* * * * *")).await;
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::spawn(&["--role", "scheduler"], &bed.env()).expect("engine"))
        .collect();
    let drills = || async {
        let db = bed.db.client().await.expect("db");
        db.query(
            "SELECT slot, status, log FROM drill WHERE job_id = $1 ORDER BY slot",
            &[&job],
        )
        .await
        .expect("drills")
        .iter()
        .map(|r| {
            let slot: DateTime<Utc> = r.get(0);
            (slot, (r.get::<_, String>(1), r.get::<_, String>(2)))
        })
        .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(200), "two finished drills", || async {
        let done = drills()
            .await
            .into_iter()
            .filter(|(_, (status, _))| status == "success" || status == "failed")
            .count();
        (done >= 2).then_some(())
    })
    .await;
    drop(servers);
    let all = drills().await;
    let mut per_slot: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for (slot, (status, log)) in &all {
        *per_slot.entry(*slot).or_default() += 1;
        if status == "success" || status == "failed" {
            assert_eq!(status, "success", "{log}");
            assert_eq!(
                log.matches(" started\n").count(),
                1,
                "performed once: {log}"
            );
        }
    }
    assert!(per_slot.values().all(|n| *n == 1), "{per_slot:?}");
    bed.cleanup().await;
}

/// The drill schedule through the API: weekly unless set, null turns it off, a bad one names its
/// field; another organization can neither drill a job nor read a drill of this one.
#[tokio::test]
async fn drill_settings_and_drills_belong_to_their_organization() {
    let t = vardo_integration::http::ApiBed::start("web").await;
    let a = t.org("drilla").await;
    let b = t.org("drillb").await;
    let created = a
        .api
        .post(
            &a.path("/backups/jobs"),
            &json!({"name": "weekly", "schedule": "0 2 * * *"}),
        )
        .await
        .expect(201);
    assert_eq!(created.body["drillSchedule"], "0 4 * * 0");
    assert!(created.body["lastDrillAt"].is_null() && created.body["lastDrillOutcome"].is_null());
    let job = created.id();
    let off = a
        .api
        .put(
            &a.path(&format!("/backups/jobs/{job}")),
            &json!({"name": "weekly", "schedule": "0 2 * * *", "drillSchedule": null}),
        )
        .await
        .expect(200);
    assert!(off.body["drillSchedule"].is_null(), "{}", off.text);
    for bad in ["every sunday", "61 * * * *", ""] {
        let refused = a
            .api
            .post(
                &a.path("/backups/jobs"),
                &json!({"name": "bad", "schedule": "0 2 * * *", "drillSchedule": bad}),
            )
            .await;
        assert!(
            matches!(refused.status, 400 | 422),
            "{bad:?}: {}",
            refused.text
        );
        assert_eq!(refused.field(), Some("drillSchedule"), "{}", refused.text);
    }
    let drill = a
        .api
        .post_empty(&a.path(&format!("/backups/jobs/{job}/drill")))
        .await
        .expect(202)
        .id();
    // Organization B: the job and the drill do not exist for it, and nothing is queued.
    b.api
        .post_empty(&b.path(&format!("/backups/jobs/{job}/drill")))
        .await
        .expect(404);
    b.api
        .get(&b.path(&format!("/backups/drills/{drill}")))
        .await
        .expect(404);
    b.api
        .get(&a.path(&format!("/backups/drills/{drill}")))
        .await
        .expect(404);
    let mine = a
        .api
        .get(&a.path(&format!("/backups/drills/{drill}")))
        .await
        .expect(200);
    assert_eq!(mine.body["jobId"], job.to_string().as_str());
    let db = t.bed.db.client().await.expect("db");
    let queued: i64 = db
        .query_one("SELECT count(*) FROM drill WHERE job_id = $1", &[&job])
        .await
        .expect("count")
        .get(0);
    assert_eq!(queued, 1);
    t.cleanup().await;
}

/// A volume of the job that has no successful backup fails the drill, named, even when the other
/// volumes drill green.
#[tokio::test]
async fn a_volume_never_backed_up_fails_the_drill() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (files, _) = bed
        .app_with_files(&org, "present", "echo hi > /volume/a")
        .await;
    // Its Docker volume does not exist: every backup of it fails.
    let missing = bed
        .app(&org, "absent", &[("files", VolumeKind::Generic)])
        .await;
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&files, &missing], Compression::Gzip)
        .await;
    let (out, _) = bed.run_job(job).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = bed.cli(&["drill", "--job", &job.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let drill = bed.store.drill(drill_id(&out)).await.expect("drill");
    assert_eq!(drill.status, Status::Failed, "{}", drill.log);
    assert!(
        drill.log.contains(&format!(
            "{}/files: no successful backup to drill",
            missing.name
        )) && drill.log.contains("/files: restored 1 entries"),
        "{}",
        drill.log
    );
    assert_eq!(
        bed.store
            .job(job)
            .await
            .expect("job")
            .last_drill_outcome
            .as_deref(),
        Some("failed")
    );
    bed.cleanup().await;
}

//! The foundation against the real services: the schema, configuration layers, readiness, and the
//! test bed itself (volumes through the helper image, the local Postgres image).

use std::time::Duration;

use vardo_integration::process::{self, Server};
use vardo_integration::{db::TestDatabase, eventually, postgres, volumes, TestBed};

async fn schema_snapshot(db: &TestDatabase) -> Vec<String> {
    let client = db.client().await.expect("db");
    let mut lines = Vec::new();
    for q in [
        "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
         FROM information_schema.columns WHERE table_schema = 'public'",
        "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'",
        "SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    ] {
        for row in client.query(q, &[]).await.expect("catalog") {
            lines.push(row.get::<_, String>(0));
        }
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn migrate_twice_succeeds_and_changes_nothing_the_second_time() {
    let bed = TestBed::new().await;
    // The bed migrated once already; the binary applies it twice more.
    let first = bed.cli(&["migrate"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let after_first = schema_snapshot(&bed.db).await;
    assert!(
        after_first.iter().any(|l| l.starts_with("backup.checksum")),
        "the backup table exists"
    );
    let second = bed.cli(&["migrate"]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(schema_snapshot(&bed.db).await, after_first);
    bed.cleanup().await;
}

/// A schema already applied takes no lock at start-up, so replicas that start beside live
/// traffic cannot deadlock with it; a migration that must apply gives way to a held lock and
/// finishes once the lock is gone.
#[tokio::test]
async fn migrate_takes_no_lock_when_current_and_waits_out_a_held_lock_when_not() {
    let bed = TestBed::new().await;
    let mut holder = bed.db.client().await.expect("client");
    let tx = holder.transaction().await.expect("tx");
    tx.batch_execute("LOCK TABLE backup IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let started = std::time::Instant::now();
    let current = bed.cli(&["migrate"]);
    assert!(
        current.status.success(),
        "{}",
        String::from_utf8_lossy(&current.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a current schema is not applied again (took {:?})",
        started.elapsed()
    );
    tx.rollback().await.expect("rollback");

    // An older engine's schema: the digest differs, so the text is applied again.
    bed.db
        .client()
        .await
        .expect("client")
        .batch_execute("UPDATE schema_digest SET digest = 'older'")
        .await
        .expect("age the digest");
    let tx = holder.transaction().await.expect("tx");
    tx.batch_execute("LOCK TABLE backup IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let env = bed.env();
    let migrating = tokio::task::spawn_blocking(move || process::run(&["migrate"], &env));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!migrating.is_finished(), "the migration waits for the lock");
    tx.rollback().await.expect("release");
    let out = migrating.await.expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest: String = bed
        .db
        .client()
        .await
        .expect("client")
        .query_one("SELECT digest FROM schema_digest", &[])
        .await
        .expect("digest")
        .get(0);
    assert_eq!(
        digest.len(),
        64,
        "the applied schema's sha256 is recorded: {digest}"
    );
    bed.cleanup().await;
}

fn write_config(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("config file");
    path.display().to_string()
}

#[tokio::test]
async fn environment_overrides_the_file_and_unknown_keys_are_named() {
    let bed = TestBed::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let file = write_config(
        &dir,
        "v.yml",
        "listen: 127.0.0.1:9100\nhelper_image: from-file\n",
    );
    let mut env = bed.env();
    env.retain(|(k, _)| k != "VARDO_HELPER_IMAGE");
    env.push(("VARDO_LISTEN".into(), "127.0.0.1:9200".into()));
    let out = process::run(&["--config", &file, "config"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["listen"], "127.0.0.1:9200", "env beats the file");
    assert_eq!(
        shown["helper_image"], "from-file",
        "the file beats the default"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&bed.secret_key),
        "secret printed"
    );

    let bad = write_config(
        &dir,
        "bad.yml",
        "listen: 127.0.0.1:9100\nretention_dayz: 3\n",
    );
    let out = process::run(&["--config", &bad, "config"], &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("retention_dayz"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn the_backup_section_yields_one_system_target_after_two_start_ups() {
    let bed = TestBed::new().await;
    let dir = tempfile::tempdir().expect("dir");
    let cfg = bed.bucket.target_json(None);
    let file = write_config(
        &dir,
        "v.yml",
        &format!(
            "backup:\n  type: s3\n  bucket: {}\n  region: {}\n  access_key: {}\n  secret_key: {}\n  endpoint: {}\n",
            cfg["bucket"].as_str().unwrap_or_default(),
            cfg["region"].as_str().unwrap_or_default(),
            cfg["accessKeyId"].as_str().unwrap_or_default(),
            cfg["secretAccessKey"].as_str().unwrap_or_default(),
            cfg["endpoint"].as_str().unwrap_or_default(),
        ),
    );
    for _ in 0..2 {
        let server = Server::spawn(&["--role", "web"], &{
            let mut env = bed.env();
            env.push(("VARDO_CONFIG".into(), file.clone()));
            env
        })
        .expect("serve");
        let store = &bed.store;
        eventually(
            Duration::from_secs(30),
            "the system target",
            || async move {
                let rows = store.list_target_rows(None).await.ok()?;
                (rows.len() == 1).then_some(())
            },
        )
        .await;
        drop(server);
    }
    let rows = bed.store.list_target_rows(None).await.expect("targets");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "System default");
    assert_eq!(rows[0].organization_id, None);
    let sealed = rows[0].sealed_config.to_string();
    assert!(
        !sealed.contains(cfg["secretAccessKey"].as_str().unwrap_or("?")),
        "secret stored in clear"
    );
    let target = bed.store.target(rows[0].id).await.expect("decrypts");
    assert_eq!(target.kind, vardo_actors::model::TargetKind::S3);
    bed.cleanup().await;
}

async fn readyz(server: &Server) -> (u16, serde_json::Value) {
    let resp = reqwest::get(format!("{}/readyz", server.base_url))
        .await
        .expect("http");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

#[tokio::test]
async fn readyz_is_200_with_every_service_and_503_naming_the_one_that_is_down() {
    let bed = TestBed::new().await;
    let server = Server::spawn(&[], &bed.env()).expect("serve");
    let health = reqwest::get(format!("{}/healthz", server.base_url))
        .await
        .expect("http");
    assert_eq!(health.status().as_u16(), 200);
    // Ready once start-up has applied the schema; until then 503 naming only `schema`.
    let body = eventually(Duration::from_secs(30), "readyz 200", || async {
        let (status, body) = readyz(&server).await;
        if status == 503 {
            assert_eq!(body["failing"], serde_json::json!(["schema"]), "{body}");
        }
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(body["failing"], serde_json::json!([]));
    assert_eq!(body["checks"]["schema"], "ok", "{body}");
    drop(server);

    for (var, value, name) in [
        ("REDIS_URL", "redis://127.0.0.1:1", "redis"),
        (
            "DATABASE_URL",
            "postgres://vardo:vardo@127.0.0.1:1/nothing",
            "postgres",
        ),
        ("DOCKER_HOST", "tcp://127.0.0.1:1", "docker"),
    ] {
        let mut env = bed.env();
        env.retain(|(k, _)| k != var);
        env.push((var.into(), value.into()));
        let server = Server::spawn(&[], &env).expect("serve starts even with a dependency down");
        // Start-up applies the schema meanwhile (when Postgres answers); then only `name` fails.
        let (status, body) = eventually(Duration::from_secs(30), "the schema applied", || async {
            let (status, body) = readyz(&server).await;
            (body["checks"]["schema"] == "ok").then_some((status, body))
        })
        .await;
        assert_eq!(status, 503, "{name}: {body}");
        assert_eq!(body["failing"], serde_json::json!([name]), "{body}");
        assert!(
            body["checks"][name].as_str().is_some_and(|s| s != "ok"),
            "{body}"
        );
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn a_volume_written_through_the_helper_image_reads_back_identically() {
    let bed = TestBed::new().await;
    let volume = bed.track_volume(&format!("smoke{}-blue_files", bed.id));
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        "mkdir -p /volume/x/y && printf 'hello\\n' > /volume/x/y/f && chmod 640 /volume/x/y/f",
    )
    .await
    .expect("write");
    let first = volumes::listing(&bed.docker, &volume)
        .await
        .expect("listing");
    assert!(first.contains("./x/y/f file 640 0:0 6"), "{first}");
    assert_eq!(
        volumes::listing(&bed.docker, &volume).await.expect("again"),
        first
    );
    let content = volumes::sh(&bed.docker, &volume, "cat /volume/x/y/f")
        .await
        .expect("read");
    assert_eq!(content, "hello\n");
    bed.cleanup().await;
}

#[tokio::test]
async fn the_local_postgres_image_keeps_its_data_in_its_volume_across_a_restart() {
    let bed = TestBed::new().await;
    let volume = bed.track_volume(&format!("pgsmoke{}-blue_data", bed.id));
    bed.docker.create_volume(&volume).await.expect("volume");
    let id = postgres::start(&bed, &volume).await.expect("container");
    postgres::psql(
        &bed.docker,
        &id,
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('persisted')",
    )
    .await
    .expect("write");
    bed.docker
        .raw()
        .restart_container(
            &id,
            None::<bollard::query_parameters::RestartContainerOptions>,
        )
        .await
        .expect("restart");
    postgres::wait_ready(&bed.docker, &id).await;
    let v = postgres::psql(&bed.docker, &id, "SELECT v FROM t")
        .await
        .expect("read");
    assert_eq!(v.trim(), "persisted");
    bed.cleanup().await;
}

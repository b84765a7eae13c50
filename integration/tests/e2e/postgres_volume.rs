//! A live Postgres volume is backed up with pg_dump in its container and restored through psql.

use vardo_actors::model::{Compression, Status, TargetKind, VolumeKind};
use vardo_integration::{describe as text, postgres, TestBed};

#[tokio::test]
async fn a_dropped_table_comes_back_from_a_dump() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed.app(&org, "db", &[("data", VolumeKind::Postgres)]).await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(&bed, &volume)
        .await
        .expect("postgres container");
    let sql = |q: &'static str| {
        let (docker, pg) = (&bed.docker, pg.clone());
        async move { postgres::psql(docker, &pg, q).await.expect(q) }
    };
    sql("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1,'one'),(2,'two'),(3,'drei ü');").await;
    sql("CREATE TABLE other (v text); INSERT INTO other VALUES ('kept');").await;

    for compression in [Compression::Gzip, Compression::Zstd] {
        let target = bed
            .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
            .await;
        let job = bed.job(&org, Some(target), &[&app], compression).await;
        let out = bed.cli(&["backup", "--job", &job.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        let id = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let row = bed
            .store
            .backup(id.parse().expect("backup id"))
            .await
            .expect("row");
        assert_eq!(row.status, Status::Success, "{}", row.log);
        let ext = format!(".sql.{}", compression.suffix());
        assert!(
            row.storage_path
                .as_deref()
                .is_some_and(|p| p.ends_with(&ext)),
            "{:?}",
            row.storage_path
        );
        assert!(row.log.contains("pg_dump"), "{}", row.log);

        sql("DROP TABLE items; INSERT INTO other VALUES ('junk');").await;
        let out = bed.cli(&["restore", "--backup", &id]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(
            sql("SELECT string_agg(name, ',' ORDER BY id) FROM items")
                .await
                .trim(),
            "one,two,drei ü"
        );
        assert_eq!(
            sql("SELECT string_agg(v, ',') FROM other").await.trim(),
            "kept"
        );
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn a_failing_pg_dump_fails_the_row_with_its_stderr_and_stores_nothing() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "dbx", &[("data", VolumeKind::Postgres)])
        .await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(&bed, &volume)
        .await
        .expect("postgres container");
    // pg_dump connects as POSTGRES_USER to POSTGRES_DB; without that database it must fail.
    postgres::psql(&bed.docker, &pg, "SELECT 1")
        .await
        .expect("up");
    let out = bed
        .docker
        .exec_write(
            &pg,
            [
                "psql",
                "-U",
                postgres::USER,
                "-d",
                "postgres",
                "-c",
                "DROP DATABASE appdb WITH (FORCE)",
            ]
            .map(str::to_owned)
            .to_vec(),
            vec![],
            Box::pin(futures::stream::empty()),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", out.stderr);
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let out = bed.cli(&["backup", "--job", &job.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let row = bed
        .store
        .backup(id.parse().expect("backup id"))
        .await
        .expect("row");
    assert_eq!(row.status, Status::Failed);
    assert!(
        row.log.contains("pg_dump exited with status") && row.log.contains("appdb"),
        "{}",
        row.log
    );
    let storage = vardo_actors::storage::TargetStorage::open(&bed.bucket.config(None), false)
        .expect("storage");
    assert!(
        storage.list("").await.expect("list").is_empty(),
        "a partial dump was left behind"
    );
    bed.cleanup().await;
}

/// A dump covers the container's `POSTGRES_DB` only: the row's log names what it leaves out, so
/// that a `success` never hides another database of the cluster.
#[tokio::test]
async fn the_log_names_the_databases_a_dump_leaves_out() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "dbs", &[("data", VolumeKind::Postgres)])
        .await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(&bed, &volume)
        .await
        .expect("postgres container");
    postgres::psql(&bed.docker, &pg, "CREATE DATABASE second_app")
        .await
        .expect("a second database");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let log = &rows[0].log;
    assert!(log.contains("pg_dump of database "), "{log}");
    assert!(
        log.contains("second_app") && log.contains("are not in this backup"),
        "the log names the database the dump leaves out: {log}"
    );
    bed.cleanup().await;
}

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

/// A `pg_dump` that fails in the middle of the cluster's dump (one database's table cannot be read)
/// fails the row with pg_dump's own words and leaves nothing on the target.
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
    postgres::psql(&bed.docker, &pg, "CREATE DATABASE zz_broken")
        .await
        .expect("database");
    let file = postgres::psql_in(
        &bed.docker,
        &pg,
        "zz_broken",
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('x'); SELECT pg_relation_filepath('t');",
    )
    .await
    .expect("table");
    // The table's file becomes unreadable: its dump fails after appdb's went through.
    let out = bed
        .docker
        .exec_write(
            &pg,
            vec![
                "chmod".to_owned(),
                "000".to_owned(),
                format!(
                    "/var/lib/postgresql/data/{}",
                    file.lines().last().unwrap_or_default()
                ),
            ],
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
        row.log
            .contains("pg_dump of database zz_broken exited with status")
            && row.log.contains("ermission denied"),
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

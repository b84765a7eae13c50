//! A Postgres volume's backup covers its cluster: every database that is not a template and the
//! roles. A restore brings each database back in its own transaction; the dump replays by hand
//! with gzip and psql alone.

use futures::StreamExt as _;
use vardo_actors::model::{App, Compression, Organization, Status, TargetKind, VolumeKind};
use vardo_actors::stream::ByteStream;
use vardo_integration::{describe as text, postgres, TestBed};

/// A database name a shell, a conninfo string and a psql meta-command would each misread.
const ODD: &str = "odd \"name\" $(touch x) 'q' =1";

async fn sql_in(bed: &TestBed, pg: &str, db: &str, q: &str) -> String {
    postgres::psql_in(&bed.docker, pg, db, q)
        .await
        .unwrap_or_else(|e| panic!("{db}: {q}: {e}"))
        .trim()
        .to_owned()
}

/// An app whose cluster holds `appdb`, a database with an odd name owned by a login role, and
/// `zz_last`; the container's id.
async fn cluster(bed: &TestBed, org: &Organization, name: &str) -> (App, String) {
    let app = bed.app(org, name, &[("data", VolumeKind::Postgres)]).await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(bed, &volume)
        .await
        .expect("postgres container");
    let q = |db: &'static str, q: String| {
        let pg = pg.clone();
        async move { sql_in(bed, &pg, db, &q).await }
    };
    q("appdb", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1,'one'),(2,'two');".into()).await;
    q(
        "appdb",
        "CREATE ROLE reader LOGIN PASSWORD 'reader-pw'".into(),
    )
    .await;
    let odd = ODD.replace('"', "\"\"");
    q("appdb", format!("CREATE DATABASE \"{odd}\" OWNER reader")).await;
    sql_in(
        bed,
        &pg,
        ODD,
        "SET ROLE reader; CREATE TABLE notes (v text); INSERT INTO notes VALUES ('a'),('b'),('c');",
    )
    .await;
    q("appdb", "CREATE DATABASE zz_last".into()).await;
    q(
        "zz_last",
        "CREATE TABLE t (v int); INSERT INTO t VALUES (7);".into(),
    )
    .await;
    (app, pg)
}

async fn backup(bed: &TestBed, org: &Organization, app: &App) -> vardo_actors::model::Backup {
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed.job(org, Some(target), &[app], Compression::Gzip).await;
    let (out, mut rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = rows.remove(0);
    assert_eq!(row.status, Status::Success, "{}", row.log);
    row
}

fn restore(bed: &TestBed, backup: uuid::Uuid) -> (std::process::Output, uuid::Uuid) {
    let out = bed.cli(&["restore", "--backup", &backup.to_string()]);
    let id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("restore "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no restore row printed: {}", text(&out)));
    (out, id)
}

/// Both databases and the role come back after they were dropped, and the logs say exactly which
/// databases were dumped and restored.
#[tokio::test]
async fn dropped_databases_and_a_dropped_role_come_back() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, pg) = cluster(&bed, &org, "cluster").await;
    let row = backup(&bed, &org, &app).await;
    assert!(
        row.log.contains(&format!(
            "the cluster's roles and its 4 databases (appdb, {ODD}, postgres, zz_last)"
        )),
        "{}",
        row.log
    );

    sql_in(
        &bed,
        &pg,
        "appdb",
        &format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            ODD.replace('"', "\"\"")
        ),
    )
    .await;
    sql_in(&bed, &pg, "appdb", "DROP DATABASE zz_last WITH (FORCE)").await;
    sql_in(&bed, &pg, "appdb", "DROP ROLE reader").await;
    sql_in(&bed, &pg, "appdb", "DROP TABLE items").await;

    let (out, restore_id) = restore(&bed, row.id);
    assert!(out.status.success(), "{}", text(&out));
    let restored = bed.store.restore(restore_id).await.expect("restore row");
    assert_eq!(restored.status, Status::Success, "{}", restored.log);
    assert!(
        restored.log.contains(&format!(
            "restored and committed: roles, database appdb, database {ODD}, database postgres, database zz_last"
        )),
        "{}",
        restored.log
    );
    assert_eq!(
        sql_in(
            &bed,
            &pg,
            "appdb",
            "SELECT string_agg(name, ',' ORDER BY id) FROM items"
        )
        .await,
        "one,two"
    );
    assert_eq!(
        sql_in(&bed, &pg, ODD, "SELECT string_agg(v, ',' ORDER BY v) || ' ' || pg_get_userbyid(relowner) FROM notes, pg_class WHERE relname = 'notes' GROUP BY relowner").await,
        "a,b,c reader"
    );
    assert_eq!(sql_in(&bed, &pg, "zz_last", "SELECT v FROM t").await, "7");
    assert_eq!(
        sql_in(&bed, &pg, "appdb", "SELECT rolcanlogin::text || ' ' || (rolpassword LIKE 'SCRAM-SHA-256$%')::text FROM pg_authid WHERE rolname = 'reader'").await,
        "true true",
        "the role comes back with its login and password"
    );
    bed.cleanup().await;
}

/// A database whose replay fails is left exactly as it was, the ones before it are committed, and
/// the restore fails saying which is which.
#[tokio::test]
async fn a_database_that_fails_to_replay_is_left_as_it_was() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, pg) = cluster(&bed, &org, "partial").await;
    let row = backup(&bed, &org, &app).await;

    sql_in(&bed, &pg, "appdb", "DELETE FROM items").await;
    // A view on the dumped table: the dump's `DROP TABLE` of it fails, so zz_last cannot be
    // replayed (its psql stops at the error).
    sql_in(
        &bed,
        &pg,
        "zz_last",
        "INSERT INTO t VALUES (8); CREATE VIEW later AS SELECT v FROM t;",
    )
    .await;

    let (out, restore_id) = restore(&bed, row.id);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let restored = bed.store.restore(restore_id).await.expect("restore row");
    assert_eq!(restored.status, Status::Failed, "{}", restored.log);
    assert!(
        restored
            .log
            .contains("database zz_last: psql exited with status")
            && restored.log.contains(&format!(
                "(committed before it: roles, database appdb, database {ODD}, database postgres)"
            )),
        "{}",
        restored.log
    );
    assert_eq!(
        sql_in(&bed, &pg, "appdb", "SELECT count(*) FROM items").await,
        "2",
        "appdb was committed"
    );
    assert_eq!(
        sql_in(
            &bed,
            &pg,
            "zz_last",
            "SELECT string_agg(v::text, ',' ORDER BY v) FROM t"
        )
        .await,
        "7,8",
        "zz_last is as it was before the restore"
    );
    bed.cleanup().await;
}

/// The stored `.sql.gz` restores into an empty server with gzip and psql, as the README says.
#[tokio::test]
async fn the_dump_replays_by_hand_with_gzip_and_psql() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (app, _pg) = cluster(&bed, &org, "byhand").await;
    let row = backup(&bed, &org, &app).await;
    let key = row.storage_path.clone().expect("stored");
    let storage = vardo_actors::storage::TargetStorage::open(&bed.bucket.config(None), false)
        .expect("storage");
    let archive: ByteStream = storage.download(&key).await.expect("download");

    let fresh = bed
        .app(&org, "fresh", &[("data", VolumeKind::Postgres)])
        .await;
    let volume = bed.blue(&fresh, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let empty = postgres::start(&bed, &volume).await.expect("fresh server");
    let script = format!(
        "gzip -dc | psql -X -v ON_ERROR_STOP=1 --quiet -U {} -d postgres",
        postgres::USER
    );
    let out = bed
        .docker
        .exec_write(
            &empty,
            ["sh", "-c", &script].map(str::to_owned).to_vec(),
            vec![],
            archive.boxed(),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", out.stderr);
    assert_eq!(
        sql_in(
            &bed,
            &empty,
            "appdb",
            "SELECT string_agg(name, ',' ORDER BY id) FROM items"
        )
        .await,
        "one,two"
    );
    assert_eq!(
        sql_in(&bed, &empty, ODD, "SELECT count(*) FROM notes").await,
        "3"
    );
    assert_eq!(
        sql_in(&bed, &empty, "zz_last", "SELECT v FROM t").await,
        "7"
    );
    assert_eq!(
        sql_in(
            &bed,
            &empty,
            "appdb",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'reader'"
        )
        .await,
        "1"
    );
    bed.cleanup().await;
}

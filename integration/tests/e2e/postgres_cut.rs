//! A Postgres restore commits the dump whole or not at all, and runs nothing it has not verified:
//! a download cut in the middle of the verification or of the replay, an archive replaced in the
//! bucket before the restore, or one replaced between verification and replay, leaves every table
//! exactly as it was before the restore; the same backup restores fine once the archive arrives
//! whole.

use uuid::Uuid;
use vardo_actors::model::{
    App, Compression, Organization, Restore, Status, TargetKind, VolumeKind,
};
use vardo_integration::fault_proxy::{Fault, FaultProxy};
use vardo_integration::{describe as text, postgres, TestBed};

/// The tables the test looks at; `small` is dropped after the backup, so "absent" is a state too.
const TABLES: [&str; 2] = ["big", "small"];

/// One database container on an app's Postgres volume.
struct Db<'a> {
    bed: &'a TestBed,
    pg: String,
}

impl Db<'_> {
    async fn sql(&self, q: &str) -> String {
        postgres::psql(&self.bed.docker, &self.pg, q)
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .trim()
            .to_owned()
    }

    /// Every table's row count and the md5 of its rows in a fixed order, or that it is absent.
    async fn state(&self) -> Vec<String> {
        let mut state = Vec::new();
        for t in TABLES {
            let exists = self
                .sql(&format!("SELECT to_regclass('public.{t}') IS NOT NULL"))
                .await;
            let line = if exists == "t" {
                self.sql(&format!(
                    "SELECT '{t}: ' || count(*) || ' rows, md5 ' || \
                     coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text COLLATE \"C\")), '-') \
                     FROM {t} x"
                ))
                .await
            } else {
                format!("{t}: absent")
            };
            state.push(line);
        }
        state
    }
}

impl Db<'_> {
    /// Waits until no other session is connected: the restore's psql has ended, so its
    /// transaction is gone rather than left open holding the tables' locks.
    async fn no_session_left(&self) {
        vardo_integration::eventually(
            std::time::Duration::from_secs(30),
            "the restore's psql session to end",
            || async {
                let n = self
                    .sql(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    )
                    .await;
                (n == "0").then_some(())
            },
        )
        .await;
    }
}

/// An app with a Postgres volume and a running database container holding `big` (200,000 rows of
/// md5 text, a dump of several MiB even compressed) and `small`.
async fn database<'a>(bed: &'a TestBed, org: &Organization, name: &str) -> (Db<'a>, App) {
    let app = bed.app(org, name, &[("data", VolumeKind::Postgres)]).await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(bed, &volume)
        .await
        .expect("postgres container");
    let db = Db { bed, pg };
    // One text column: any prefix of one of its COPY lines is still a valid row (see below).
    db.sql(
        "CREATE TABLE big (v text); \
         INSERT INTO big SELECT md5(i::text) FROM generate_series(1, 200000) i;",
    )
    .await;
    db.sql(
        "CREATE TABLE small (id int PRIMARY KEY, name text); \
         INSERT INTO small VALUES (1, 'one'), (2, 'two'), (3, 'drei ü');",
    )
    .await;
    (db, app)
}

/// Backs the app up through `endpoint`; the backup's id and its archive's size.
async fn backup(
    bed: &TestBed,
    org: &Organization,
    app: &App,
    endpoint: &str,
    compression: Compression,
) -> (Uuid, u64) {
    let mut config = bed.bucket.target_json(None);
    config["endpoint"] = endpoint.into();
    let target = bed.target(Some(org.id), TargetKind::S3, config).await;
    let job = bed.job(org, Some(target), &[app], compression).await;
    let (out, rows) = bed.run_job(job).await;
    assert!(out.status.success(), "{}", text(&out));
    let row = rows.first().expect("one backup row");
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let size = u64::try_from(row.size_bytes.expect("size recorded")).expect("size");
    assert!(size > 1 << 20, "the archive is only {size} bytes");
    (row.id, size)
}

/// Runs `vardo-backup restore --backup`; its exit code, stdout, and the restore row it printed.
async fn restore(bed: &TestBed, backup: Uuid) -> (Option<i32>, String, Restore) {
    let out = bed.cli(&["restore", "--backup", &backup.to_string()]);
    restore_outcome(bed, out).await
}

/// The exit code, stdout and restore row of a finished `vardo-backup restore`.
async fn restore_outcome(
    bed: &TestBed,
    out: std::process::Output,
) -> (Option<i32>, String, Restore) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("restore "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no restore row printed: {}", text(&out)));
    let row = bed.store.restore(id).await.expect("restore row");
    (out.status.code(), stdout, row)
}

/// First the verification's download is cut at half the archive: the restore is refused before
/// psql starts. Then the replay's download is cut at half the archive (the budget lets the whole
/// verification through first).
/// Why this test can tell a committed-only-whole replay from psql's `--single-transaction`:
/// the replay is cut inside `big`'s COPY data. The decompressor
/// then fails and psql's stdin is closed. psql takes that end of input in the middle of a COPY as
/// the end of the COPY data — the rows so far, and the truncated last line, which for a single
/// text column of hex is a valid row — so psql itself sees no error. With `--single-transaction`
/// it would then COMMIT: `small` dropped and recreated empty, `big` half loaded. Only a `COMMIT`
/// that the engine sends after the archive was verified keeps the tables as they were.
/// The cut takes the network away for good (`CutAllAfter`): opendal retries a failed read with a
/// ranged GET on a new connection, which a per-connection cut would let through.
async fn a_cut_download_commits_nothing(compression: Compression) {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (db, app) = database(&bed, &org, &format!("cut{}", compression.suffix())).await;
    let (backup_id, size) = backup(&bed, &org, &app, &proxy.url(), compression).await;
    let backed_up = db.state().await;

    db.sql("DELETE FROM big WHERE v < '8'; INSERT INTO big VALUES ('written after the backup');")
        .await;
    db.sql("DROP TABLE small;").await;
    let before = db.state().await;
    assert_ne!(before, backed_up);
    assert_eq!(before[1], "small: absent");

    proxy.set(Fault::CutAllAfter(size / 2));
    let (code, stdout, row) = restore(&bed, backup_id).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.contains("could not be downloaded to verify it")
            && row
                .log
                .contains("psql was not started, nothing was changed")
            && !row.log.contains("replaying the dump with psql"),
        "the cut must fall inside the verification: {}",
        row.log
    );
    assert_eq!(
        db.state().await,
        before,
        "a cut verification changed the database"
    );

    proxy.set(Fault::CutAllAfter(size + size / 2));
    let sent_before = proxy.bytes_to_client();
    let (code, stdout, row) = restore(&bed, backup_id).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.contains("replaying the dump with psql"),
        "the cut must fall inside the replay: {}",
        row.log
    );
    assert!(
        row.log.contains("the archive did not arrive whole")
            && row.log.contains("never COMMIT")
            && row.log.contains("rolled back"),
        "{}",
        row.log
    );
    assert!(
        proxy.bytes_to_client() - sent_before <= size + size / 2,
        "more than the budget went through"
    );
    assert_eq!(
        db.state().await,
        before,
        "a cut restore changed the database"
    );

    proxy.set(Fault::PassThrough);
    let (code, stdout, row) = restore(&bed, backup_id).await;
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(row.status, Status::Success, "{}", row.log);
    assert_eq!(db.state().await, backed_up);
    drop(proxy);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_gzip_dump_cut_mid_download_leaves_every_table_as_it_was() {
    a_cut_download_commits_nothing(Compression::Gzip).await;
}

#[tokio::test]
async fn a_zstd_dump_cut_mid_download_leaves_every_table_as_it_was() {
    a_cut_download_commits_nothing(Compression::Zstd).await;
}

/// A gzip archive of exactly `size` bytes whose SQL would break out of the engine's transaction and
/// destroy a table: `COMMIT;` (from there on psql runs in autocommit) and `DROP TABLE small;`,
/// comments, then junk that is not gzip at all.
fn crafted_archive(size: u64) -> bytes::Bytes {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut sql = b"COMMIT;\nDROP TABLE small;\n".to_vec();
    // Several of the decompressor's 1 MiB hand-overs (compressed to a few KiB), so that a replay
    // that let these bytes through would have psql run the DROP before the junk is decoded.
    sql.extend(b"-- not the dump that was backed up\n".repeat(100_000));
    std::io::Write::write_all(&mut gz, &sql).expect("gzip");
    let mut evil = gz.finish().expect("gzip");
    let size = usize::try_from(size).expect("size");
    assert!(evil.len() < size, "the crafted archive is too big");
    let junk = (0..size - evil.len()).map(|i| (i % 251) as u8);
    evil.extend(junk);
    bytes::Bytes::from(evil)
}

/// Puts `archive` in place of the backup's object, straight into the bucket.
async fn replace_archive(bed: &TestBed, backup_id: Uuid, archive: bytes::Bytes) {
    let key = bed
        .store
        .backup(backup_id)
        .await
        .expect("row")
        .storage_path
        .expect("stored");
    let body: vardo_actors::stream::ByteStream = Box::pin(futures::stream::iter([Ok(archive)]));
    bed.bucket
        .storage()
        .upload(&key, body)
        .await
        .expect("overwrite the archive");
}

/// An archive replaced in the bucket before the restore, by one of the same size: the
/// verification's SHA-256 refuses it before psql starts, so none of its SQL runs — had psql read
/// it, its `COMMIT; DROP TABLE small;` would have dropped `small` outside any transaction.
#[tokio::test]
async fn a_replaced_dump_is_refused_before_psql_starts() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let (db, app) = database(&bed, &org, "swapped").await;
    let endpoint = vardo_integration::setting("VARDO_TEST_S3_ENDPOINT");
    let (backup_id, size) = backup(&bed, &org, &app, &endpoint, Compression::Gzip).await;
    let backed_up = db.state().await;
    db.sql("INSERT INTO big VALUES ('written after the backup');")
        .await;
    let before = db.state().await;

    replace_archive(&bed, backup_id, crafted_archive(size)).await;
    let (code, stdout, row) = restore(&bed, backup_id).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.contains(&format!(
            "checksum mismatch: the archive has {size} bytes with sha256:"
        )) && row
            .log
            .contains("psql was not started, nothing was changed")
            && !row.log.contains("replaying the dump with psql"),
        "{}",
        row.log
    );
    let after = db.state().await;
    assert_eq!(after, before, "the replaced dump changed the database");
    assert!(
        !after[1].ends_with("absent"),
        "small was dropped: {after:?}"
    );
    db.no_session_left().await;
    assert_ne!(after, backed_up);
    bed.cleanup().await;
}

/// The archive replaced after it was verified and before the replay reads it: the proxy holds the
/// replay's GET (the restore's second) while the test puts the crafted archive in the bucket, then
/// lets it go. The S3 server of the test bed (s3s-fs 0.14) ignores `If-Match` on GET and serves the
/// new object; the replay's block check refuses its first block before a byte of it reaches psql,
/// which ends without COMMIT. (A server that honours `If-Match` refuses the GET itself with 412.)
/// Either way `small` is still there: psql never read the crafted `COMMIT; DROP TABLE small;`.
#[tokio::test]
async fn a_dump_replaced_between_verification_and_replay_never_reaches_psql() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (db, app) = database(&bed, &org, "raced").await;
    let (backup_id, size) = backup(&bed, &org, &app, &proxy.url(), Compression::Gzip).await;
    db.sql("INSERT INTO big VALUES ('written after the backup');")
        .await;
    let before = db.state().await;

    proxy.set(Fault::HoldRequest {
        starting_with: "GET ",
        nth: 2,
    });
    let (env, backup_arg) = (bed.env(), backup_id.to_string());
    let run = tokio::task::spawn_blocking(move || {
        vardo_integration::process::run(&["restore", "--backup", &backup_arg], &env)
    });
    vardo_integration::eventually(
        std::time::Duration::from_secs(60),
        "the replay's download to be held",
        || async { proxy.holding().then_some(()) },
    )
    .await;
    replace_archive(&bed, backup_id, crafted_archive(size)).await;
    proxy.release();
    let out = run.await.expect("the restore ran");
    let (code, stdout, row) = restore_outcome(&bed, out).await;

    let after = db.state().await;
    assert_eq!(after, before, "the replaced dump changed the database");
    assert!(
        !after[1].ends_with("absent"),
        "small was dropped: {after:?}"
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log
            .contains("the archive matches the backup's size and SHA-256")
            && row
                .log
                .contains("the archive changed between verification and replay")
            && (row.log.contains("never COMMIT") || row.log.contains("psql was not started")),
        "{}",
        row.log
    );
    db.no_session_left().await;
    drop(proxy);
    bed.cleanup().await;
}

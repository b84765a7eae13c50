//! No run hangs: a backup or restore that moves no byte for `VARDO_STALL_SECONDS` fails with
//! "stalled: no progress for N s in <stage>", leaves nothing behind (no object, no open multipart
//! upload, no pg_dump session, the volume as it was), and the next run, once the fault is gone,
//! succeeds. Faults: pg_dump blocked by an ACCESS EXCLUSIVE lock; S3 that accepts connections and
//! never answers (the fault proxy's `Stall`), during a backup and during a restore's download.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use uuid::Uuid;
use vardo_actors::model::{Compression, Restore, Status, TargetKind, VolumeKind};
use vardo_integration::fault_proxy::{Fault, FaultProxy};
use vardo_integration::{
    describe, eventually, postgres, process, setting, trees, volumes, TestBed,
};

const STALL: (&str, &str) = ("VARDO_STALL_SECONDS", "3");
/// What "within a bounded time" means here: the deadline, plus the engine's start and cleanup.
const BOUND: Duration = Duration::from_secs(60);

/// Multipart uploads s3s-fs still holds open in `bucket` (it keeps a metadata file per upload
/// from its creation until it is completed or aborted).
fn open_multipart_uploads(bucket: &str) -> Vec<String> {
    let marker = format!(".bucket-{}.object-", URL_SAFE_NO_PAD.encode(bucket));
    std::fs::read_dir(setting("VARDO_TEST_S3_ROOT"))
        .expect("the s3s-fs data folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&marker) && name.contains(".upload-"))
        .collect()
}

async fn assert_bucket_empty(bed: &TestBed) {
    let objects = bed
        .bucket
        .storage()
        .list("")
        .await
        .expect("list the bucket");
    assert!(
        objects.is_empty(),
        "objects left in the bucket: {objects:?}"
    );
    let uploads = open_multipart_uploads(&bed.bucket.name);
    assert!(uploads.is_empty(), "open multipart uploads: {uploads:?}");
}

/// Runs `job` with the short stall deadline and expects what a user sees of a stall in `stage`:
/// exit 1, its row `failed` saying so, well within [`BOUND`].
async fn stalled_run(bed: &TestBed, job: Uuid, stage: &str) {
    let started = Instant::now();
    let (out, rows) = bed.run_job_with(job, &[STALL]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let row = rows.first().expect("one backup row");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log
            .contains(&format!("failed: stalled: no progress for 3 s in {stage}")),
        "{}",
        row.log
    );
    assert!(took < BOUND, "the stalled run took {took:?}");
}

/// Runs `vardo-backup restore --backup` with the short stall deadline; its exit code and row.
/// Without a safety backup: these tests stall the restore's own download, and the safety
/// backup's upload would meet the stalled target first (its stalls are a backup's, tested above).
async fn restore(bed: &TestBed, backup: Uuid) -> (std::process::Output, Restore) {
    let mut env = bed.env();
    env.push((STALL.0.to_owned(), STALL.1.to_owned()));
    let out = process::run(
        &[
            "restore",
            "--backup",
            &backup.to_string(),
            "--no-safety-backup",
        ],
        &env,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("restore "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no restore row printed: {}", describe(&out)));
    let row = bed.store.restore(id).await.expect("restore row");
    (out, row)
}

/// A psql session in the database container that holds `LOCK TABLE t IN ACCESS EXCLUSIVE MODE`
/// in an open transaction (as a migration would) until released: its stdin stays open until then.
struct HeldLock {
    release: Option<tokio::sync::oneshot::Sender<()>>,
    session: tokio::task::JoinHandle<anyhow::Result<String>>,
}

impl HeldLock {
    async fn take(bed: &TestBed, pg: &str) -> Self {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let lock = futures::stream::once(async {
            Ok(Bytes::from_static(
                b"BEGIN;\nLOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n",
            ))
        });
        let commit = futures::stream::once(async move {
            let _ = released.await;
            Ok(Bytes::from_static(b"COMMIT;\n"))
        });
        let input: vardo_actors::stream::ByteStream =
            Box::pin(futures::StreamExt::chain(lock, commit));
        let cmd = [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            postgres::USER,
            "-d",
            postgres::DB,
        ]
        .map(str::to_owned)
        .to_vec();
        let (docker, id) = (bed.docker.clone(), pg.to_owned());
        let session = tokio::spawn(async move {
            let out = docker.exec_write(&id, cmd, vec![], input).await?;
            anyhow::ensure!(
                out.exit_code == 0,
                "the locking psql failed: {}",
                out.stderr
            );
            Ok(out.stdout)
        });
        eventually(
            Duration::from_secs(30),
            "the table lock to be held",
            || async {
                let granted = postgres::psql(
                    &bed.docker,
                    pg,
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                 WHERE c.relname = 't' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                )
                .await
                .ok()?;
                (granted.trim() == "1").then_some(())
            },
        )
        .await;
        Self {
            release: Some(release),
            session,
        }
    }

    async fn release(mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        let out = (&mut self.session).await.expect("the locking session");
        out.expect("the locking session commits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_blocked_by_a_lock_fails_as_stalled_and_the_next_run_succeeds() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let app = bed
        .app(&org, "locked", &[("data", VolumeKind::Postgres)])
        .await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    let pg = postgres::start(&bed, &volume).await.expect("postgres");
    postgres::psql(
        &bed.docker,
        &pg,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;",
    )
    .await
    .expect("table t");
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;

    let lock = HeldLock::take(&bed, &pg).await;
    stalled_run(&bed, job, "pg_dump").await;
    assert_bucket_empty(&bed).await;
    // The dump does not wait behind the lock for ever: its session was ended.
    eventually(
        Duration::from_secs(10),
        "the pg_dump session to end",
        || async {
            let sessions = postgres::psql(
                &bed.docker,
                &pg,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'vardo-backup%'",
            )
            .await
            .ok()?;
            (sessions.trim() == "0").then_some(())
        },
    )
    .await;

    lock.release().await;
    let (out, rows) = bed.run_job_with(job, &[STALL]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let row = rows.first().expect("one backup row");
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let key = row.storage_path.clone().expect("stored");
    assert!(bed
        .bucket
        .storage()
        .stat(&key)
        .await
        .expect("stat")
        .is_some());
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_target_that_stops_answering_fails_the_backup_as_stalled() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (app, _volume) = bed
        .app_with_files(
            &org,
            "s3stall",
            "head -c 4194304 /dev/urandom > /volume/noise.bin && echo hello > /volume/hello.txt",
        )
        .await;
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;

    proxy.set(Fault::Stall);
    stalled_run(&bed, job, "upload").await;
    assert!(proxy.accepted() > 0, "the upload never reached the proxy");
    assert_bucket_empty(&bed).await;

    proxy.set(Fault::PassThrough);
    let (out, rows) = bed.run_job_with(job, &[STALL]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let row = rows.first().expect("one backup row");
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let key = row.storage_path.clone().expect("stored");
    assert!(bed
        .bucket
        .storage()
        .stat(&key)
        .await
        .expect("stat")
        .is_some());
    assert!(open_multipart_uploads(&bed.bucket.name).is_empty());
    drop(proxy);
    bed.cleanup().await;
}

/// S3 stops answering in the middle of a multipart upload (its first part stored, its second
/// never answered): the run fails as stalled, and the upload it had opened is aborted — the
/// server holds neither an object nor an open upload afterwards.
#[tokio::test]
async fn an_s3_upload_stalled_after_its_first_part_is_aborted_and_leaves_nothing_open() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let app = bed
        .app(&org, "partstall", &[("files", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "files");
    bed.docker.create_volume(&volume).await.expect("volume");
    // 20 MiB of random bytes: three 8 MiB parts.
    volumes::sh(
        &bed.docker,
        &volume,
        "head -c 20m /dev/urandom > /volume/noise.bin",
    )
    .await
    .expect("fill the volume");
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;

    // The second part's PUT is held, never released: S3 "accepts and never answers".
    proxy.set(Fault::HoldRequest {
        starting_with: "PUT ",
        nth: 2,
    });
    let mut env = bed.env();
    env.push((STALL.0.to_owned(), STALL.1.to_owned()));
    let mut child = vardo_integration::process::start(&["backup", "--job", &job.to_string()], &env);
    let held = &proxy;
    vardo_integration::eventually(Duration::from_secs(60), "the second part is held", || {
        let holding = held.holding();
        async move { holding.then_some(()) }
    })
    .await;
    assert_eq!(
        bed.bucket.open_multipart_uploads().len(),
        1,
        "the upload is open while its second part hangs"
    );
    let status = super::faults::exit_of(&mut child, BOUND).await;
    assert_eq!(status.code(), Some(1), "a stalled run exits 1");
    let rows = bed
        .db
        .client()
        .await
        .expect("db")
        .query("SELECT id FROM backup WHERE job_id = $1", &[&job])
        .await
        .expect("rows");
    let row = bed.store.backup(rows[0].get(0)).await.expect("row");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.contains("stalled: no progress for 3 s in upload"),
        "{}",
        row.log
    );
    assert!(row.storage_path.is_none());
    // The abort is sent as the upload is dropped; the process waits for it before it exits.
    assert_eq!(
        bed.bucket.open_multipart_uploads(),
        Vec::<String>::new(),
        "the stalled upload was aborted"
    );
    assert_bucket_empty(&bed).await;
    drop(proxy);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_download_stalls_fails_and_leaves_the_volume_unchanged() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (app, volume) = bed
        .app_with_files(
            &org,
            "dlstall",
            "mkdir -p /volume/a && echo backed-up > /volume/a/one.txt \
         && head -c 2097152 /dev/urandom > /volume/blob.bin",
        )
        .await;
    let archived = trees::read(&bed.docker, &volume).await;
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (out, rows) = bed.run_job_with(job, &[STALL]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let backup = rows.first().expect("one backup row").id;

    volumes::sh(
        &bed.docker,
        &volume,
        "echo changed-after > /volume/a/one.txt && echo new > /volume/two.txt",
    )
    .await
    .expect("change the volume");
    let before = trees::read(&bed.docker, &volume).await;
    assert_ne!(before, archived);

    proxy.set(Fault::Stall);
    let started = Instant::now();
    let (out, row) = restore(&bed, backup).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.contains("stalled: no progress for 3 s in download"),
        "{}",
        row.log
    );
    assert!(took < BOUND, "the stalled restore took {took:?}");
    assert_eq!(
        trees::read(&bed.docker, &volume).await,
        before,
        "a stalled restore changed the volume"
    );

    proxy.set(Fault::PassThrough);
    let (out, row) = restore(&bed, backup).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(row.status, Status::Success, "{}", row.log);
    assert_eq!(trees::read(&bed.docker, &volume).await, archived);
    drop(proxy);
    bed.cleanup().await;
}

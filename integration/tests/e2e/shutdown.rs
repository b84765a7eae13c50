//! Graceful shutdown and the helper-container sweep, with the real binary: SIGTERM during a long
//! S3 upload (throttled by the fault proxy) lets the run finish within the grace period, or fails
//! it "engine shutting down" with its multipart upload aborted, no object and no helper left, and
//! exits 0 either way. A helper left by an engine killed with -9 is removed by the next engine,
//! while the helper of another live engine (and one no engine of this database made) stays.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use uuid::Uuid;
use vardo_actors::model::{Backup, Compression, Organization, RunReason, Status, VolumeKind};
use vardo_integration::fault_proxy::{Fault, FaultProxy};
use vardo_integration::process::{self, Server};
use vardo_integration::{eventually, setting, volumes, TestBed};

const WAIT: Duration = Duration::from_secs(60);

/// Each response from S3 crawls at 80–160 bytes a second: every multipart request (create, each
/// 8 MiB part, complete) takes seconds, so a few dozen MiB take tens of seconds to upload.
fn crawl(bytes: usize) -> Fault {
    Fault::Slow {
        bytes,
        every: Duration::from_millis(100),
    }
}

/// A job backing up one app whose volume holds `mib` MiB of random (incompressible) bytes, to
/// this bed's bucket through `proxy`. Returns the job and the Docker volume.
async fn big_job(
    bed: &TestBed,
    org: &Organization,
    proxy: &FaultProxy,
    name: &str,
    mib: u32,
) -> (Uuid, String) {
    let app = bed.app(org, name, &[("data", VolumeKind::Generic)]).await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        &format!("dd if=/dev/urandom of=/volume/blob bs=1048576 count={mib} 2>/dev/null"),
    )
    .await
    .expect("fill the volume");
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed.job(org, Some(target), &[&app], Compression::Gzip).await;
    (job, volume)
}

/// The helper containers (labelled `vardo-backup=helper`) that mount `volume`, each with the
/// engine instance that labelled it.
async fn helpers_on(bed: &TestBed, volume: &str) -> Vec<(String, Option<String>)> {
    let filters = HashMap::from([
        ("label".to_owned(), vec!["vardo-backup=helper".to_owned()]),
        ("volume".to_owned(), vec![volume.to_owned()]),
    ]);
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    bed.docker
        .raw()
        .list_containers(Some(options))
        .await
        .expect("docker ps")
        .into_iter()
        .filter_map(|c| {
            let instance = c
                .labels
                .as_ref()
                .and_then(|l| l.get("vardo-backup.instance"))
                .cloned();
            Some((c.id?, instance))
        })
        .collect()
}

/// The multipart uploads open on `bucket`: s3s-fs keeps one metadata file per upload in its data
/// folder from CreateMultipartUpload until the upload is completed or aborted.
fn open_uploads(bucket: &str) -> Vec<String> {
    let marker = format!(".bucket-{}.object-", URL_SAFE_NO_PAD.encode(bucket));
    let root = PathBuf::from(setting("VARDO_TEST_S3_ROOT"));
    std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read the s3s-fs data folder {}: {e}", root.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&marker) && name.contains(".upload-"))
        .collect()
}

/// Every backup row of `job`.
async fn job_rows(bed: &TestBed, job: Uuid) -> Vec<Backup> {
    let client = bed.db.client().await.expect("database");
    let ids = client
        .query("SELECT id FROM backup WHERE job_id = $1", &[&job])
        .await
        .expect("query");
    let mut rows = Vec::new();
    for id in ids {
        rows.push(bed.store.backup(id.get(0)).await.expect("row"));
    }
    rows
}

async fn run_rows(bed: &TestBed, run_id: Uuid) -> Vec<Backup> {
    bed.store.run_backups(run_id).await.expect("rows")
}

/// Waits until run `run_id`'s row is `running` with its multipart upload open on the bucket.
async fn uploading(bed: &TestBed, run_id: Uuid) -> Backup {
    eventually(WAIT, "the run's multipart upload under way", || async {
        let rows = run_rows(bed, run_id).await;
        let row = rows.into_iter().next()?;
        (row.status == Status::Running && !open_uploads(&bed.bucket.name).is_empty()).then_some(row)
    })
    .await
}

fn engine_env(bed: &TestBed, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = bed.env();
    for (k, v) in extra {
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_backup_finish_within_the_grace_and_exits_0() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (job, volume) = big_job(&bed, &org, &proxy, "finish", 24).await;
    proxy.set(crawl(16));
    let env = engine_env(&bed, &[("VARDO_SHUTDOWN_GRACE_SECONDS", "120")]);
    let mut server = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let run_id = bed
        .store
        .request_run(job, RunReason::Manual, None)
        .await
        .expect("request");
    uploading(&bed, run_id).await;

    server.signal("TERM");
    // Asked for after the signal: a draining engine claims nothing.
    let late = bed
        .store
        .request_run(job, RunReason::Manual, None)
        .await
        .expect("request");
    let status = server.wait_exit(WAIT * 2).await.expect("the engine exits");
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");

    let rows = run_rows(&bed, run_id).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let key = row.storage_path.clone().expect("stored");
    let stored = bed.bucket.storage().stat(&key).await.expect("stat");
    assert_eq!(
        stored.map(|s| s as i64),
        row.size_bytes,
        "the whole object is in the bucket"
    );
    assert!(open_uploads(&bed.bucket.name).is_empty());
    assert!(helpers_on(&bed, &volume).await.is_empty(), "helper left");
    assert!(
        run_rows(&bed, late).await.is_empty(),
        "a request made during the shutdown started a run"
    );
    drop(proxy);
    bed.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_fails_the_run_aborts_its_upload_and_exits_0() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (job, volume) = big_job(&bed, &org, &proxy, "cut", 48).await;
    proxy.set(crawl(32));
    let env = engine_env(&bed, &[("VARDO_SHUTDOWN_GRACE_SECONDS", "1")]);
    let mut server = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let run_id = bed
        .store
        .request_run(job, RunReason::Manual, None)
        .await
        .expect("request");
    uploading(&bed, run_id).await;
    assert!(
        !helpers_on(&bed, &volume).await.is_empty(),
        "no helper seen"
    );

    let signalled = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the engine exits within seconds");
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "took {:?}",
        signalled.elapsed()
    );

    let rows = run_rows(&bed, run_id).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(row.log.contains("engine shutting down"), "{}", row.log);
    assert!(row.finished_at.is_some());
    assert_eq!(
        open_uploads(&bed.bucket.name),
        Vec::<String>::new(),
        "a multipart upload was left open"
    );
    assert_eq!(
        bed.bucket.storage().list("").await.expect("list"),
        Vec::<String>::new(),
        "a partial object was left"
    );
    assert!(helpers_on(&bed, &volume).await.is_empty(), "helper left");
    drop(proxy);
    bed.cleanup().await;
}

/// Polls a command's process until it exits.
async fn exited(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    eventually(limit, "the command's exit", || {
        let status = child.try_wait().expect("try_wait");
        async move { status }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_engine_removes_a_killed_engines_helper_and_no_live_engines() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    let proxy = FaultProxy::to_s3().expect("fault proxy");
    let (killed_job, killed_volume) = big_job(&bed, &org, &proxy, "killed", 24).await;
    let (live_job, live_volume) = big_job(&bed, &org, &proxy, "live", 40).await;
    // A helper container that no engine of this database made (another deployment's, say).
    let foreign_volume = bed.track_volume(&format!("foreign-{}", bed.id));
    bed.docker
        .create_volume(&foreign_volume)
        .await
        .expect("volume");
    let foreign = bed
        .docker
        .start_helper(&foreign_volume, true)
        .await
        .expect("helper");
    bed.track_container(foreign.id());
    proxy.set(crawl(8));
    // Short leases, so that the killed engine counts as gone within seconds.
    let env = engine_env(
        &bed,
        &[
            ("VARDO_RUN_LEASE_SECONDS", "4"),
            ("VARDO_HEARTBEAT_SECONDS", "1"),
        ],
    );

    let mut killed = process::start(&["backup", "--job", &killed_job.to_string()], &env);
    let killed_helper = eventually(WAIT, "the killed engine's helper", || async {
        helpers_on(&bed, &killed_volume).await.into_iter().next()
    })
    .await;
    assert!(killed_helper.1.is_some(), "helpers carry their instance");
    killed.kill().expect("kill -9");
    killed.wait().expect("reaped");

    let mut live = process::start(&["backup", "--job", &live_job.to_string()], &env);
    let live_helper = eventually(WAIT, "the live engine's helper", || async {
        helpers_on(&bed, &live_volume).await.into_iter().next()
    })
    .await;

    let next = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    eventually(WAIT, "the killed engine's helper removed", || async {
        helpers_on(&bed, &killed_volume)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(
        helpers_on(&bed, &live_volume).await,
        vec![live_helper.clone()],
        "the live engine's helper was touched"
    );
    assert_eq!(
        helpers_on(&bed, &foreign_volume).await.len(),
        1,
        "a helper no engine of this database made was touched"
    );

    let status = exited(&mut live, WAIT * 2).await;
    assert_eq!(status.code(), Some(0), "the live engine's backup failed");
    let live_rows = job_rows(&bed, live_job).await;
    assert!(
        !live_rows.is_empty() && live_rows.iter().all(|r| r.status == Status::Success),
        "{live_rows:?}"
    );
    let killed_rows = eventually(WAIT, "the killed engine's row failed", || async {
        let rows = job_rows(&bed, killed_job).await;
        rows.iter()
            .all(|r| r.status == Status::Failed)
            .then_some(rows)
    })
    .await;
    assert!(
        !killed_rows.is_empty()
            && killed_rows
                .iter()
                .all(|r| r.status == Status::Failed && r.log.contains("engine stopped")),
        "{killed_rows:?}"
    );
    foreign.remove().await.expect("remove the foreign helper");
    drop(next);
    drop(proxy);
    bed.cleanup().await;
}

//! The fault suite, storage side: the S3 connection cut mid-upload, S3 answering 503 for a while,
//! the SFTP server's connection cut mid-upload, the local target's disk full. Each asserts what a
//! user sees: the row's status and reason, the objects (and open multipart uploads) in the
//! target, and a next run that works once the fault is gone.

use vardo_actors::model::{App, Backup, Compression, Status, TargetKind, VolumeKind};
use vardo_integration::fault_proxy::{Fault, FaultProxy};
use vardo_integration::{describe, volumes, TestBed};

/// An app whose volume holds `mib` MiB of random bytes (they do not compress: every MiB is sent).
pub(crate) async fn app_with_data(
    bed: &TestBed,
    mib: u32,
) -> (vardo_actors::model::Organization, App) {
    let org = bed.organization().await;
    let app = bed
        .app(&org, "faulty", &[("data", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &bed.docker,
        &volume,
        &format!("head -c {}m /dev/urandom > /volume/random.bin", mib),
    )
    .await
    .expect("populate");
    (org, app)
}

async fn run(bed: &TestBed, job: uuid::Uuid) -> Backup {
    let (out, rows) = bed.run_job(job).await;
    assert_eq!(rows.len(), 1, "{}", describe(&out));
    let row = rows[0].clone();
    assert_eq!(
        out.status.success(),
        row.status == Status::Success,
        "the exit code tells the row's truth: {}",
        describe(&out)
    );
    row
}

pub(crate) async fn objects(bed: &TestBed) -> Vec<String> {
    bed.bucket.storage().list("").await.expect("list")
}

#[tokio::test]
async fn s3_cut_mid_upload_fails_the_row_and_leaves_no_object_and_no_open_upload() {
    let bed = TestBed::new().await;
    let (org, app) = app_with_data(&bed, 40).await;
    let proxy = FaultProxy::to_s3().expect("proxy");
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;

    // Two parts and a half get through, then the network is gone for good.
    proxy.set(Fault::CutAllUploadsAfter(20 * 1024 * 1024));
    let row = run(&bed, job).await;
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.storage_path.is_none() && row.checksum.is_none(),
        "{row:?}"
    );
    assert!(objects(&bed).await.is_empty(), "no partial object");
    // The abort could not reach the server either; what the server holds is an open upload the
    // engine could not abort — say so if it is there, and check it is the only trace.
    let open = bed.bucket.open_multipart_uploads();
    assert!(
        open.len() <= 1,
        "at most the one upload whose abort was cut: {open:?}"
    );

    proxy.set(Fault::PassThrough);
    let row = run(&bed, job).await;
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let stored = bed
        .bucket
        .storage()
        .stat(row.storage_path.as_deref().expect("key"))
        .await;
    assert_eq!(stored.expect("stat"), row.size_bytes.map(|s| s as u64));
    bed.cleanup().await;
}

#[tokio::test]
async fn s3_unavailable_for_a_while_succeeds_after_retries_with_the_whole_object() {
    let bed = TestBed::new().await;
    let (org, app) = app_with_data(&bed, 20).await;
    let proxy = FaultProxy::to_s3().expect("proxy");
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;

    proxy.set(Fault::HttpStatus {
        status: 503,
        times: 2,
    });
    let row = run(&bed, job).await;
    assert_eq!(row.status, Status::Success, "{}", row.log);
    assert!(proxy.accepted() > 2, "the engine retried past the 503s");
    let key = row.storage_path.clone().expect("key");
    let stored = bed.bucket.storage().stat(&key).await.expect("stat");
    assert_eq!(stored, row.size_bytes.map(|s| s as u64), "the whole object");
    let digest =
        vardo_actors::codec::digest(bed.bucket.storage().download(&key).await.expect("get"))
            .await
            .expect("digest");
    assert_eq!(Some(format!("sha256:{}", digest.sha256_hex)), row.checksum);
    assert!(bed.bucket.open_multipart_uploads().is_empty());

    // Unavailable for longer than the retries last: failed, nothing stored.
    proxy.set(Fault::HttpStatus {
        status: 503,
        times: 1000,
    });
    let row = run(&bed, job).await;
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.contains("503") || row.log.to_lowercase().contains("unavailable"),
        "{}",
        row.log
    );
    assert_eq!(
        objects(&bed).await,
        vec![key],
        "only the first run's object"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn the_sftp_connection_cut_mid_upload_fails_the_row_and_leaves_no_partial_file() {
    let bed = TestBed::new().await;
    let (org, app) = app_with_data(&bed, 30).await;
    let mut config = bed.ssh_config();
    let port = config["port"].as_u64().expect("port") as u16;
    let proxy =
        FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port))).expect("proxy");
    config["port"] = proxy.addr().port().into();
    let target = bed.target(Some(org.id), TargetKind::Ssh, config).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let folder = std::path::PathBuf::from(vardo_integration::setting("VARDO_TEST_SSH_ROOT"))
        .join(&bed.scratch);

    // The SSH handshake and 10 MiB get through; then the server is gone.
    proxy.set(Fault::CutAllUploadsAfter(10 * 1024 * 1024));
    let row = run(&bed, job).await;
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    // The engine could not reach the server to remove what it wrote: at most a `.partial` file,
    // never a file at an archive's key.
    let files = walk(&folder);
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().ends_with(".partial")),
        "only a partial file, clearly named, on the SFTP server: {files:?}"
    );

    proxy.set(Fault::PassThrough);
    let row = run(&bed, job).await;
    assert_eq!(row.status, Status::Success, "{}", row.log);
    let files = walk(&folder);
    assert_eq!(
        files.len(),
        1,
        "the next run swept the partial file: {files:?}"
    );
    let key = row.storage_path.clone().expect("key");
    assert!(files[0].to_string_lossy().ends_with(&key), "{files:?}");
    bed.cleanup().await;
}

/// Every file below `root` (none if it does not exist).
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_full_local_disk_fails_the_row_with_the_reason_and_leaves_no_partial_file() {
    let bed = TestBed::new().await;
    let (org, app) = app_with_data(&bed, 24).await;
    // A 16 MiB tmpfs as the local target's folder: the 24 MiB archive cannot fit.
    let mount = std::path::PathBuf::from(bed.local_dir());
    std::fs::create_dir_all(&mount).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&mount)
        .output()
        .expect("mount runs");
    assert!(
        mounted.status.success(),
        "mount a tmpfs: {}",
        describe(&mounted)
    );
    let target = bed
        .target(Some(org.id), TargetKind::Local, bed.local_config())
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;

    let row = run(&bed, job).await;
    let files = walk(&mount);
    let _ = std::process::Command::new("umount").arg(&mount).output();
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(
        row.log.to_lowercase().contains("no space")
            || row.log.contains("StorageFull")
            || row.log.to_lowercase().contains("space"),
        "the reason names the full disk: {}",
        row.log
    );
    assert!(files.is_empty(), "no partial file: {files:?}");
    bed.cleanup().await;
}

#[tokio::test]
async fn redis_gone_while_a_backup_holds_the_volume_lock_stops_the_backup() {
    let bed = TestBed::new().await;
    let (org, app) = app_with_data(&bed, 20).await;
    let proxy = FaultProxy::to_s3().expect("proxy");
    let target = bed.s3_target_at(org.id, &proxy.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let mut redis = vardo_integration::redis::PrivateRedis::start();
    let env = env_with(&bed, "REDIS_URL", redis.url());

    // The first part's upload waits at the proxy while Redis goes away.
    let mut child = backup_held_at_first_part(&proxy, job, &env).await;
    redis.stop();
    let status = exit_of(&mut child, std::time::Duration::from_secs(60)).await;
    proxy.release();
    assert_eq!(status.code(), Some(1));
    let db = bed.db.client().await.expect("db");
    let row = db
        .query_one("SELECT id FROM backup WHERE job_id = $1", &[&job])
        .await
        .expect("row");
    let row = bed.store.backup(row.get(0)).await.expect("backup");
    assert_eq!(row.status, Status::Failed, "{}", row.log);
    assert!(row.log.contains("was lost"), "{}", row.log);
    assert!(row.storage_path.is_none());
    assert!(objects(&bed).await.is_empty(), "nothing stored");

    redis.resume();
    proxy.set(Fault::PassThrough);
    let out = vardo_integration::process::run(&["backup", "--job", &job.to_string()], &env);
    assert!(out.status.success(), "{}", describe(&out));
    bed.cleanup().await;
}

#[tokio::test]
async fn postgres_restarted_during_a_run_never_leaves_a_row_running_or_lying() {
    let bed = TestBed::new().await;
    // Postgres "restarts" mid-upload and new sessions are refused until the run has ended.
    let PostgresGone {
        pg,
        job,
        env,
        mut child,
        admin,
        _s3,
    } = postgres_gone_mid_upload(&bed, 20).await;
    let status = exit_of(&mut child, std::time::Duration::from_secs(120)).await;
    pg.set(Fault::PassThrough);

    // Whatever the engine could not record, a live engine's janitor settles after the lease.
    let _engine =
        vardo_integration::process::Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let row: Backup = vardo_integration::eventually(
        std::time::Duration::from_secs(60),
        "the row settles",
        || {
            let admin = &admin;
            let store = &bed.store;
            async move {
                let id: uuid::Uuid = admin
                    .query_one("SELECT id FROM backup WHERE job_id = $1", &[&job])
                    .await
                    .ok()?
                    .get(0);
                let row = store.backup(id).await.ok()?;
                matches!(row.status, Status::Success | Status::Failed).then_some(row)
            }
        },
    )
    .await;
    eprintln!(
        "postgres restarted mid-run: exit {:?}, row {}",
        status.code(),
        row.status.as_str()
    );
    match row.status {
        Status::Success => {
            let key = row.storage_path.clone().expect("key");
            let stored = bed.bucket.storage().stat(&key).await.expect("stat");
            assert_eq!(
                stored,
                row.size_bytes.map(|s| s as u64),
                "success means the whole object"
            );
        }
        _ => assert!(
            !status.success(),
            "a run whose row failed does not exit 0: {}",
            row.log
        ),
    }
    bed.cleanup().await;
}

/// A backup held at its first part through an S3 proxy, with Postgres gone from under it: every
/// session of the bed's database ended, new ones refused at `pg`, and the part let go.
pub(crate) struct PostgresGone {
    pub pg: FaultProxy,
    pub job: uuid::Uuid,
    pub env: Vec<(String, String)>,
    pub child: std::process::Child,
    pub admin: tokio_postgres::Client,
    pub _s3: FaultProxy,
}

/// An app whose volume holds `mib` MiB, a job to S3, and its backup with Postgres gone mid-upload.
pub(crate) async fn postgres_gone_mid_upload(bed: &TestBed, mib: u32) -> PostgresGone {
    let (org, app) = app_with_data(bed, mib).await;
    let s3 = FaultProxy::to_s3().expect("proxy");
    let target = bed.s3_target_at(org.id, &s3.url()).await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Zstd)
        .await;
    let (pg, url) = postgres_behind_proxy(bed);
    let env = env_with(bed, "DATABASE_URL", url);
    let child = backup_held_at_first_part(&s3, job, &env).await;
    pg.set(Fault::Refuse);
    let admin = bed.db.client().await.expect("db");
    end_sessions(&admin).await;
    s3.release();
    PostgresGone {
        pg,
        job,
        env,
        child,
        admin,
        _s3: s3,
    }
}

/// A proxy in front of the Postgres server, and the bed's database URL through it: the engine
/// reaches Postgres through it, so that a test can take the database away.
pub(crate) fn postgres_behind_proxy(bed: &TestBed) -> (FaultProxy, String) {
    let server = vardo_integration::setting("VARDO_TEST_PG_URL");
    let host_port = server
        .rsplit_once('@')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(hp, _)| hp.to_owned())
        .expect("host:port in VARDO_TEST_PG_URL");
    let pg_addr: std::net::SocketAddr = host_port.parse().expect("a loopback address");
    let pg = FaultProxy::start(pg_addr).expect("pg proxy");
    let url = bed.db.url.replace(&host_port, &pg.addr().to_string());
    assert_ne!(
        url, bed.db.url,
        "the engine's DATABASE_URL goes through the proxy"
    );
    (pg, url)
}

/// Ends every session of the bed's database but the caller's (Postgres "restarting").
pub(crate) async fn end_sessions(admin: &tokio_postgres::Client) {
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("end the engine's sessions");
}

/// Environment for an engine with `key` set to `value` instead of the bed's, and a 4 s lease (the
/// volume lock lives 4 s without renewal).
pub(crate) fn env_with(bed: &TestBed, key: &str, value: String) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = bed.env().into_iter().filter(|(k, _)| k != key).collect();
    env.push((key.to_owned(), value));
    env.push(("VARDO_RUN_LEASE_SECONDS".into(), "4".into()));
    env.push(("VARDO_HEARTBEAT_SECONDS".into(), "1".into()));
    env
}

/// Starts `backup --job` with its first part's upload held at `proxy`; returns once it waits.
pub(crate) async fn backup_held_at_first_part(
    proxy: &FaultProxy,
    job: uuid::Uuid,
    env: &[(String, String)],
) -> std::process::Child {
    proxy.set(Fault::HoldRequest {
        starting_with: "PUT ",
        nth: 1,
    });
    let child = vardo_integration::process::start(&["backup", "--job", &job.to_string()], env);
    vardo_integration::eventually(
        std::time::Duration::from_secs(60),
        "the upload waits at the proxy",
        || {
            let holding = proxy.holding();
            async move { holding.then_some(()) }
        },
    )
    .await;
    child
}

/// Waits for the command to end, at most `limit`.
pub(crate) async fn exit_of(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

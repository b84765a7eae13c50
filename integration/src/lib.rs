//! Test harness for vardo-backup's end-to-end tests: every test gets its own database, bucket,
//! Docker volumes and containers, against the real services that `scripts/services` starts.

pub mod compose;
pub mod db;
pub mod env;
pub mod fault_proxy;
pub mod fixtures;
pub mod http;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod s3;
pub mod trees;
pub mod volumes;
pub mod web;

pub use env::{repo_root, setting};

use std::time::{Duration, Instant};

use secrecy::SecretString;
use uuid::Uuid;
use vardo_actors::docker::DockerClient;
use vardo_actors::secrets::SecretBox;
use vardo_actors::store::Store;

/// One test's private world: a migrated database, a bucket, a name prefix for its volumes and
/// containers; `cleanup` removes all of it.
pub struct TestBed {
    /// Short unique id; prefix of every app name the test makes, so Docker names never collide.
    pub id: String,
    pub db: db::TestDatabase,
    pub store: Store,
    pub secret_key: String,
    pub bucket: s3::TestBucket,
    pub docker: DockerClient,
    volumes: std::sync::Mutex<Vec<String>>,
    containers: std::sync::Mutex<Vec<String>>,
    /// Folder for local targets and SFTP paths of this test.
    pub scratch: String,
}

impl TestBed {
    pub async fn new() -> Self {
        Self::try_new()
            .await
            .expect("the test bed starts (run scripts/services)")
    }

    async fn try_new() -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db = db::TestDatabase::create().await?;
        let secret_key = SecretBox::generate_key();
        let secrets = SecretBox::from_base64(&SecretString::from(secret_key.clone()))?;
        let store = Store::connect(&db.url, 4, secrets)?;
        store.migrate().await?;
        let bucket = s3::TestBucket::create().await?;
        let docker = volumes::docker().await?;
        Ok(Self {
            scratch: format!("t-{id}"),
            id,
            db,
            store,
            secret_key,
            bucket,
            docker,
            volumes: Default::default(),
            containers: Default::default(),
        })
    }

    /// The environment the engine runs with for this test.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.db.url.clone()),
            ("REDIS_URL", setting("REDIS_URL")),
            ("VARDO_SECRET_KEY", self.secret_key.clone()),
            ("VARDO_HELPER_IMAGE", setting("VARDO_HELPER_IMAGE")),
            ("ALLOW_LOCAL_BACKUPS", "true".to_owned()),
            ("VARDO_LOG", "warn,vardo_actors=info".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        process::run(args, &self.env())
    }

    /// A local-target folder private to this test (under the repository's git-ignored dev folder).
    pub fn local_dir(&self) -> String {
        repo_root()
            .join(".vardo-dev/local-targets")
            .join(&self.scratch)
            .display()
            .to_string()
    }

    /// Remembers a Docker volume to remove at cleanup, and returns its name.
    pub fn track_volume(&self, name: &str) -> String {
        self.volumes
            .lock()
            .expect("not poisoned")
            .push(name.to_owned());
        name.to_owned()
    }

    pub fn track_container(&self, id: &str) {
        self.containers
            .lock()
            .expect("not poisoned")
            .push(id.to_owned());
    }

    pub async fn cleanup(self) {
        let containers = std::mem::take(&mut *self.containers.lock().expect("not poisoned"));
        for c in containers {
            let opts = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: false,
                link: false,
            };
            let _ = self.docker.raw().remove_container(&c, Some(opts)).await;
        }
        let volumes = std::mem::take(&mut *self.volumes.lock().expect("not poisoned"));
        for v in volumes {
            volumes::remove(&self.docker, &v).await;
        }
        let _ = std::fs::remove_dir_all(self.local_dir());
        let _ = std::fs::remove_dir_all(
            std::path::Path::new(&setting("VARDO_TEST_SSH_ROOT")).join(&self.scratch),
        );
        if let Err(e) = self.bucket.remove().await {
            eprintln!("bucket cleanup: {e}");
        }
        drop(self.store);
        if let Err(e) = self.db.drop_database().await {
            eprintln!("database cleanup: {e}");
        }
    }
}

/// Polls `check` until it yields `Some`, or fails after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process's exit code and output, for assertion messages.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl TestBed {
    /// Runs `vardo-backup backup --job` and reads back the rows it printed, in order.
    pub async fn run_job(
        &self,
        job: Uuid,
    ) -> (std::process::Output, Vec<vardo_actors::model::Backup>) {
        self.run_job_with(job, &[]).await
    }

    /// [`TestBed::run_job`] with extra environment variables for the engine.
    pub async fn run_job_with(
        &self,
        job: Uuid,
        extra_env: &[(&str, &str)],
    ) -> (std::process::Output, Vec<vardo_actors::model::Backup>) {
        let mut env = self.env();
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let out = process::run(&["backup", "--job", &job.to_string()], &env);
        let mut rows = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let first = line.split_whitespace().next().unwrap_or_default();
            if let Ok(id) = Uuid::parse_str(first) {
                rows.push(self.store.backup(id).await.expect("printed backup row"));
            }
        }
        (out, rows)
    }
}

impl TestBed {
    /// An engine on this bed's database, for tests that drive the library directly; defaults
    /// elsewhere.
    pub fn engine(&self) -> vardo_actors::engine::Engine {
        use std::time::Duration;
        vardo_actors::engine::Engine::build(vardo_actors::engine::EngineSettings {
            database_url: SecretString::from(self.db.url.clone()),
            database_pool_size: 4,
            redis_url: SecretString::from(setting("REDIS_URL")),
            secret_key: SecretString::from(self.secret_key.clone()),
            age_identity_file: None,
            docker_host: None,
            helper_image: setting("VARDO_HELPER_IMAGE"),
            allow_local_backups: true,
            read_volumes_from_host: false,
            heartbeat_interval: Duration::from_secs(15),
            run_lease: Duration::from_secs(120),
            max_concurrent_runs: 2,
            stall_deadline: Duration::from_secs(300),
            catch_up: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(60),
            keep_pre_restore: Duration::from_secs(7 * 86_400),
            drill_postgres_image: None,
            notifications: Default::default(),
            events: Default::default(),
        })
        .expect("engine")
    }
}

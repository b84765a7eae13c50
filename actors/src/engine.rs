//! The engine handle: the pools and clients every actor shares, built in one place.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::OnceCell;

use crate::docker::{DockerClient, DockerError};
use crate::secrets::SecretBox;
pub use crate::settings::EngineSettings;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("invalid REDIS_URL: {0}")]
    Redis(String),
    #[error("VARDO_AGE_IDENTITY_FILE: {0}")]
    Identity(String),
}

/// Cheap to clone; shared by the HTTP handlers and every actor.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    settings: EngineSettings,
    store: Store,
    redis: deadpool_redis::Pool,
    run_slots: Arc<tokio::sync::Semaphore>,
    /// Connected (and the API version negotiated) on first use, so that the engine starts, and
    /// reports itself unready, while the Docker daemon is down.
    docker: OnceCell<DockerClient>,
    metrics: crate::metrics::Metrics,
    /// Rung after events are enqueued, so that this process's publisher sends them at once.
    events_wake: tokio::sync::Notify,
    /// This process among the engines sharing the database: `{pid}-{8 hex}`. Names its request
    /// claims, its deploy-events consumer and the helper containers it creates.
    instance: String,
    /// Cancelled when a graceful shutdown begins: nothing new is taken from then on.
    shutting_down: tokio_util::sync::CancellationToken,
    /// The identities of `age_identity_file`, read once at start-up.
    file_keyring: crate::encryption::Keyring,
    /// Set once start-up applied the schema (and the configured targets): ready from then on.
    prepared: std::sync::atomic::AtomicBool,
    /// Why start-up's last attempt to prepare failed, while it retries.
    unprepared: std::sync::Mutex<Option<String>>,
    /// The runs, restores, verifications and drills of this process under way.
    board: crate::progress::Board,
}

impl Engine {
    pub fn build(settings: EngineSettings) -> Result<Self, EngineError> {
        let secrets = SecretBox::from_base64(&settings.secret_key)?;
        let store = Store::connect(
            settings.database_url.expose_secret(),
            settings.database_pool_size,
            secrets,
        )?;
        let redis = deadpool_redis::Config::from_url(settings.redis_url.expose_secret())
            .builder()
            .map_err(|e| EngineError::Redis(e.to_string()))?
            .max_size(16)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(3)))
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| EngineError::Redis(e.to_string()))?;
        let file_keyring = match &settings.age_identity_file {
            Some(path) => crate::encryption::Keyring::load(path).map_err(EngineError::Identity)?,
            None => crate::encryption::Keyring::default(),
        };
        let run_slots = Arc::new(tokio::sync::Semaphore::new(
            settings.max_concurrent_runs.max(1),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                run_slots,
                settings,
                store,
                redis,
                docker: OnceCell::new(),
                metrics: Default::default(),
                events_wake: tokio::sync::Notify::new(),
                instance: format!(
                    "{}-{}",
                    std::process::id(),
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
                shutting_down: tokio_util::sync::CancellationToken::new(),
                file_keyring,
                prepared: std::sync::atomic::AtomicBool::new(false),
                unprepared: std::sync::Mutex::new(None),
                board: Default::default(),
            }),
        })
    }

    /// Every identity the engine decrypts archives with: the identity file's and those sealed
    /// in the database (read each time, so that one added by `vardo-backup identity` is used
    /// without a restart).
    pub async fn keyring(&self) -> Result<Arc<crate::encryption::Keyring>, StoreError> {
        let sealed = self.inner.store.sealed_keyring().await?;
        Ok(Arc::new(self.inner.file_keyring.clone().merged(&sealed)))
    }

    /// `storage`, opened for `target`, with the target's encryption for what it uploads and the
    /// engine's identities for what it reads.
    pub async fn equip(
        &self,
        storage: crate::storage::TargetStorage,
        target: &crate::model::Target,
    ) -> Result<crate::storage::TargetStorage, StoreError> {
        Ok(storage
            .sealing_to(target.sealing.clone())
            .with_keyring(self.keyring().await?))
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Waits for one of this process's run slots.
    pub async fn run_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        // The semaphore is never closed, so acquiring only waits.
        loop {
            if let Ok(permit) = Arc::clone(&self.inner.run_slots).acquire_owned().await {
                return permit;
            }
        }
    }

    /// This process's instance id (see `engine_instance` in schema.sql).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Starts a graceful shutdown: from now on the scheduler fires nothing, the dispatcher claims
    /// nothing and the deploy-events consumer reads nothing.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.cancel();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.is_cancelled()
    }

    /// Resolves once a graceful shutdown has begun.
    pub async fn shutting_down(&self) {
        self.inner.shutting_down.cancelled().await;
    }

    /// In-process counters that `GET /metrics` shows (see `crate::metrics` for the names).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Tells this process's events publisher that the outbox has new rows.
    pub fn events_enqueued(&self) {
        self.inner.events_wake.notify_one();
    }

    /// Resolves after `events_enqueued` (at once when it was called since the last wait).
    pub async fn events_wait(&self) {
        self.inner.events_wake.notified().await;
    }

    pub fn redis(&self) -> &deadpool_redis::Pool {
        &self.inner.redis
    }

    pub async fn docker(&self) -> Result<&DockerClient, DockerError> {
        let s = &self.inner.settings;
        self.inner
            .docker
            .get_or_try_init(|| async {
                Ok(
                    DockerClient::connect(s.docker_host.as_deref(), &s.helper_image)
                        .await?
                        .for_instance(&self.inner.instance),
                )
            })
            .await
    }

    pub async fn ping_redis(&self) -> Result<(), String> {
        let mut conn = self.inner.redis.get().await.map_err(|e| e.to_string())?;
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Each dependency's state: `None` when it answers, else why not.
    /// The progress of this process's work under way (a command's progress bar reads it).
    pub fn board(&self) -> &crate::progress::Board {
        &self.inner.board
    }

    /// Start-up's attempt to prepare failed (it retries): `/readyz` says why meanwhile.
    pub fn note_unprepared(&self, why: String) {
        *self
            .inner
            .unprepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    }

    /// Start-up applied the schema: `/readyz` may answer 200 from now on.
    pub fn mark_prepared(&self) {
        self.inner
            .prepared
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Postgres, Redis and Docker, each `None` when it answers or the reason it does not; and
    /// `schema`, failing while start-up is still applying it (only said when Postgres answers).
    pub async fn readiness(&self) -> Vec<(&'static str, Option<String>)> {
        let limit = Duration::from_secs(3);
        let timed = |name: &'static str, r: Result<Result<(), String>, _>| match r {
            Ok(Ok(())) => (name, None),
            Ok(Err(e)) => (name, Some(e)),
            Err(_) => (name, Some("no answer within 3 s".to_owned())),
        };
        let pg = tokio::time::timeout(limit, async {
            self.store().ping().await.map_err(|e| e.to_string())
        });
        let redis = tokio::time::timeout(limit, self.ping_redis());
        let docker = tokio::time::timeout(limit, async {
            self.docker()
                .await
                .map_err(|e| e.to_string())?
                .ping()
                .await
                .map_err(|e| e.to_string())
        });
        let (pg, redis, docker) = tokio::join!(pg, redis, docker);
        let pg = timed("postgres", pg);
        let applied = self
            .inner
            .prepared
            .load(std::sync::atomic::Ordering::Acquire);
        let schema = match (&pg.1, applied) {
            (None, false) => Some(
                match self
                    .inner
                    .unprepared
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_deref()
                {
                    Some(why) => format!("start-up failed and retries: {why}"),
                    None => "start-up is still applying the schema".to_owned(),
                },
            ),
            _ => None,
        };
        vec![
            pg,
            ("schema", schema),
            timed("redis", redis),
            timed("docker", docker),
        ]
    }
}

//! Start-up in one place: builds the engine and its actors from the config, and serves.

use std::time::Duration;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;
use vardo_actors::engine::{Engine, EngineSettings};
use vardo_actors::messages::RunFinished;
use vardo_actors::model::{Restore, TargetKind};

use crate::cli::Role;
use crate::config::Config;

async fn prepare(
    engine: &Engine,
    system_target: Option<(TargetKind, serde_json::Value)>,
) -> anyhow::Result<()> {
    engine.store().migrate().await.context("migrate")?;
    if let Some((kind, config)) = system_target {
        let id = engine
            .store()
            .upsert_system_target(SYSTEM_TARGET, kind, config)
            .await
            .context("create the system target from the backup: section")?;
        tracing::info!(target_id = %id, "system target \"{SYSTEM_TARGET}\" is configured");
    }
    Ok(())
}

/// The name of the system-level target that the `backup:` section of vardo.yml defines.
pub const SYSTEM_TARGET: &str = "System default";

pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("VARDO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The built process: engine and actors; tests drive the real binary built from this.
pub struct Application {
    engine: Engine,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let engine = Engine::build(EngineSettings {
            database_url: config.database_url.clone(),
            database_pool_size: config.database_pool_size,
            redis_url: config.redis_url.clone(),
            secret_key: config.secret_key.clone(),
            docker_host: config.docker_host.clone(),
            helper_image: config.helper_image.clone(),
            allow_local_backups: config.allow_local_backups,
            heartbeat_interval: Duration::from_secs(10),
        })?;
        Ok(Self { engine })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies the schema and the `backup:` section's system target.
    pub async fn prepare(&self, config: &Config) -> anyhow::Result<()> {
        prepare(
            &self.engine,
            config.backup.as_ref().map(|b| (b.kind, b.target_json())),
        )
        .await
    }

    /// `prepare` for a server: it keeps trying while the database is away (the server answers
    /// `/readyz` with 503 meanwhile), so start-up order does not matter.
    pub fn prepare_in_background(&self, system_target: Option<(TargetKind, serde_json::Value)>) {
        let engine = self.engine.clone();
        actix::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match prepare(&engine, system_target.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "start-up preparation failed; retrying"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }

    pub async fn serve(&self, role: Role, listen: &str) -> anyhow::Result<()> {
        // Kept alive for as long as the server runs.
        let _supervisor = (role != Role::Web)
            .then(|| vardo_actors::run::RunSupervisor::start(self.engine.clone()));
        let server = crate::http::server(self.engine.clone(), listen)?;
        server.await.context("http server")?;
        Ok(())
    }

    pub async fn run_job_now(&self, job: Uuid) -> anyhow::Result<RunFinished> {
        let supervisor = vardo_actors::run::RunSupervisor::start(self.engine.clone());
        let outcome = vardo_actors::run::run_and_wait(&supervisor, job).await?;
        Ok(outcome)
    }

    pub async fn restore_now(&self, backup: Uuid) -> anyhow::Result<Restore> {
        let supervisor = vardo_actors::run::RunSupervisor::start(self.engine.clone());
        Ok(vardo_actors::run::restore_and_wait(&supervisor, backup).await?)
    }
}

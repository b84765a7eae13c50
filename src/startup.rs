//! Start-up in one place: builds the engine and its actors from the config, and serves.

use std::time::Duration;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;
use vardo_actors::engine::{Engine, EngineSettings};
use vardo_actors::messages::RunFinished;
use vardo_actors::model::Restore;

use crate::cli::Role;
use crate::config::Config;

pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("VARDO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
        self.engine.store().migrate().await.context("migrate")?;
        if let Some(backup) = &config.backup {
            let id = self
                .engine
                .store()
                .upsert_system_target("System default", backup.kind, backup.target_json())
                .await
                .context("create the system target from the backup: section")?;
            tracing::info!(target_id = %id, "system target \"System default\" is configured");
        }
        Ok(())
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

//! Postgres repositories (deadpool-postgres), one file per table group, and the schema migration.

mod admin;
mod app_admin;
mod apps;
mod backups;
mod claims;
mod deploy;
mod drills;
mod events;
mod health;
mod history;
mod identities;
mod instances;
mod job_admin;
mod jobs;
mod notifications;
mod requests;
mod restores;
mod retention;
mod runs;
mod scheduling;
mod stats;
mod system;
mod target_admin;
mod targets;
mod tokens;
mod verifications;
mod web_sessions;

pub use admin::{OrganizationRecord, PageAfter};
pub use app_admin::AppPut;
pub use backups::{log_line, NewBackupRow, RunRef};
pub use claims::{NameTaken, VolumeClaim};
pub use deploy::{AutoJob, Deployed, DeployedApp, Removed, Requested, RequestedRun};
pub use events::{EventRow, NewEvent, PublishPass};
pub use health::{DayOutcome, LastRun, LastSuccess, Unprotected};
pub use history::HistoryFilter;
pub use job_admin::{ArchiveRef, JobRecord};
pub use jobs::NewJob;
pub use notifications::{
    AttemptRecord, AttemptResult, ChannelRow, ClaimedNotice, NewNotice, OutboxRow,
};
pub use requests::RunRequest;
pub use scheduling::ScheduledJob;
pub use stats::{Histogram, Stats, DURATION_BUCKETS};
pub use target_admin::{TargetDelete, TargetRecord, TargetWrite};
pub use targets::TargetRow;
pub use web_sessions::WebSession;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::secrets::{SecretBox, SecretError};

/// The whole schema; applying it twice changes nothing.
pub const SCHEMA: &str = include_str!("../../../schema.sql");
/// Serializes concurrent migrations from several starting instances.
const MIGRATION_LOCK: i64 = 0x7661_7264_6f00_0001;
/// How long the migration waits for any one lock before giving way (Postgres `lock_timeout`).
const MIGRATION_LOCK_WAIT: &str = "500ms";
/// How often a migration that gave way is tried again before the error is returned.
const MIGRATION_ATTEMPTS: u32 = 20;

/// SHA-256 of the schema text this binary carries.
fn schema_digest() -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(SCHEMA.as_bytes()))
}

/// The digest recorded by the last applied migration; `None` before the first one.
async fn applied_digest(client: &impl GenericClient) -> Result<Option<String>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_digest') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT digest FROM schema_digest WHERE id = 1", &[])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// A lock wait that ran out, or a deadlock Postgres broke by aborting the migration.
fn gives_way(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("invalid DATABASE_URL: {0}")]
    Url(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A registration would claim a Docker volume name that another app holds.
    #[error("{0}")]
    NameTaken(#[from] NameTaken),
}

/// Handle to the database: a connection pool and the secret box for encrypted columns.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
    secrets: SecretBox,
}

impl Store {
    pub fn connect(url: &str, max_size: usize, secrets: SecretBox) -> Result<Self, StoreError> {
        let pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Url(e.to_string()))?;
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_size)
            .wait_timeout(Some(std::time::Duration::from_secs(10)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Url(e.to_string()))?;
        Ok(Self { pool, secrets })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Applies `schema.sql` in one transaction under an advisory lock, unless the database
    /// records that exactly this schema text was applied already (then nothing is locked).
    ///
    /// While applying, every lock is waited for at most [`MIGRATION_LOCK_WAIT`]: a migration
    /// that would deadlock with live traffic gives way (and is retried) instead of the
    /// requests being the ones Postgres aborts.
    #[tracing::instrument(skip(self))]
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let digest = schema_digest();
        let mut attempt = 0u32;
        loop {
            match self.migrate_once(&digest).await {
                Err(StoreError::Db(e)) if gives_way(&e) && attempt < MIGRATION_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(
                        attempt,
                        "schema migration gave way to live traffic; retrying"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt)))
                        .await;
                }
                other => return other,
            }
        }
    }

    async fn migrate_once(&self, digest: &str) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        if applied_digest(&client).await?.as_deref() == Some(digest) {
            return Ok(());
        }
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        if applied_digest(&tx).await?.as_deref() == Some(digest) {
            return Ok(());
        }
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{MIGRATION_LOCK_WAIT}'"))
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.execute(
            "INSERT INTO schema_digest (id, digest) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET digest = EXCLUDED.digest, applied_at = now()",
            &[&digest],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}

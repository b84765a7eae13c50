//! The Redis side of the `Lock` actor (lock/mod.rs). Redis locks: `SET key token NX PX ttl`, released only by their holder (compare-and-delete).
//! Scheduler locks `lock:backup:{jobId}:{minute}` simply expire; a volume lock
//! `lock:volume:{dockerVolume}` keeps a backup and a restore of the same volume apart and is renewed
//! while its holder works.

use std::time::Duration;

use deadpool_redis::redis;
use deadpool_redis::Pool;
use uuid::Uuid;

use crate::worker::WorkerBook;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("volume {0} is busy: a backup or restore of it is in progress")]
    Busy(String),
    #[error("the lock {0} was lost: it expired or another holder took it")]
    Lost(String),
    #[error("the lock actor is not running: {0}")]
    Unavailable(String),
}

fn redis_err(e: impl std::fmt::Display) -> LockError {
    LockError::Redis(e.to_string())
}

/// Takes `key` for `ttl` unless someone holds it; true when taken.
pub async fn try_acquire(
    pool: &Pool,
    key: &str,
    token: &str,
    ttl: Duration,
) -> Result<bool, LockError> {
    let mut conn = pool.get().await.map_err(redis_err)?;
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let set: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(ms)
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    Ok(set.is_some())
}

const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;
const EXTEND: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;

pub async fn release(pool: &Pool, key: &str, token: &str) -> Result<(), LockError> {
    let mut conn = pool.get().await.map_err(redis_err)?;
    let _: i64 = redis::cmd("EVAL")
        .arg(RELEASE)
        .arg(1)
        .arg(key)
        .arg(token)
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    Ok(())
}

async fn extend(pool: &Pool, key: &str, token: &str, ttl: Duration) -> Result<bool, LockError> {
    let mut conn = pool.get().await.map_err(redis_err)?;
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let n: i64 = redis::cmd("EVAL")
        .arg(EXTEND)
        .arg(1)
        .arg(key)
        .arg(token)
        .arg(ms)
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    Ok(n == 1)
}

/// A volume lock's life without renewal: a lock whose holder died frees its volume within this
/// time, or within the engine's run lease if that is shorter.
pub const VOLUME_TTL: Duration = Duration::from_secs(60);

/// Held while a backup or restore works on one Docker volume; renewed in the background, released
/// by `release` (or left to expire within a minute if the process dies).
pub struct VolumeLock {
    pool: Pool,
    key: String,
    token: String,
    ttl: Duration,
    renew: tokio::task::JoinHandle<()>,
    /// Becomes true once the renewal finds the lock gone (taken by another holder, or expired
    /// while Redis did not answer).
    lost: tokio::sync::watch::Receiver<bool>,
    /// Set by [`VolumeLock::release`]; a lock dropped without it is released by `drop`.
    released: bool,
}

impl VolumeLock {
    pub async fn acquire(pool: &Pool, volume: &str) -> Result<Self, LockError> {
        Self::acquire_for(pool, volume, VOLUME_TTL, &WorkerBook::new("lock")).await
    }

    /// [`VolumeLock::acquire`] with a time to live of `ttl` (renewed every third of it); failed
    /// renewals and the loss of the lock are recorded in `book`.
    pub async fn acquire_for(
        pool: &Pool,
        volume: &str,
        ttl: Duration,
        book: &WorkerBook,
    ) -> Result<Self, LockError> {
        let key = format!("lock:volume:{volume}");
        let token = Uuid::new_v4().to_string();
        if !try_acquire(pool, &key, &token, ttl).await? {
            return Err(LockError::Busy(volume.to_owned()));
        }
        let (lost_tx, lost) = tokio::sync::watch::channel(false);
        let renew = {
            let (pool, key, token) = (pool.clone(), key.clone(), token.clone());
            let book = book.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(ttl / 3);
                every.tick().await;
                let mut renewed = tokio::time::Instant::now();
                loop {
                    every.tick().await;
                    match extend(&pool, &key, &token, ttl).await {
                        Ok(true) => renewed = tokio::time::Instant::now(),
                        Ok(false) => {
                            tracing::error!(%key, "volume lock lost: another holder has it");
                            book.error(format!("{key} lost: another holder has it"));
                            let _ = lost_tx.send(true);
                            return;
                        }
                        // Past its time to live without a renewal, the lock may be anyone's.
                        Err(e) if renewed.elapsed() >= ttl => {
                            tracing::error!(%key, error = %e, "volume lock lost: not renewed within its time to live");
                            book.error(format!(
                                "{key} lost: not renewed within its time to live ({e})"
                            ));
                            let _ = lost_tx.send(true);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "volume lock renewal failed");
                            book.error(format!("{key} not renewed: {e}"));
                        }
                    }
                }
            })
        };
        Ok(Self {
            pool: pool.clone(),
            key,
            token,
            ttl,
            renew,
            lost,
            released: false,
        })
    }

    /// Resolves once the lock is lost (never, while it is held): a holder races its work against
    /// it and stops, rather than carry on unprotected.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|l| *l).await.is_err() {
            // The renewal ended without losing the lock (released): never resolves.
            std::future::pending::<()>().await;
        }
    }

    /// Confirms, now, that this holder still holds the lock (and extends it): a holder about to do
    /// something that another holder must never overlap calls it first. A lock that expired or
    /// was taken by someone else is [`LockError::Lost`]; Redis not answering is an error too.
    pub async fn confirm(&self) -> Result<(), LockError> {
        if extend(&self.pool, &self.key, &self.token, self.ttl).await? {
            Ok(())
        } else {
            Err(LockError::Lost(self.key.clone()))
        }
    }

    pub async fn release(mut self) {
        self.renew.abort();
        self.released = true;
        if let Err(e) = release(&self.pool, &self.key, &self.token).await {
            tracing::warn!(key = %self.key, error = %e, "volume lock release failed; it expires by itself");
        }
    }
}

/// A lock dropped unreleased (its holder's work was aborted or panicked) is released in the
/// background, so that the volume is free at once rather than when the lock expires.
impl Drop for VolumeLock {
    fn drop(&mut self) {
        self.renew.abort();
        if self.released {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (pool, key, token) = (self.pool.clone(), self.key.clone(), self.token.clone());
            runtime.spawn(async move {
                if let Err(e) = release(&pool, &key, &token).await {
                    tracing::warn!(%key, error = %e, "volume lock release failed; it expires by itself");
                }
            });
        }
    }
}

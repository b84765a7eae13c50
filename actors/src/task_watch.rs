//! What the per-task actors — RestoreRun, VerifyRun, DrillRun — share: the heartbeat each keeps on
//! its row while its work makes progress, and how its work's end (what it returned, a panic, a
//! stop) is told apart for the outcome it reports to the supervisor.

use actix::prelude::*;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::Engine;
use crate::progress::Progress;
use crate::store::StoreError;
use crate::supervision::panic_message;

/// Refreshes one row's heartbeat.
pub type Beat = fn(Engine, Uuid) -> BoxFuture<'static, Result<(), StoreError>>;

/// Every heartbeat interval, while `progress` is fresh (see [`crate::progress`]), refreshes row
/// `id`'s heartbeat with `beat`; work that stalls stops refreshing it, so that the janitor can
/// take the row once the lease runs out.
pub fn keep_heartbeat<A>(
    ctx: &mut Context<A>,
    engine: Engine,
    id: Uuid,
    progress: Progress,
    beat: Beat,
) where
    A: Actor<Context = Context<A>>,
{
    let every = engine.settings().heartbeat_interval;
    ctx.run_interval(every, move |_, _| {
        if !progress.is_fresh(engine.settings().stall_deadline) {
            tracing::warn!(%id, "no progress: the heartbeat is not refreshed");
            return;
        }
        let engine = engine.clone();
        actix::spawn(async move {
            if let Err(e) = beat(engine, id).await {
                tracing::warn!(%id, error = %e, "heartbeat failed");
            }
        });
    });
}

/// How a task's work ended.
pub enum Ended<T> {
    /// It returned.
    Returned(T),
    /// It panicked, with the panic's text.
    Panicked(String),
    /// It was stopped (aborted) before it returned.
    Stopped,
}

/// Waits for `work`. When `cancel` fires first, the work is aborted (its future dropped, as a
/// stall drops it: uploads abort, sessions end) and [`Ended::Stopped`] answered.
pub async fn join<T>(
    work: tokio::task::JoinHandle<T>,
    cancel: Option<CancellationToken>,
) -> Ended<T> {
    let mut work = work;
    let joined = match cancel {
        Some(cancel) => tokio::select! {
            joined = &mut work => joined,
            () = cancel.cancelled() => {
                work.abort();
                work.await
            }
        },
        None => work.await,
    };
    match joined {
        Ok(returned) => Ended::Returned(returned),
        Err(join) if join.is_panic() => Ended::Panicked(panic_message(join.into_panic())),
        Err(_) => Ended::Stopped,
    }
}

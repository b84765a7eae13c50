//! Engine instances and their helper containers. Every engine process (`serve`, and the `backup`
//! and `restore` commands) has an instance id, keeps a heartbeat row in `engine_instance`, and
//! labels every helper container it creates with `vardo-backup.instance=<id>`.
//!
//! Who removes which helper:
//! - a process that shuts down gracefully removes its own (by its label) once its runs ended,
//!   and marks its row stopped;
//! - every janitor sweep (at start-up, then every quarter of the lease) removes the helpers of
//!   instances this database knows as gone: stopped, or no heartbeat within the run lease — the
//!   same test that fails a dead engine's rows, so a helper is never removed while its run could
//!   still be alive;
//! - helpers of an instance this database does not know (another deployment, or a test, on the
//!   same Docker host), and unlabelled ones, are never touched.

use std::time::Duration;

use crate::docker::DockerError;
use crate::engine::Engine;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refreshes this instance's heartbeat every heartbeat interval, for as long as the process runs.
pub fn spawn_heartbeat(engine: Engine) {
    actix::spawn(async move {
        let every = engine
            .settings()
            .heartbeat_interval
            .max(Duration::from_secs(1));
        loop {
            if let Err(e) = engine.store().heartbeat_instance(engine.instance()).await {
                tracing::warn!(instance = engine.instance(), error = %e, "instance heartbeat failed");
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Removes the helper containers of engine instances that are gone (see the module note).
/// Returns how many it removed.
#[tracing::instrument(skip(engine))]
pub async fn sweep_helpers(engine: &Engine) -> Result<usize, SweepError> {
    let docker = engine.docker().await?;
    let helpers: Vec<_> = docker
        .list_helpers(None)
        .await?
        .into_iter()
        .filter(|h| {
            h.instance
                .as_deref()
                .is_some_and(|i| i != engine.instance())
        })
        .collect();
    if helpers.is_empty() {
        return Ok(0);
    }
    let mut instances: Vec<String> = helpers.iter().filter_map(|h| h.instance.clone()).collect();
    instances.sort();
    instances.dedup();
    let alive = engine
        .store()
        .instances_alive(&instances, engine.settings().run_lease)
        .await?;
    let mut removed = 0;
    for helper in helpers {
        let Some(instance) = &helper.instance else {
            continue;
        };
        // Unknown here: another deployment's, left alone.
        if alive.get(instance) != Some(&false) {
            continue;
        }
        match docker.remove_helper(&helper.id).await {
            Ok(()) => {
                removed += 1;
                tracing::warn!(container = %helper.id, %instance, "removed a helper container left by a stopped engine");
            }
            Err(e) => {
                tracing::warn!(container = %helper.id, error = %e, "could not remove a stopped engine's helper container")
            }
        }
    }
    Ok(removed)
}

/// Removes every helper container this process created that is still there, and waits until
/// Docker lists none (a removal a drop guard started may still be in progress); returns how many
/// it removed itself.
pub async fn remove_own_helpers(engine: &Engine) -> Result<usize, SweepError> {
    let docker = engine.docker().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut removed = std::collections::HashSet::new();
    loop {
        let left = docker.list_helpers(Some(engine.instance())).await?;
        if left.is_empty() {
            return Ok(removed.len());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                left = left.len(),
                "helper containers of this process are still there; another instance's janitor removes them"
            );
            return Ok(removed.len());
        }
        for helper in left {
            match docker.remove_helper(&helper.id).await {
                Ok(()) => {
                    removed.insert(helper.id);
                }
                // E.g. 409: a drop guard's removal is in progress; listed again below.
                Err(e) => {
                    tracing::debug!(container = %helper.id, error = %e, "helper container not removed yet")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

//! Janitor: every instance sweeps, every quarter of the lease, the rows whose engine died — a
//! `pending` or `running` row with no heartbeat within the lease is failed with the reason, so no
//! row stays `running` and no job is blocked by a dead run. Requests such an engine had claimed
//! but not yet started are handed back for another instance to claim. A file restore whose engine
//! stopped mid-way has its volume recovered here (its swap finished or undone, see
//! [`crate::restore::swap`]), at start-up and then on every sweep. So are the helper containers
//! of engine instances that are gone (see [`crate::instance`]), and the scratch volumes and
//! containers of drills that are not live any more (see [`crate::drill::scratch`]).

use actix::prelude::*;

use crate::crew::Crew;
use crate::engine::Engine;

pub struct Janitor {
    engine: Engine,
    crew: Crew,
}

impl Janitor {
    pub fn new(engine: Engine, crew: Crew) -> Self {
        Self { engine, crew }
    }
}

impl Actor for Janitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = self.engine.settings().run_lease / 4;
        let (engine, crew) = (self.engine.clone(), self.crew.clone());
        ctx.spawn(
            async move {
                sweep_helpers(&engine).await;
                sweep_drills(&engine).await;
                recover_abandoned(engine, &crew).await;
            }
            .into_actor(self),
        );
        ctx.run_interval(every, |act, ctx| {
            let (engine, crew) = (act.engine.clone(), act.crew.clone());
            ctx.spawn(
                async move {
                    match engine
                        .store()
                        .fail_abandoned(engine.settings().run_lease)
                        .await
                    {
                        Ok((0, 0)) => {}
                        Ok((backups, restores)) => tracing::warn!(
                            backups,
                            restores,
                            "failed rows left unfinished by a stopped engine"
                        ),
                        Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
                    }
                    match engine
                        .store()
                        .fail_abandoned_verifications(engine.settings().run_lease)
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            verifications = n,
                            "failed verifications left unfinished by a stopped engine"
                        ),
                        Err(e) => tracing::warn!(error = %e, "verification lease sweep failed"),
                    }
                    match engine
                        .store()
                        .release_abandoned_claims(engine.settings().run_lease)
                        .await
                    {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            requests = n,
                            "handed back requests claimed by a stopped engine"
                        ),
                        Err(e) => tracing::warn!(error = %e, "claim sweep failed"),
                    }
                    sweep_helpers(&engine).await;
                    sweep_drills(&engine).await;
                    match crew.prune_safety_backups().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(pruned = n, "deleted expired safety backups"),
                        Err(e) => tracing::warn!(error = %e, "safety backup sweep failed"),
                    }
                    recover_abandoned(engine, &crew).await;
                }
                .into_actor(act),
            );
        });
    }
}

/// Fails the drills of engines that stopped, then removes every scratch volume and container
/// whose drill is not live.
async fn sweep_drills(engine: &Engine) {
    let lease = engine.settings().run_lease;
    match engine.store().fail_abandoned_drills(lease).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            drills = n,
            "failed drills left unfinished by a stopped engine"
        ),
        Err(e) => tracing::warn!(error = %e, "drill lease sweep failed"),
    }
    let docker = match engine.docker().await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "scratch sweep skipped: Docker does not answer");
            return;
        }
    };
    match crate::drill::scratch::sweep(docker, engine.store(), lease).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed the scratch volumes and containers of ended drills"
        ),
        Err(e) => tracing::warn!(error = %e, "scratch sweep failed"),
    }
}

/// Removes the helper containers of engines that are gone, and forgets week-old instances.
async fn sweep_helpers(engine: &Engine) {
    if let Err(e) = crate::instance::sweep_helpers(engine).await {
        tracing::warn!(error = %e, "helper container sweep failed");
    }
    if let Err(e) = engine.store().forget_old_instances().await {
        tracing::warn!(error = %e, "could not forget old engine instances");
    }
}

/// Recovers the volumes of restores that ended, or whose engine stopped, with their volume marked
/// as possibly needing recovery. A volume whose lock is held is left for the next sweep.
pub async fn recover_abandoned(engine: Engine, crew: &Crew) {
    let store = engine.store();
    let volumes = match store
        .abandoned_recoveries(engine.settings().run_lease)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for volumes to recover");
            return;
        }
    };
    for (volume, ids) in volumes {
        let Ok(lock) = crew.lock_volume(&volume).await else {
            continue;
        };
        let lease = engine.settings().run_lease;
        let outcome = match (engine.docker().await, lock.confirm().await) {
            (Ok(docker), Ok(())) => {
                crate::restore::files::recover_in_helper(docker, store, &volume, &ids, lease).await
            }
            (Err(e), _) => Err(e.into()),
            (_, Err(e)) => Err(crate::restore::RestoreError::Failed(format!(
                "the volume lock could not be confirmed: {e}"
            ))),
        };
        lock.release().await;
        let notes: Vec<(uuid::Uuid, String)> = match outcome {
            Ok(done) => done
                .into_iter()
                .map(|(id, what)| {
                    (
                        id,
                        format!("recovery after the engine stopped: {}", what.describe()),
                    )
                })
                .collect(),
            Err(crate::restore::RestoreError::Docker(
                crate::docker::DockerError::VolumeNotFound { .. },
            )) => {
                if let Err(e) = store.clear_restore_recovery(&ids).await {
                    tracing::warn!(error = %e, %volume, "could not clear recovery marks");
                }
                ids.iter()
                    .map(|id| {
                        (
                            *id,
                            format!("recovery: the volume {volume} no longer exists"),
                        )
                    })
                    .collect()
            }
            Err(e) => {
                tracing::error!(error = %e, %volume, "recovery of an interrupted restore failed");
                ids.iter()
                    .map(|id| {
                        (
                            *id,
                            format!(
                                "recovery after the engine stopped failed (retried later): {e}"
                            ),
                        )
                    })
                    .collect()
            }
        };
        for (id, note) in notes {
            tracing::warn!(%volume, restore_id = %id, "{note}");
            if let Err(e) = store.append_restore_log(id, &note).await {
                tracing::warn!(error = %e, "could not log the recovery");
            }
        }
    }
}

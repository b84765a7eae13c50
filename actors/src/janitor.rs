//! Janitor: every instance sweeps, every quarter of the lease, the rows whose engine died — a
//! `pending` or `running` row with no heartbeat within the lease is failed with the reason, so no
//! row stays `running` and no job is blocked by a dead run. Requests such an engine had claimed
//! but not yet started are handed back for another instance to claim.

use actix::prelude::*;

use crate::engine::Engine;

pub struct Janitor {
    engine: Engine,
}

impl Janitor {
    pub fn new(engine: Engine) -> Self {
        Self { engine }
    }
}

impl Actor for Janitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = self.engine.settings().run_lease / 4;
        ctx.run_interval(every, |act, ctx| {
            let engine = act.engine.clone();
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
                }
                .into_actor(act),
            );
        });
    }
}

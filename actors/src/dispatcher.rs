//! Dispatcher: claims the run, restore, verification and drill requests that the HTTP control plane and the deploy
//! pipeline leave in the database, and hands them to this instance's RunSupervisor. Any instance
//! running the scheduler role may claim a request; each is claimed once. It claims nothing once a
//! graceful shutdown has begun.

use std::time::Duration;

use actix::prelude::*;

use crate::engine::Engine;
use crate::messages::{StartDrill, StartRestore, StartRun, StartVerify};
use crate::run::RunSupervisor;

const POLL: Duration = Duration::from_millis(500);

pub struct Dispatcher {
    engine: Engine,
    supervisor: Addr<RunSupervisor>,
    instance: String,
    busy: bool,
}

impl Dispatcher {
    pub fn new(engine: Engine, supervisor: Addr<RunSupervisor>, instance: String) -> Self {
        Self {
            engine,
            supervisor,
            instance,
            busy: false,
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(POLL, |act, ctx| {
            if act.busy || act.engine.is_shutting_down() {
                return;
            }
            act.busy = true;
            let (engine, supervisor, instance) = (
                act.engine.clone(),
                act.supervisor.clone(),
                act.instance.clone(),
            );
            ctx.spawn(
                async move { dispatch(&engine, &supervisor, &instance).await }
                    .into_actor(act)
                    .map(|_, act, _| act.busy = false),
            );
        });
    }
}

async fn dispatch(engine: &Engine, supervisor: &Addr<RunSupervisor>, instance: &str) {
    let store = engine.store();
    // A shutdown that begins meanwhile stops the claiming: what is left stays for another
    // instance.
    while !engine.is_shutting_down() {
        match store.claim_run_request(instance).await {
            Ok(Some(request)) => supervisor.do_send(StartRun {
                run_id: Some(request.run_id),
                job_id: request.job_id,
                reason: request.reason,
                scheduled_for: None,
                on_finish: None,
                request_id: request.request_id,
            }),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim run requests");
                return;
            }
        }
    }
    while !engine.is_shutting_down() {
        match store.claim_restore(instance).await {
            Ok(Some(restore_id)) => supervisor.do_send(StartRestore {
                restore_id,
                on_finish: None,
            }),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim restores");
                return;
            }
        }
    }
    while !engine.is_shutting_down() {
        match store.claim_verification(instance).await {
            Ok(Some(verification_id)) => supervisor.do_send(StartVerify {
                verification_id,
                on_finish: None,
            }),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim verifications");
                return;
            }
        }
    }
    while !engine.is_shutting_down() {
        match store.claim_drill(instance).await {
            Ok(Some(drill_id)) => supervisor.do_send(StartDrill {
                drill_id,
                on_finish: None,
            }),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim drills");
                return;
            }
        }
    }
}

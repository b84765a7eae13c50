//! The supervisor's side of drills: start a [`DrillRun`] per drill, record its end on the drill and
//! the job, and send the job's channels a notice when it failed.

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use super::RunSupervisor;
use crate::drill::DrillRun;
use crate::messages::{DrillEnded, StartDrill};
use crate::supervision::SHUTTING_DOWN;

impl Handler<StartDrill> for RunSupervisor {
    type Result = ();

    fn handle(&mut self, msg: StartDrill, ctx: &mut Context<Self>) {
        let id = msg.drill_id;
        if let Some(tx) = msg.on_finish {
            self.drill_waiters.insert(id, tx);
        }
        let cancel = CancellationToken::new();
        self.live.insert(id, cancel.clone());
        self.tasks.insert(id, self.book.begin());
        if self.draining {
            ctx.notify(DrillEnded {
                drill_id: id,
                outcome: Err(format!("{SHUTTING_DOWN}: the drill was not started")),
                ours: true,
            });
            return;
        }
        DrillRun::new(
            self.engine.clone(),
            self.crew.clone(),
            id,
            ctx.address().recipient(),
            cancel,
        )
        .start();
    }
}

impl Handler<DrillEnded> for RunSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: DrillEnded, _: &mut Context<Self>) -> Self::Result {
        let engine = self.engine.clone();
        let id = msg.drill_id;
        let failure = match &msg.outcome {
            Err(why) if msg.ours => Some(format!("drill {id}: {why}")),
            _ => None,
        };
        let settle = async move {
            let store = engine.store();
            if msg.ours {
                let (ok, message) = match &msg.outcome {
                    Ok(summary) => (true, summary.clone()),
                    Err(why) => (false, format!("failed: {why}")),
                };
                // Stopped by a shutdown: nothing was found wrong with the job's backups.
                let stopped = msg
                    .outcome
                    .as_ref()
                    .is_err_and(|why| why.starts_with(SHUTTING_DOWN));
                match store.finish_drill(id, ok, !stopped, &message).await {
                    Ok(true) if !ok && !stopped => {
                        let why = msg.outcome.as_ref().err().map_or("", String::as_str);
                        if let Err(e) = crate::notify::enqueue_drill_failed(&engine, id, why).await
                        {
                            tracing::error!(drill_id = %id, error = %e, "could not enqueue the drill's failure notice");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(drill_id = %id, error = %e, "could not record the drill's end")
                    }
                }
            }
            store.drill(id).await.ok()
        };
        Box::pin(settle.into_actor(self).map(move |drill, act, _| {
            act.settled(id, failure);
            if let (Some(d), Some(tx)) = (drill, act.drill_waiters.remove(&id)) {
                let _ = tx.send(d);
            }
        }))
    }
}

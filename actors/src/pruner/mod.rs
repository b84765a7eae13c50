//! Pruner: the actor that applies a job's retention after its runs ([`Prune`]). Prunes of one job
//! take turns (a second one waits for the first, then plans from what the first left); prunes of
//! different jobs run side by side. The planning and the deletes are in [`plan`].

pub mod plan;
pub mod safety;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use uuid::Uuid;

use crate::engine::Engine;
use crate::messages::{Prune, PruneSafetyBackups, Report};
use crate::worker::WorkerBook;

pub use plan::*;

pub struct Pruner {
    engine: Engine,
    book: WorkerBook,
    /// One turn per job: held while that job is pruned.
    turns: HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>,
}

impl Pruner {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            book: WorkerBook::new("pruner"),
            turns: HashMap::new(),
        }
    }
}

impl Actor for Pruner {
    type Context = Context<Self>;
}

impl Handler<Prune> for Pruner {
    type Result = ResponseFuture<Result<PruneReport, PruneError>>;

    fn handle(&mut self, msg: Prune, _: &mut Context<Self>) -> Self::Result {
        // Turns nobody holds or waits for are forgotten, so the map stays as small as the work.
        self.turns.retain(|_, turn| Arc::strong_count(turn) > 1);
        let turn = Arc::clone(self.turns.entry(msg.job_id).or_default());
        let (engine, book) = (self.engine.clone(), self.book.clone());
        Box::pin(async move {
            let _turn = turn.lock().await;
            let task = book.begin();
            let planned = plan(&engine, msg.job_id).await;
            let report = match planned {
                Ok(p) => execute(&engine, &p).await,
                Err(e) => Err(e),
            };
            match &report {
                Ok(r) if r.failed() > 0 => {
                    task.failed(format!("job {}: {} deletes failed", msg.job_id, r.failed()));
                }
                Ok(_) => task.ok(),
                Err(e) => task.failed(e),
            }
            report
        })
    }
}

impl Handler<PruneSafetyBackups> for Pruner {
    type Result = ResponseFuture<Result<usize, PruneError>>;

    fn handle(&mut self, _: PruneSafetyBackups, _: &mut Context<Self>) -> Self::Result {
        let (engine, task) = (self.engine.clone(), self.book.begin());
        Box::pin(async move { task.end(safety::prune_expired(&engine).await) })
    }
}

impl Handler<Report> for Pruner {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.status())
    }
}

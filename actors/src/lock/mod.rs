//! Lock: the actor that takes and gives back the engine's Redis locks — the scheduler's minute
//! locks and the per-volume locks that keep a backup and a restore of one volume apart — and
//! reports how that goes (failed takes, failed renewals, lost locks).

pub mod redis;

use actix::prelude::*;

use crate::engine::Engine;
use crate::messages::{LockVolume, ReleaseLock, Report, TakeLock};
use crate::worker::WorkerBook;

pub use redis::{LockError, VolumeLock, VOLUME_TTL};

pub struct Lock {
    engine: Engine,
    book: WorkerBook,
}

impl Lock {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            book: WorkerBook::new("lock"),
        }
    }
}

impl Actor for Lock {
    type Context = Context<Self>;
}

impl Handler<LockVolume> for Lock {
    type Result = ResponseFuture<Result<VolumeLock, LockError>>;

    fn handle(&mut self, msg: LockVolume, _: &mut Context<Self>) -> Self::Result {
        let (engine, book) = (self.engine.clone(), self.book.clone());
        let task = book.begin();
        // A dead engine's lock frees its volume by the time the janitor sees the engine is gone.
        let ttl = engine.settings().run_lease.min(VOLUME_TTL);
        Box::pin(async move {
            let taken =
                VolumeLock::acquire_for(engine.redis(), &msg.docker_volume, ttl, &book).await;
            match &taken {
                // Busy is an answer, not a failure of the lock.
                Ok(_) | Err(LockError::Busy(_)) => task.ok(),
                Err(e) => task.failed(e),
            }
            taken
        })
    }
}

impl Handler<TakeLock> for Lock {
    type Result = ResponseFuture<Result<bool, LockError>>;

    fn handle(&mut self, msg: TakeLock, _: &mut Context<Self>) -> Self::Result {
        let (engine, task) = (self.engine.clone(), self.book.begin());
        Box::pin(async move {
            task.end(redis::try_acquire(engine.redis(), &msg.key, &msg.holder, msg.ttl).await)
        })
    }
}

impl Handler<ReleaseLock> for Lock {
    type Result = ResponseFuture<Result<(), LockError>>;

    fn handle(&mut self, msg: ReleaseLock, _: &mut Context<Self>) -> Self::Result {
        let (engine, task) = (self.engine.clone(), self.book.begin());
        Box::pin(
            async move { task.end(redis::release(engine.redis(), &msg.key, &msg.holder).await) },
        )
    }
}

impl Handler<Report> for Lock {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.status())
    }
}

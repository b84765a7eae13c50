//! VolumeRunner: the actor that opens the archive of a Docker volume — found and locked by the run
//! — and answers with the receiving end of its byte stream (a bounded stream: the bytes never pass
//! through a mailbox). The work is in [`archive`].

pub mod archive;

use actix::prelude::*;

use crate::engine::Engine;
use crate::messages::{OpenArchive, Report};
use crate::worker::WorkerBook;

pub use crate::pg::{PgLogin, PgSession};
pub use archive::{open_archive, ArchiveOptions, VolumeArchive, VolumeError};

pub struct VolumeRunner {
    engine: Engine,
    book: WorkerBook,
}

impl VolumeRunner {
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            book: WorkerBook::new("volume-runner"),
        }
    }
}

impl Actor for VolumeRunner {
    type Context = Context<Self>;
}

impl Handler<OpenArchive> for VolumeRunner {
    type Result = ResponseFuture<Result<VolumeArchive, VolumeError>>;

    fn handle(&mut self, msg: OpenArchive, _: &mut Context<Self>) -> Self::Result {
        let (engine, task) = (self.engine.clone(), self.book.begin());
        Box::pin(async move {
            let open = async {
                let docker = engine.docker().await?;
                open_archive(docker, &msg.docker_volume, &msg.volume, &msg.options).await
            };
            // Given up (dropped) task: neither done nor failed.
            let opened = msg
                .stop
                .run_until_cancelled(open)
                .await
                .ok_or(VolumeError::GivenUp)?;
            task.end(opened)
        })
    }
}

impl Handler<Report> for VolumeRunner {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.status())
    }
}

//! Uploader: the actor that takes an archive stream (the receiving end, in the [`Upload`] message)
//! and stores it compressed on a target, answering with the stored object's digest. Dropped before
//! the end (a stalled or cancelled run gives it up), the upload aborts and removes what it wrote.
//! The work is in [`pipeline`].

pub mod pipeline;

use actix::prelude::*;

use crate::codec::Digest;
use crate::messages::{Report, Upload};
use crate::worker::WorkerBook;

pub use pipeline::{upload, UploadError};

pub struct Uploader {
    book: WorkerBook,
}

impl Uploader {
    pub fn new() -> Self {
        Self {
            book: WorkerBook::new("uploader"),
        }
    }
}

impl Default for Uploader {
    fn default() -> Self {
        Self::new()
    }
}

impl Actor for Uploader {
    type Context = Context<Self>;
}

impl Handler<Upload> for Uploader {
    type Result = ResponseFuture<Result<Digest, UploadError>>;

    fn handle(&mut self, msg: Upload, _: &mut Context<Self>) -> Self::Result {
        let task = self.book.begin();
        Box::pin(async move {
            let Upload {
                storage,
                key,
                archive,
                compression,
                level,
                progress,
                stop,
            } = msg;
            let work = upload(&storage, &key, archive, compression, level, &progress);
            // Dropping `work` aborts the upload (see `storage::upload`).
            let uploaded = stop
                .run_until_cancelled(work)
                .await
                .ok_or_else(|| UploadError::GivenUp { key: key.clone() })?;
            task.end(uploaded)
        })
    }
}

impl Handler<Report> for Uploader {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.status())
    }
}

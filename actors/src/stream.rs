//! The byte stream that flows between the stages of a backup or restore.

use bytes::Bytes;
use futures::stream::BoxStream;

/// A stream of chunks; an `Err` ends it and carries the cause to whoever consumes it.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// `stream`, ended with an error saying `why` as soon as `cancel` is cancelled: whoever consumes
/// it fails the way it fails on a cut download, through its own error path.
pub fn until_cancelled(
    stream: ByteStream,
    cancel: tokio_util::sync::CancellationToken,
    why: &'static str,
) -> ByteStream {
    use futures::StreamExt as _;
    async_stream::stream! {
        let mut stream = stream;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    yield Err(std::io::Error::other(why));
                    return;
                }
                item = stream.next() => match item {
                    Some(item) => yield item,
                    None => return,
                },
            }
        }
    }
    .boxed()
}

/// `stream`, ended with an error when no chunk arrives for `limit`.
pub fn stalls_after(stream: ByteStream, limit: std::time::Duration) -> ByteStream {
    use futures::StreamExt as _;
    async_stream::stream! {
        let mut stream = stream;
        loop {
            match tokio::time::timeout(limit, stream.next()).await {
                Ok(Some(item)) => {
                    let failed = item.is_err();
                    yield item;
                    if failed {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    yield Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no bytes arrived for {limit:?}"),
                    ));
                    return;
                }
            }
        }
    }
    .boxed()
}

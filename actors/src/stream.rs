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

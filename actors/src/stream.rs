//! The byte stream that flows between the stages of a backup or restore.

use bytes::Bytes;
use futures::stream::BoxStream;

/// A stream of chunks; an `Err` ends it and carries the cause to whoever consumes it.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

//! Storage targets as opendal operators: key layout, streaming upload, download, presign.
//!
//! - `keys`: the key layout `{prefix/}{orgSlug}/{appName}/{volumeName}/{timestamp}.{ext}` (pure).
//! - `operators`: one opendal operator per target kind (S3 for s3/r2/b2, SFTP, fs).
//! - `target_storage`: [`TargetStorage`] — open, stat, delete, download, presign, list.
//! - `upload`: streaming upload with abort on failure and a size check.
//! - `pinned`: [`ObjectPin`] — reading one object again as the same object.
//! - `key_file`: an SSH private key as a 0600 temp file for the `ssh` binary.
//! - `error`: [`StorageError`].

mod error;
mod key_file;
pub mod keys;
mod operators;
mod pinned;
mod target_storage;
mod upload;

pub use error::StorageError;
pub use keys::{archive_relative_key, archive_timestamp, parse_archive_timestamp};
pub use pinned::ObjectPin;
pub use target_storage::{StorageKind, TargetStorage};
pub use upload::{uploads_settled, S3_PARTS_IN_FLIGHT, S3_PART_SIZE};

//! Plain domain types, free of I/O.

pub mod app;
pub mod backup;
pub mod channel;
pub mod drill;
pub mod job;
pub mod run;
pub mod target;
pub mod verification;

pub use app::{App, Organization, Volume, VolumeKind};
pub use backup::{Backup, BackupKind, ChainLink, Restore, RunReason, Status};
pub use channel::ChannelKind;
pub use drill::{Drill, DEFAULT_DRILL_SCHEDULE};
pub use job::{Compression, Job, RetentionPolicy};
pub use run::{RunFailure, RunFailureReason, RunRecord};
pub use target::{Target, TargetConfig, TargetKind};
pub use verification::Verification;

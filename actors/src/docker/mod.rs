//! Docker: volume lookup, archive streams, exec with streams, the helper image (bollard).
//!
//! One file per concern: `client` (connection, helper image), `volumes` (blue/green lookup),
//! `containers` (the app container using a volume), `archive` (tar out of / into a volume),
//! `exec` (commands with streamed stdin/stdout), `helper` (throw-away helper containers),
//! `scratch` (a drill's scratch volumes and containers, labelled `vardo-backup.drill`), `error`
//! (`DockerError`). Every container this module creates is labelled
//! `vardo-backup=helper` (and `vardo-backup.instance=<engine instance>`) and named
//! `vardo-helper-<uuid>`.

mod archive;
mod client;
mod containers;
mod error;
mod exec;
mod helper;
mod scratch;
mod volumes;

pub use client::DockerClient;
pub use containers::ContainerRef;
pub use error::DockerError;
pub use exec::{ExecHandle, ExecOutcome, OUTPUT_CAP};
pub use helper::{
    HelperContainer, HelperInfo, HELPER_LABEL_KEY, HELPER_LABEL_VALUE, INSTANCE_LABEL_KEY,
    VOLUME_MOUNT,
};
pub use scratch::{ScratchItem, DRILL_LABEL_KEY};
pub use volumes::app_volume_candidates;

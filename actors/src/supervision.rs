//! What `RunSupervisor` (run.rs) and the runs and restores it supervises share: the reason a
//! shutdown gives for what it stopped, and the text of a panic that ended a run's task. Below both
//! run.rs and restore/, so that neither imports the other for them.

/// Why a run or restore that a shutdown stopped failed; the row's log says it.
pub const SHUTTING_DOWN: &str = "engine shutting down";

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

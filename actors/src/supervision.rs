//! What `RunSupervisor` (run.rs) and the runs and restores it supervises share: the reason a
//! shutdown gives for what it stopped, and the text of a panic that ended a run's task. Below both
//! run.rs and restore/, so that neither imports the other for them.

use std::time::Duration;

/// How many times `RunSupervisor` restarts a run that stopped on an error before it settles the
/// run's rows `failed`.
pub const RESTART_BUDGET: u32 = 3;

/// How long the supervisor waits before restart `attempt` (1-based): 2 s, doubling, at most 30 s.
/// With the budget, a run gives up about 14 s after its first stop — well within the run lease,
/// so no janitor takes its rows for abandoned meanwhile.
pub fn restart_backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(4);
    Duration::from_secs(2u64 << exp).min(Duration::from_secs(30))
}

/// Why a run or restore that a shutdown stopped failed; the row's log says it.
pub const SHUTTING_DOWN: &str = "engine shutting down";

pub(crate) fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_and_stop_within_the_lease() {
        let waits: Vec<u64> = (1..=6).map(|a| restart_backoff(a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 30, 30]);
        let total: u64 = (1..=RESTART_BUDGET)
            .map(|a| restart_backoff(a).as_secs())
            .sum();
        assert!(
            total < 60,
            "the budget's waits ({total} s) stay below the default lease"
        );
    }
}

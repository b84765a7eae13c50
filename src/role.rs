//! What one `vardo-backup serve` process runs: `--role` on the command line (cli.rs) picks it, and
//! start-up (startup.rs) starts the HTTP control plane, the scheduler side, or both.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// HTTP control plane and scheduler.
    All,
    /// HTTP control plane only.
    Web,
    /// Scheduler, runs and consumers only.
    Scheduler,
}

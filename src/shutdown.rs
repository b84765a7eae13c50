//! SIGTERM and SIGINT for `serve`: the first starts a graceful shutdown (see
//! `vardo_actors::shutdown`), a second one cuts its grace period short.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The termination signals, installed once at start-up (before that, the default action applies).
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT, with its name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

//! vardo-backup: backs up Docker volumes and restores them.

mod cli;
mod config;
mod healthcheck_cmd;
mod http;
mod identity_cmd;
mod progress_bar;
mod retention_cmd;
mod role;
mod shutdown;
mod startup;
mod status_cmd;
mod web;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    startup::init_tracing();
    let system = actix::System::new();
    match system.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // The whole cause chain for the operator; no secret is ever part of an error message.
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

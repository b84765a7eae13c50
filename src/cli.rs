//! The command line: `serve`, `migrate`, `config`, `backup`, `restore`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::config::Config;
use crate::startup::Application;

#[derive(Debug, Parser)]
#[command(
    name = "vardo-backup",
    version,
    about = "Backs up Docker volumes and restores them"
)]
pub struct Cli {
    /// The YAML config file (default: $VARDO_CONFIG, else config/vardo.yml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Applies the schema, then serves the HTTP control plane and/or runs the scheduler.
    Serve {
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Overrides `listen` (VARDO_LISTEN); port 0 picks a free port, printed on start-up.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Applies schema.sql to the database (idempotent).
    Migrate,
    /// Prints the effective configuration, secrets masked.
    Config,
    /// Runs a backup job now, waits, prints one line per volume; exits 1 if any volume failed.
    Backup {
        #[arg(long)]
        job: Uuid,
    },
    /// Restores a backup into its volume and waits; exits 1 if the restore failed.
    Restore {
        #[arg(long)]
        backup: Uuid,
    },
    /// Plans a retention policy over RFC 3339 timestamps read on stdin, one per line, and prints
    /// the plan as JSON, newest first; exits 2 on bad input. Needs no configuration.
    Retention(crate::retention_cmd::RetentionArgs),
    /// Prunes a job's backups by its retention now; --dry-run prints the plan, changing nothing.
    Prune {
        #[arg(long)]
        job: Uuid,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// HTTP control plane and scheduler.
    All,
    /// HTTP control plane only.
    Web,
    /// Scheduler, runs and consumers only.
    Scheduler,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Retention(args) = &cli.command {
        return Ok(crate::retention_cmd::retention(args));
    }
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let app = Application::build(&config).await?;
            app.engine().store().migrate().await.context("migrate")?;
            println!("schema applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { role, listen } => {
            let app = Application::build(&config).await?;
            let prepared = app
                .prepare_in_background(config.backup.as_ref().map(|b| (b.kind, b.target_json())));
            app.serve(role, listen.as_deref().unwrap_or(&config.listen), prepared)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { job } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            let finished = app.run_job_now(job).await?;
            let mut failed = false;
            for row in &finished.rows {
                failed |= row.status != vardo_actors::model::Status::Success;
                println!(
                    "{} {}/{} {} {} {}",
                    row.id,
                    row.app_name,
                    row.volume_name,
                    row.status.as_str(),
                    row.size_bytes
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    row.storage_path.as_deref().unwrap_or("-"),
                );
            }
            if let Some(why) = &finished.skipped {
                println!("{why}");
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Retention(args) => Ok(crate::retention_cmd::retention(&args)),
        Command::Prune { job, dry_run } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            crate::retention_cmd::prune(&app, job, dry_run).await
        }
        Command::Restore { backup } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            let restore = app.restore_now(backup).await?;
            print!("{}", restore.log);
            println!("restore {} {}", restore.id, restore.status.as_str());
            Ok(if restore.status == vardo_actors::model::Status::Success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

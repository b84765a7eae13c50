//! The command line: `serve`, `migrate`, `config`, `healthcheck`, `backup`, `restore`, `prune`, `retention`.
//!
//! Exit codes: 0 when the command did all it was asked (every volume backed up, the restore
//! succeeded, every prune delete done); 1 when it ran and something failed, or it refused (an
//! unknown id, a job that backed up nothing), the reason on stderr; 2 when it could not run at all
//! (bad configuration or input, the database away).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use uuid::Uuid;
use vardo_actors::messages::RunFinished;
use vardo_actors::model::Status;
use vardo_actors::notice::failure_reason;
use vardo_actors::store::StoreError;

use crate::config::Config;
use crate::role::Role;
use crate::startup::Application;

const EXIT_CODES: &str = "\
Exit codes:
  0  the command did all it was asked: every volume backed up, the restore succeeded, the backup
     is intact, every prune delete done; `status`: no enabled job failed or is overdue
  1  it ran and something failed, or it refused (an unknown job or backup id, a run that backed
     up nothing); the reason on stderr
  2  it could not run at all: bad configuration or input, the database away

On a terminal, backup, restore, verify and drill draw a progress bar on stderr; piped, they print
plain lines; --json prints one JSON object instead.";

#[derive(Debug, Parser)]
#[command(
    name = "vardo-backup",
    version,
    about = "Backs up Docker volumes and restores them",
    after_help = EXIT_CODES
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
    /// Applies schema.sql to the database (idempotent). Needs only the database: exits 0 once
    /// applied, 2 when it cannot be.
    Migrate,
    /// Prints every job of every organization — last run, next run, last success, overdue — from
    /// the database alone (no server, Redis or Docker needed). Exits 0 when no enabled job needs
    /// attention, 1 when one failed its last run or is overdue, 2 when the database cannot be
    /// read.
    Status {
        /// One JSON array of the jobs instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Prints the effective configuration, secrets masked.
    Config,
    /// Asks the engine's `/readyz` (at `listen`, or --url) and exits 0 when it answers 200, 1
    /// otherwise, the reason on stderr: the container image's HEALTHCHECK. Needs no other setting.
    Healthcheck {
        #[arg(long)]
        url: Option<String>,
    },
    /// Runs a backup job now, waits, prints one line per volume; exits 1 unless every volume
    /// succeeded (an unknown job, a run that backed up nothing), the reason on stderr.
    Backup {
        #[arg(long)]
        job: Uuid,
        /// One JSON object on stdout instead of the lines: `runId`, `ok`, `failure` and
        /// `backups` (id, app, volume, status, sizeBytes, storagePath, checksum, kind,
        /// chainPosition, parentBackupId, error). The exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Restores a backup into its volume and waits; exits 1 if the restore failed or the backup
    /// is unknown.
    Restore {
        #[arg(long)]
        backup: Uuid,
        /// One JSON object on stdout (`id`, `status`, `preRestoreBackupId`, `log`) instead of
        /// the log; the exit code is the same.
        #[arg(long)]
        json: bool,
        /// Do not back up the contents the restore replaces first (the restore cannot be undone).
        #[arg(long)]
        no_safety_backup: bool,
    },
    /// Verifies a backup: downloads its object, checks its size and sha256 against the row and
    /// reads its content to the end as a restore would, changing nothing. Prints the log; exits 0
    /// when the backup is intact, 1 when it is not (or could not be verified, or is unknown).
    Verify {
        #[arg(long)]
        backup: Uuid,
        /// One JSON object on stdout (`id`, `status`, `log`); the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Restores a backup of the engine's own database (`self_backup`) into an empty database:
    /// verified first, committed as one transaction. Exits 0 once committed, 1 when refused or
    /// failed (the database at --to is then as it was).
    RestoreSelf {
        #[arg(long)]
        backup: Uuid,
        /// The empty database, as a postgres:// URL (or VARDO_RESTORE_SELF_TO, which keeps its
        /// password off the command line).
        #[arg(long, env = "VARDO_RESTORE_SELF_TO", hide_env_values = true)]
        to: String,
    },
    /// Drills a job: restores the newest backup of each of its volumes into scratch volumes and
    /// containers (never the live ones), checks them and removes them. Prints the log; exits 0
    /// when every volume restored and checked out, 1 when not (or the job is unknown).
    Drill {
        #[arg(long)]
        job: Uuid,
        /// One JSON object on stdout (`id`, `jobId`, `status`, `log`) instead of the log; the
        /// exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Plans a retention policy over RFC 3339 timestamps read on stdin, one per line, and prints
    /// the plan as JSON, newest first; exits 2 on bad input. Needs no configuration.
    Retention(crate::retention_cmd::RetentionArgs),
    /// The age identities sealed in the database that the engine decrypts archives with.
    #[command(subcommand)]
    Identity(crate::identity_cmd::IdentityCommand),
    /// Prunes a job's backups by its retention now; --dry-run prints the plan, changing nothing.
    Prune {
        #[arg(long)]
        job: Uuid,
        #[arg(long)]
        dry_run: bool,
    },
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
        Command::Healthcheck { url } => {
            let url = match url {
                Some(url) => url,
                None => crate::healthcheck_cmd::readyz_url(&config.listen)
                    .map_err(anyhow::Error::msg)?,
            };
            Ok(crate::healthcheck_cmd::healthcheck(&url).await)
        }
        Command::Migrate => {
            let store = crate::status_cmd::database_only(&config)?;
            store.migrate().await.context("migrate")?;
            println!("schema applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => crate::status_cmd::status(&config, json).await,
        Command::Identity(command) => crate::identity_cmd::identity(&config, command).await,
        Command::Serve { role, listen } => {
            let app = Application::build(&config).await?;
            let prepared = app.prepare_in_background(crate::startup::Preparation {
                disable_absent_self_backup: true,
                ..crate::startup::Preparation::of(&config)
            });
            app.serve(role, listen.as_deref().unwrap_or(&config.listen), prepared)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { job, json } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            if let Some(code) = refused(app.engine().store().job(job).await)? {
                return Ok(code);
            }
            let finished =
                crate::progress_bar::around(app.engine(), json, app.run_job_now(job)).await?;
            Ok(report_run(&finished, json))
        }
        Command::Retention(args) => Ok(crate::retention_cmd::retention(&args)),
        Command::Prune { job, dry_run } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            if let Some(code) = refused(app.engine().store().job(job).await)? {
                return Ok(code);
            }
            crate::retention_cmd::prune(&app, job, dry_run).await
        }
        Command::Restore {
            backup,
            no_safety_backup,
            json,
        } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            if let Some(code) = refused(app.engine().store().backup(backup).await)? {
                return Ok(code);
            }
            let restore = crate::progress_bar::around(
                app.engine(),
                json,
                app.restore_now(backup, !no_safety_backup),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": restore.id, "status": restore.status.as_str(),
                        "preRestoreBackupId": restore.pre_restore_backup_id, "log": restore.log,
                    })
                );
                return Ok(exit_of(restore.status));
            }
            if let Some(undo) = restore.pre_restore_backup_id {
                println!("safety backup {undo}: undo with `vardo-backup restore --backup {undo}`");
            }
            Ok(report_end(
                "restore",
                restore.id,
                restore.status,
                &restore.log,
            ))
        }
        Command::Verify { backup, json } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            if let Some(code) = refused(app.engine().store().backup(backup).await)? {
                return Ok(code);
            }
            let v = crate::progress_bar::around(app.engine(), json, app.verify_now(backup)).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": v.id, "status": v.status.as_str(), "log": v.log })
                );
                return Ok(exit_of(v.status));
            }
            Ok(report_end("verification", v.id, v.status, &v.log))
        }
        Command::RestoreSelf { backup, to } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            if let Some(code) = refused(app.engine().store().backup(backup).await)? {
                return Ok(code);
            }
            let to = secrecy::SecretString::from(to);
            match vardo_actors::self_restore::restore_self(app.engine(), backup, &to).await {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    eprintln!("error: restore-self of backup {backup}: {why}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Drill { job, json } => {
            let app = Application::build(&config).await?;
            app.prepare(&config).await?;
            if let Some(code) = refused(app.engine().store().job(job).await)? {
                return Ok(code);
            }
            let d = crate::progress_bar::around(app.engine(), json, app.drill_now(job)).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": d.id, "jobId": d.job_id, "status": d.status.as_str(), "log": d.log,
                    })
                );
                return Ok(exit_of(d.status));
            }
            Ok(report_end("drill", d.id, d.status, &d.log))
        }
    }
}

/// Prints a restore's or verification's log and `{what} {id} {status}`; exit 0 on success, else
/// 1 with the log's last line on stderr.
fn report_end(what: &str, id: Uuid, status: Status, log: &str) -> ExitCode {
    print!("{log}");
    println!("{what} {id} {}", status.as_str());
    if status == Status::Success {
        return ExitCode::SUCCESS;
    }
    let why = log
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no reason was recorded");
    eprintln!("error: {what} {id} {}: {why}", status.as_str());
    ExitCode::FAILURE
}

/// An id the command was given that names nothing is refused: the reason on stderr, exit 1.
/// Other failures of the look-up (the database away) are the command's own error (exit 2).
fn refused<T>(lookup: Result<T, StoreError>) -> anyhow::Result<Option<ExitCode>> {
    match lookup {
        Ok(_) => Ok(None),
        Err(e @ StoreError::NotFound { .. }) => {
            eprintln!("error: {e}");
            Ok(Some(ExitCode::FAILURE))
        }
        Err(e) => Err(e.into()),
    }
}

/// Prints one line per volume on stdout (`id app/volume status size path`) and, on stderr, the
/// reason of each volume that failed, or why the run backed up nothing. Exit 0 only when the run
/// has rows and every one succeeded.
/// 0 for a success, else 1.
fn exit_of(status: Status) -> ExitCode {
    if status == Status::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The run as one JSON object (see `backup --json`).
fn run_json(finished: &RunFinished, ok: bool) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = finished
        .rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "id": row.id, "app": row.app_name, "volume": row.volume_name,
                "status": row.status.as_str(), "sizeBytes": row.size_bytes,
                "storagePath": row.storage_path, "checksum": row.checksum,
                "kind": row.chain.kind.as_str(), "chainPosition": row.chain.position,
                "parentBackupId": row.chain.parent_backup_id,
                "error": (row.status != Status::Success).then(|| failure_reason(row)),
            })
        })
        .collect();
    serde_json::json!({
        "runId": finished.run_id, "ok": ok,
        "failure": finished.failure.as_ref().map(|f| f.message.clone()),
        "backups": rows,
    })
}

fn report_run(finished: &RunFinished, json: bool) -> ExitCode {
    let ok = !finished.rows.is_empty() && finished.rows.iter().all(|r| r.status == Status::Success);
    if json {
        println!("{}", run_json(finished, ok));
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    for row in &finished.rows {
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
        if row.status != Status::Success {
            eprintln!(
                "error: {}/{} {}: {}",
                row.app_name,
                row.volume_name,
                row.status.as_str(),
                failure_reason(row)
            );
        }
    }
    if finished.rows.is_empty() {
        match &finished.failure {
            Some(f) => eprintln!(
                "error: run {} backed up nothing: {}",
                finished.run_id, f.message
            ),
            None => eprintln!(
                "error: run {}: its volumes could not be read back; see the history",
                finished.run_id
            ),
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

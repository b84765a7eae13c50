//! `vardo-backup identity`: the age identities sealed in the database (with VARDO_SECRET_KEY)
//! that the engine decrypts archives with, besides VARDO_AGE_IDENTITY_FILE. Only recipients
//! and fingerprints are printed; a generated identity is written to a file of the user's
//! choosing (mode 0600) so that it can also be kept outside the database.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use secrecy::ExposeSecret as _;
use vardo_actors::encryption::{fingerprint, Keyring};

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Creates a new X25519 identity, writes it to a new file (`--out`, mode 0600; an existing
    /// file is never replaced), seals it in the database and prints its recipient (put it in a
    /// target's `encryption.recipients`). Keep the file somewhere safe, away from the database:
    /// it opens the archives by hand when the database is lost.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Seals the identities of an age identity file (or an unencrypted OpenSSH private key) in
    /// the database.
    Import {
        #[arg(long)]
        file: PathBuf,
    },
    /// Lists the sealed identities (recipient and fingerprint), and those of
    /// VARDO_AGE_IDENTITY_FILE.
    List,
    /// Removes a sealed identity, named by its recipient or fingerprint; refused while a target
    /// or a successful backup is encrypted to it, unless `--force` (archives encrypted only to it
    /// can then no longer be opened by the engine).
    Remove {
        which: String,
        #[arg(long)]
        force: bool,
    },
}

pub async fn identity(config: &Config, command: IdentityCommand) -> anyhow::Result<ExitCode> {
    let store = crate::status_cmd::database_only(config)?;
    if !matches!(command, IdentityCommand::List) {
        config.required_secret_key()?;
    }
    store.migrate().await.context("migrate")?;
    match command {
        IdentityCommand::Generate { out } => {
            let (text, recipient) = Keyring::generate();
            write_new(&out, text.expose_secret())?;
            let keyring = Keyring::parse(text.expose_secret(), "the new identity")
                .map_err(anyhow::Error::msg)?;
            store.add_identities(&keyring).await?;
            println!("{recipient}");
            eprintln!(
                "sealed identity {} in the database, written to {}",
                fingerprint(&recipient),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::Import { file } => {
            let keyring = Keyring::load(&file).map_err(anyhow::Error::msg)?;
            let added = store.add_identities(&keyring).await?;
            for recipient in keyring.recipients() {
                let state = if added.contains(&recipient) {
                    "sealed"
                } else {
                    "already stored"
                };
                println!("{} {recipient} {state}", fingerprint(&recipient));
            }
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::List => {
            for s in store.list_identities().await? {
                println!("{} {} database", s.fingerprint, s.recipient);
            }
            if let Some(path) = &config.encryption.identity_file {
                let keyring = Keyring::load(path).map_err(anyhow::Error::msg)?;
                for recipient in keyring.recipients() {
                    println!("{} {recipient} {}", fingerprint(&recipient), path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::Remove { which, force } => {
            let users = store.identity_users(&which).await?;
            if users > 0 && !force {
                eprintln!(
                    "error: {users} targets or successful backups are encrypted to {which}; \
                     removing it leaves them to other identities only (--force to remove anyway)"
                );
                return Ok(ExitCode::FAILURE);
            }
            if store.remove_identity(&which).await? {
                println!("removed {which}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("error: no sealed identity has the recipient or fingerprint {which:?}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

/// Writes `text` to a new file readable by its owner only; an existing file is never replaced.
fn write_new(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

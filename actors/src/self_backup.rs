//! The engine's own database as a backup source (`self_backup` in vardo.yml): a system job of the
//! reserved system organization backs up its app `vardo-engine`, volume `database` (kind
//! `engine`), with `pg_dump` of `DATABASE_URL` run on the engine's host — the same rows,
//! retention, notifications and verification as any job. Its archives are plain single-database
//! dumps; `vardo-backup restore-self` replays one into an empty database.
//!
//! Only the system organization can hold a volume of kind `engine`: the kind is never read from
//! the API or the deploy pipeline (see [`crate::model::VolumeKind`]), its slug is reserved, and a
//! backup refuses an `engine` volume of any other organization.

use std::io;
use std::process::Stdio;

use futures::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use crate::model::{App, Job, RetentionPolicy, Volume, VolumeKind};
use crate::store::{Store, StoreError};
use crate::stream::ByteStream;

/// The system organization (fixed, so that every engine of one database agrees on it).
pub const SYSTEM_ORG_ID: Uuid = Uuid::from_u128(0x7661_7264_6f00_4000_8000_0000_0000_0001);
pub const SYSTEM_ORG_SLUG: &str = "vardo-system";
/// The system job that backs the engine's database up.
pub const SYSTEM_JOB_ID: Uuid = Uuid::from_u128(0x7661_7264_6f00_4000_8000_0000_0000_0002);
pub const ENGINE_APP_ID: &str = "vardo-engine";
pub const ENGINE_VOLUME: &str = "database";

/// What `self_backup:` asks for.
#[derive(Debug, Clone)]
pub struct SelfBackupPlan {
    pub schedule: String,
    pub timezone: String,
    /// A system target's id.
    pub target_id: Uuid,
    pub retention: RetentionPolicy,
    pub compression: crate::model::Compression,
    pub notify_on_success: bool,
    pub notify_on_failure: bool,
}

/// Creates or updates the system organization, its app and the system job; with `None`, disables
/// the system job if there is one.
pub async fn ensure(store: &Store, plan: Option<&SelfBackupPlan>) -> Result<(), StoreError> {
    let Some(plan) = plan else {
        return store.disable_job(SYSTEM_JOB_ID).await;
    };
    store
        .ensure_system_organization(SYSTEM_ORG_ID, SYSTEM_ORG_SLUG)
        .await?;
    store
        .upsert_app(&App {
            id: ENGINE_APP_ID.to_owned(),
            organization_id: SYSTEM_ORG_ID,
            name: ENGINE_APP_ID.to_owned(),
            volumes: vec![Volume {
                name: ENGINE_VOLUME.to_owned(),
                persistent: true,
                kind: VolumeKind::Engine,
            }],
        })
        .await?;
    store.upsert_system_job(SYSTEM_JOB_ID, plan).await
}

/// Whether a job's volume of kind `engine` may be backed up: only the system organization's.
pub fn allowed(job: &Job) -> bool {
    job.organization_id == SYSTEM_ORG_ID
}

/// `pg_dump` of the engine's database on this host, as a byte stream that ends with an error
/// unless `pg_dump` exits 0. The password travels in `PGPASSWORD`, never on the command line.
pub fn dump(database_url: &SecretString) -> Result<(ByteStream, String), String> {
    let (url, password) = split_password(database_url.expose_secret())?;
    let mut cmd = tokio::process::Command::new("pg_dump");
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--clean",
        "--if-exists",
        "-d",
    ])
    .arg(&url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    let mut child = cmd.spawn().map_err(|e| {
        format!("could not start pg_dump on the engine's host (install the PostgreSQL client): {e}")
    })?;
    let stdout = child.stdout.take().ok_or("pg_dump has no stdout")?;
    let stderr = child.stderr.take().ok_or("pg_dump has no stderr")?;
    let stream = async_stream::stream! {
        let mut child = child;
        let errors = tokio::spawn(async move {
            let mut text = String::new();
            let mut stderr = tokio::io::AsyncReadExt::take(stderr, 64 * 1024);
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            text
        });
        let mut out = tokio_util::io::ReaderStream::new(stdout);
        while let Some(chunk) = out.next().await {
            let failed = chunk.is_err();
            yield chunk;
            if failed {
                return;
            }
        }
        let status = child.wait().await;
        let stderr = errors.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => yield Err(io::Error::other(format!(
                "pg_dump of the engine's database exited with {s}: {}",
                stderr.trim()
            ))),
            Err(e) => yield Err(io::Error::other(format!("pg_dump: {e}"))),
        }
    };
    Ok((
        Box::pin(stream),
        format!("pg_dump of the engine's own database {url}"),
    ))
}

/// The URL without its password, and the password.
pub fn split_password(url: &str) -> Result<(String, Option<String>), String> {
    let mut parsed =
        reqwest::Url::parse(url).map_err(|e| format!("DATABASE_URL is not a URL: {e}"))?;
    let password = parsed.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    parsed
        .set_password(None)
        .map_err(|()| "DATABASE_URL cannot hold a password".to_owned())?;
    Ok((parsed.to_string(), password))
}

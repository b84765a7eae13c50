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

use crate::model::RetentionPolicy;
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
/// the system job if there is one (only `serve` asks that: a command run with another vardo.yml
/// leaves it alone).
pub async fn ensure(store: &Store, plan: Option<&SelfBackupPlan>) -> Result<(), StoreError> {
    let Some(plan) = plan else {
        return store.disable_job(SYSTEM_JOB_ID).await;
    };
    store
        .ensure_system_organization(SYSTEM_ORG_ID, SYSTEM_ORG_SLUG)
        .await?;
    store
        .ensure_engine_app(SYSTEM_ORG_ID, ENGINE_APP_ID, ENGINE_VOLUME)
        .await?;
    store.upsert_system_job(SYSTEM_JOB_ID, plan).await
}

/// The connection of a `postgres://` URL (or `key=value` string) as libpq's environment — host,
/// port, user, password, database, sslmode — so that `pg_dump` and `psql` get it without any of it
/// on their command line, and what the log may say of it (no password).
pub struct Libpq {
    pub env: Vec<(&'static str, String)>,
    pub describe: String,
}

/// libpq variables a child process must not inherit: only [`Libpq::env`] says where it connects.
pub const INHERITED: [&str; 12] = [
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGOPTIONS",
    "PGAPPNAME",
];

pub fn libpq(url: &str) -> Result<Libpq, String> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("the database URL cannot be read: {e}"))?;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let database = config.get_dbname().unwrap_or(&user).to_owned();
    let mut env = vec![("PGUSER", user.clone()), ("PGDATABASE", database.clone())];
    if !hosts.is_empty() {
        env.push(("PGHOST", hosts.join(",")));
    }
    if !ports.is_empty() {
        env.push(("PGPORT", ports.join(",")));
    }
    if let Some(pw) = config.get_password() {
        env.push(("PGPASSWORD", String::from_utf8_lossy(pw).into_owned()));
    }
    env.push((
        "PGSSLMODE",
        match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => "disable",
            tokio_postgres::config::SslMode::Require => "require",
            _ => "prefer",
        }
        .to_owned(),
    ));
    Ok(Libpq {
        env,
        describe: format!(
            "database {database} as {user} on {}",
            if hosts.is_empty() {
                "localhost".to_owned()
            } else {
                hosts.join(",")
            }
        ),
    })
}

/// `program` with only `libpq`'s connection (nothing inherited, nothing on the command line).
pub fn command(program: &str, libpq: &Libpq) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    for k in INHERITED {
        cmd.env_remove(k);
    }
    cmd.envs(libpq.env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

/// Reads a child's stderr to its end, keeping the first 64 KiB (the rest is drained, so that a
/// chatty child never blocks on a full pipe).
pub async fn drain(mut stderr: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = (64 * 1024usize).saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// `pg_dump` of the engine's database on this host, as a byte stream that ends with an error
/// unless `pg_dump` exits 0. The connection travels in libpq's environment, never on the command
/// line or in the log.
pub fn dump(database_url: &SecretString) -> Result<(ByteStream, String), String> {
    let libpq = libpq(database_url.expose_secret())?;
    let mut cmd = command("pg_dump", &libpq);
    cmd.args(["--no-owner", "--no-privileges", "--clean", "--if-exists"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        format!("could not start pg_dump on the engine's host (install the PostgreSQL client): {e}")
    })?;
    let stdout = child.stdout.take().ok_or("pg_dump has no stdout")?;
    let stderr = child.stderr.take().ok_or("pg_dump has no stderr")?;
    let stream = async_stream::stream! {
        let mut child = child;
        let errors = tokio::spawn(drain(stderr));
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
        format!("pg_dump of the engine's own {}", libpq.describe),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(l: &Libpq, k: &str) -> Option<String> {
        l.env
            .iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn passwords_go_to_the_environment_never_to_the_description() {
        for url in [
            "postgres://vardo:s3cr%40t@db.example:5433/engine",
            "postgres://vardo@db.example:5433/engine?password=s3cr@t",
            "host=db.example port=5433 user=vardo password=s3cr@t dbname=engine",
        ] {
            let l = libpq(url).expect(url);
            assert_eq!(env(&l, "PGPASSWORD").as_deref(), Some("s3cr@t"), "{url}");
            assert_eq!(env(&l, "PGDATABASE").as_deref(), Some("engine"), "{url}");
            assert_eq!(env(&l, "PGPORT").as_deref(), Some("5433"), "{url}");
            assert!(!l.describe.contains("s3cr"), "{}", l.describe);
        }
        let socket = libpq("postgresql:///engine?host=/run/postgresql&user=vardo").expect("socket");
        assert_eq!(env(&socket, "PGHOST").as_deref(), Some("/run/postgresql"));
        assert_eq!(env(&socket, "PGPASSWORD"), None);
        assert!(libpq("not a url at all").is_err());
    }
}

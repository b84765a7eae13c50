//! What the `VolumeRunner` actor (volume_runner/mod.rs) does: yields a found Docker volume's archive as
//! a byte stream — a tar of its files for generic volumes, a `pg_dump` from the database container
//! for Postgres volumes.

use std::io;
use std::path::PathBuf;

use futures::StreamExt as _;

use crate::docker::{ContainerRef, DockerClient, DockerError};
use crate::model::{Volume, VolumeKind};
use crate::stream::ByteStream;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume not found: neither {blue} nor {green} exists")]
    NotFound { blue: String, green: String },
    #[error(
        "no running container mounts {volume}: a Postgres volume is dumped with pg_dump inside its running database container"
    )]
    NoDatabaseContainer { volume: String },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the archive was given up before it opened")]
    GivenUp,
    #[error("the volume runner is not running: {0}")]
    Unavailable(String),
}

/// An archive being produced, and where it comes from.
pub struct VolumeArchive {
    pub docker_volume: String,
    /// `tar` or `sql`, before the compression suffix.
    pub extension: &'static str,
    pub stream: ByteStream,
    /// What the log should say about the source.
    pub source: String,
    /// For a volume read from its host folder: what the read met, once it ended.
    pub host_read: Option<tokio::sync::oneshot::Receiver<crate::host_volume::TarReport>>,
    /// For a `pg_dump`: its database session, to end when the archive is given up before its end.
    pub session: Option<PgSession>,
}

/// How an archive is read.
#[derive(Debug, Clone)]
pub struct ArchiveOptions {
    /// Read file volumes from their host folder when it can be read here.
    pub from_host: bool,
    /// The run's stall deadline: `pg_dump` waits at most twice as long for its table locks, so a
    /// dump whose run gave up ends by itself even if its session could not be ended.
    pub stall_deadline: std::time::Duration,
    /// Names the `pg_dump` session (`application_name`), so that it can be ended by name.
    pub session_name: String,
}

/// Opens the archive stream of a volume already found. File volumes are read from their folder on
/// the Docker host when `from_host` is set and the folder can be read there, else through
/// Docker's archive API.
#[tracing::instrument(skip(docker))]
pub async fn open_archive(
    docker: &DockerClient,
    docker_volume: &str,
    volume: &Volume,
    options: &ArchiveOptions,
) -> Result<VolumeArchive, VolumeError> {
    if volume.kind == VolumeKind::Postgres {
        return pg_dump(docker, docker_volume, options).await;
    }
    let mut source = format!("reading {docker_volume} through the Docker archive API");
    if options.from_host {
        match readable_host_folder(docker, docker_volume).await? {
            Ok(folder) => {
                let source = format!(
                    "reading {docker_volume} from its folder on the Docker host, {}",
                    folder.display()
                );
                let (stream, report) = crate::host_volume::archive(folder);
                return Ok(VolumeArchive {
                    docker_volume: docker_volume.to_owned(),
                    extension: "tar",
                    source,
                    stream,
                    host_read: Some(report),
                    session: None,
                });
            }
            Err(why) => source.push_str(&format!(" ({why})")),
        }
    }
    Ok(VolumeArchive {
        docker_volume: docker_volume.to_owned(),
        extension: "tar",
        stream: docker.export_volume(docker_volume).await?,
        source,
        host_read: None,
        session: None,
    })
}

/// The volume's host folder if this process can read it, else why not.
async fn readable_host_folder(
    docker: &DockerClient,
    docker_volume: &str,
) -> Result<Result<PathBuf, String>, VolumeError> {
    let Some(folder) = docker.host_folder(docker_volume).await? else {
        return Ok(Err(
            "its driver or options keep its files elsewhere than a host folder".to_owned(),
        ));
    };
    match tokio::fs::read_dir(&folder).await {
        Ok(_) => Ok(Ok(folder)),
        Err(e) => Ok(Err(format!(
            "its host folder {} cannot be read here: {e}",
            folder.display()
        ))),
    }
}

async fn pg_dump(
    docker: &DockerClient,
    docker_volume: &str,
    options: &ArchiveOptions,
) -> Result<VolumeArchive, VolumeError> {
    let container = docker
        .container_using_volume(docker_volume)
        .await?
        .ok_or_else(|| VolumeError::NoDatabaseContainer {
            volume: docker_volume.to_owned(),
        })?;
    let login = PgLogin::of(&container);
    let others = other_databases(docker, &container.id, &login).await;
    let lock_wait = format!(
        "--lock-wait-timeout={}s",
        options.stall_deadline.as_secs().saturating_mul(2).max(1)
    );
    let cmd = login.command(&["pg_dump", "--clean", "--if-exists", &lock_wait]);
    let mut env = login.env();
    env.push(format!("PGAPPNAME={}", options.session_name));
    let (stdout, handle) = docker.exec_read(&container.id, cmd, env).await?;
    // The dump is only whole if pg_dump says so: its exit status ends the stream, and a failure
    // becomes the stream's error, which aborts the upload.
    let stream = async_stream::stream! {
        let mut stdout = stdout;
        while let Some(chunk) = stdout.next().await {
            let failed = chunk.is_err();
            yield chunk;
            if failed {
                return;
            }
        }
        match handle.finish().await {
            Ok(outcome) if outcome.exit_code == 0 => {}
            Ok(outcome) => yield Err(io::Error::other(format!(
                "pg_dump exited with status {}: {}",
                outcome.exit_code,
                outcome.stderr.trim()
            ))),
            Err(e) => yield Err(io::Error::other(format!("pg_dump: {e}"))),
        }
    };
    Ok(VolumeArchive {
        docker_volume: docker_volume.to_owned(),
        extension: "sql",
        stream: Box::pin(stream),
        source: format!(
            "pg_dump of database {} as {} in container {}{}",
            login.database,
            login.user,
            container.name,
            match others {
                Some(others) if !others.is_empty() => format!(
                    "; warning: the cluster's other databases ({}) and its roles are not in this \
                     backup (only POSTGRES_DB is dumped)",
                    others.join(", ")
                ),
                Some(_) => String::new(),
                None => "; the cluster's other databases could not be listed".to_owned(),
            }
        ),
        host_read: None,
        session: Some(PgSession {
            container: container.id.clone(),
            login,
            name: options.session_name.clone(),
        }),
    })
}

/// The cluster's databases other than the one dumped (templates aside), so that the log says what a
/// dump of one database leaves out; None when they cannot be listed.
async fn other_databases(
    docker: &DockerClient,
    container: &str,
    login: &PgLogin,
) -> Option<Vec<String>> {
    let sql = "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname";
    let cmd = login.command(&["psql", "-X", "-tA", "-c", sql]);
    let out = docker
        .exec_collect(container, cmd, login.env())
        .await
        .ok()
        .filter(|o| o.exit_code == 0)?;
    Some(
        out.stdout
            .lines()
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != login.database)
            .map(str::to_owned)
            .collect(),
    )
}

/// A `psql` or `pg_dump` session the engine started in a database container, by its
/// `application_name`.
pub struct PgSession {
    pub container: String,
    pub login: PgLogin,
    pub name: String,
}

impl PgSession {
    /// Ends the session on the server (`pg_terminate_backend`): Docker cannot kill an exec'd
    /// process, and one blocked on a lock never notices that nobody reads its output any more.
    /// Its open transaction, if any, is rolled back. Failures are logged: the caller already
    /// reports another error.
    pub async fn end(&self, docker: &DockerClient) {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{}' AND pid <> pg_backend_pid()",
            self.name.replace('\'', "''")
        );
        let cmd = self.login.command(&["psql", "-X", "-tA", "-c", &sql]);
        match docker
            .exec_collect(&self.container, cmd, self.login.env())
            .await
        {
            Ok(out) if out.exit_code == 0 => {
                tracing::info!(session = %self.name, ended = out.stdout.trim(), "ended the database session of a stopped run");
            }
            Ok(out) => {
                tracing::warn!(session = %self.name, stderr = out.stderr.trim(), "could not end the database session of a stopped run");
            }
            Err(e) => {
                tracing::warn!(session = %self.name, error = %e, "could not end the database session of a stopped run");
            }
        }
    }
}

/// How to log in to the database of a container made from a Postgres image: the user and database
/// of its `POSTGRES_USER` / `POSTGRES_DB` (default `postgres`), its `POSTGRES_PASSWORD` if any.
pub struct PgLogin {
    pub user: String,
    pub database: String,
    password: Option<String>,
}

impl PgLogin {
    pub fn of(container: &ContainerRef) -> Self {
        let user = container
            .env
            .get("POSTGRES_USER")
            .cloned()
            .unwrap_or_else(|| "postgres".to_owned());
        Self {
            database: container
                .env
                .get("POSTGRES_DB")
                .cloned()
                .unwrap_or_else(|| user.clone()),
            password: container.env.get("POSTGRES_PASSWORD").cloned(),
            user,
        }
    }

    /// `program args… --no-password -U user -d database`.
    pub fn command(&self, program_and_args: &[&str]) -> Vec<String> {
        let mut cmd: Vec<String> = program_and_args.iter().map(|s| (*s).to_owned()).collect();
        cmd.extend(["--no-password", "-U", &self.user, "-d", &self.database].map(str::to_owned));
        cmd
    }

    /// The exec's environment: the password, when the container has one.
    pub fn env(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|pw| format!("PGPASSWORD={pw}"))
            .collect()
    }
}

//! What the `VolumeRunner` actor (volume_runner/mod.rs) does: yields a found Docker volume's archive as
//! a byte stream — a tar of its files for generic volumes, a `pg_dump` from the database container
//! for Postgres volumes.

use std::path::PathBuf;

use crate::chain::manifest::Entry;
use crate::docker::{DockerClient, DockerError};
use crate::host_volume::{ChainWalk, TarReport};
use crate::model::{Volume, VolumeKind};
use crate::pg::{PgLogin, PgSession};
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
    #[error("{0}")]
    Postgres(String),
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
    pub host_read: Option<tokio::sync::oneshot::Receiver<TarReport>>,
    /// For a `pg_dump`: its database session, to end when the archive is given up before its end.
    pub session: Option<PgSession>,
    /// For a read of a chain's archive (asked for with [`ArchiveOptions::chain`] and possible:
    /// the volume is read from its host folder): what the read met and the manifest of the tree.
    pub manifest: Option<tokio::sync::oneshot::Receiver<(TarReport, Vec<Entry>)>>,
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
    /// For a backup in a chain of incremental backups: what it compares with (from the host
    /// folder by ctime and inode too, through Docker's archive API by each entry's header).
    pub chain: Option<ChainWalk>,
    /// Counts what is read from Docker for a chain's archive, of which only the changed entries
    /// leave (the stall watch would see nothing move while unchanged entries pass).
    pub read_meter: Option<crate::progress::Meter>,
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
                if let Some(chain) = options.chain.clone() {
                    let (stream, manifest) = crate::host_volume::archive_chain(folder, chain);
                    return Ok(VolumeArchive {
                        docker_volume: docker_volume.to_owned(),
                        extension: "tar",
                        source,
                        stream,
                        host_read: None,
                        session: None,
                        manifest: Some(manifest),
                    });
                }
                let (stream, report) = crate::host_volume::archive(folder);
                return Ok(VolumeArchive {
                    docker_volume: docker_volume.to_owned(),
                    extension: "tar",
                    source,
                    stream,
                    host_read: Some(report),
                    session: None,
                    manifest: None,
                });
            }
            Err(why) => source.push_str(&format!(" ({why})")),
        }
    }
    let export = docker.export_volume(docker_volume).await?;
    if let Some(chain) = options.chain.clone() {
        let export = match options.read_meter.clone() {
            Some(meter) => meter.stream(export),
            None => export,
        };
        if chain.previous.is_some() {
            source.push_str(
                "; each entry's header is compared with the last backup's manifest and only \
                 what changed is stored",
            );
        }
        let (stream, manifest) = crate::chain::export::from_export(export, chain);
        return Ok(VolumeArchive {
            docker_volume: docker_volume.to_owned(),
            extension: "tar",
            stream,
            source,
            host_read: None,
            session: None,
            manifest: Some(manifest),
        });
    }
    Ok(VolumeArchive {
        docker_volume: docker_volume.to_owned(),
        extension: "tar",
        stream: export,
        source,
        host_read: None,
        session: None,
        manifest: None,
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
    let plan = crate::pg::dump::plan(docker, &container.id, &login)
        .await
        .map_err(VolumeError::Postgres)?;
    let source = format!(
        "pg_dump of the cluster in container {} as {}: {}",
        container.name,
        login.user,
        plan.describe()
    );
    let lock_wait = format!(
        "--lock-wait-timeout={}s",
        options.stall_deadline.as_secs().saturating_mul(2).max(1)
    );
    let args = ["pg_dump", "--clean", "--if-exists", &lock_wait].map(str::to_owned);
    let mut env = login.env();
    env.push(format!("PGAPPNAME={}", options.session_name));
    let session = PgSession {
        container: container.id.clone(),
        login: PgLogin::of(&container),
        name: options.session_name.clone(),
    };
    let stream = crate::pg::dump::stream(
        docker.clone(),
        container.id.clone(),
        login,
        env,
        args.to_vec(),
        plan,
    );
    Ok(VolumeArchive {
        docker_volume: docker_volume.to_owned(),
        extension: "sql",
        stream,
        source,
        host_read: None,
        session: Some(session),
        manifest: None,
    })
}

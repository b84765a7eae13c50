//! RestoreRun: download → verify → stage → swap for file volumes; verify, then `psql` in one
//! transaction for database dumps. A restore that fails at any point leaves the volume as it was.

use actix::prelude::*;
use uuid::Uuid;

use crate::codec::{self, Digest, Payload};
use crate::docker::{DockerClient, DockerError, HelperContainer};
use crate::engine::Engine;
use crate::lock::{LockError, VolumeLock};
use crate::messages::RestoreEnded;
use crate::model::{Backup, Compression, Status, VolumeKind};
use crate::run::{panic_message, RunSupervisor};
use crate::storage::{StorageError, TargetStorage};
use crate::store::StoreError;
use crate::volume_runner::PgLogin;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("backup {id} cannot be restored: {why}")]
    NotRestorable { id: Uuid, why: String },
    #[error("{0}")]
    Failed(String),
}

/// One restore; reports its end to the supervisor, which records it.
pub struct RestoreRun {
    engine: Engine,
    restore_id: Uuid,
    supervisor: Addr<RunSupervisor>,
}

impl RestoreRun {
    pub fn new(engine: Engine, restore_id: Uuid, supervisor: Addr<RunSupervisor>) -> Self {
        Self {
            engine,
            restore_id,
            supervisor,
        }
    }
}

impl Actor for RestoreRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let work = actix::spawn(execute(self.engine.clone(), self.restore_id));
        let every = self.engine.settings().heartbeat_interval;
        ctx.run_interval(every, |act, _| {
            let (engine, id) = (act.engine.clone(), act.restore_id);
            actix::spawn(async move {
                if let Err(e) = engine.store().heartbeat_restore(id).await {
                    tracing::warn!(restore_id = %id, error = %e, "heartbeat failed");
                }
            });
        });
        let watch = async move {
            match work.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("restore failed: {e}")),
                Err(join) if join.is_panic() => Err(format!(
                    "restore crashed: {}",
                    panic_message(join.into_panic())
                )),
                Err(_) => Err("restore was cancelled (engine shutting down)".to_owned()),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|outcome, act, ctx| {
            act.supervisor.do_send(RestoreEnded {
                restore_id: act.restore_id,
                outcome,
            });
            ctx.stop();
        }));
    }
}

fn compression_of(key: &str) -> Option<Compression> {
    if key.ends_with(".gz") {
        Some(Compression::Gzip)
    } else if key.ends_with(".zst") {
        Some(Compression::Zstd)
    } else {
        None
    }
}

fn expected_digest(backup: &Backup) -> Option<Digest> {
    Some(Digest {
        size: u64::try_from(backup.size_bytes?).ok()?,
        sha256_hex: backup
            .checksum
            .as_deref()?
            .strip_prefix("sha256:")?
            .to_owned(),
    })
}

#[tracing::instrument(skip(engine))]
async fn execute(engine: Engine, restore_id: Uuid) -> Result<(), RestoreError> {
    let store = engine.store();
    store.mark_restore_running(restore_id).await?;
    let log = |line: String| async move { store.append_restore_log(restore_id, &line).await };
    let restore = store.restore(restore_id).await?;
    let backup = store.backup(restore.backup_id).await?;
    let not_restorable = |why: &str| RestoreError::NotRestorable {
        id: backup.id,
        why: why.to_owned(),
    };
    if backup.status != Status::Success {
        return Err(not_restorable(&format!(
            "its status is {}; only successful backups hold an archive",
            backup.status.as_str()
        )));
    }
    let key = backup
        .storage_path
        .clone()
        .ok_or_else(|| not_restorable("no storage path recorded"))?;
    let expected =
        expected_digest(&backup).ok_or_else(|| not_restorable("no checksum recorded"))?;
    let compression =
        compression_of(&key).ok_or_else(|| not_restorable("unknown archive format"))?;
    let target_id = backup
        .target_id
        .ok_or_else(|| not_restorable("its target was deleted"))?;
    let target = store.target(target_id).await?;
    let storage = TargetStorage::open(&target.config, engine.settings().allow_local_backups)?;
    let docker = engine.docker().await?;

    let volume = match docker
        .find_app_volume(&backup.app_name, &backup.volume_name)
        .await?
    {
        Some(v) => v,
        None => {
            let blue = format!("{}-blue_{}", backup.app_name, backup.volume_name);
            docker.create_volume(&blue).await?;
            log(format!("no volume existed; created {blue}")).await?;
            blue
        }
    };
    log(format!(
        "restoring {key} ({} bytes, sha256:{}) from target {} into volume {volume}",
        expected.size, expected.sha256_hex, target.name
    ))
    .await?;
    let lock = VolumeLock::acquire(engine.redis(), &volume).await?;
    let result = match backup.volume_kind {
        VolumeKind::Generic => {
            restore_files(
                docker,
                &storage,
                &key,
                compression,
                expected,
                &volume,
                restore_id,
                &log,
            )
            .await
        }
        VolumeKind::Postgres => {
            restore_dump(docker, &storage, &key, compression, expected, &volume, &log).await
        }
    };
    lock.release().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn restore_files<F, Fut>(
    docker: &DockerClient,
    storage: &TargetStorage,
    key: &str,
    compression: Compression,
    expected: Digest,
    volume: &str,
    restore_id: Uuid,
    log: &F,
) -> Result<(), RestoreError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let helper = docker.start_helper(volume, false).await?;
    let staging = format!(".vardo-restore-{restore_id}");
    let old = format!(".vardo-old-{restore_id}");
    let result = stage_and_swap(
        &helper,
        storage,
        key,
        compression,
        expected,
        &staging,
        &old,
        log,
    )
    .await;
    if result.is_err() {
        let cleanup = helper.sh(&format!("rm -rf /volume/{staging}")).await;
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, "could not remove the staging folder");
        }
    }
    if let Err(e) = helper.remove().await {
        tracing::warn!(error = %e, "could not remove the helper container");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn stage_and_swap<F, Fut>(
    helper: &HelperContainer,
    storage: &TargetStorage,
    key: &str,
    compression: Compression,
    expected: Digest,
    staging: &str,
    old: &str,
    log: &F,
) -> Result<(), RestoreError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    sh_ok(
        helper,
        &format!("mkdir /volume/{staging}"),
        "create the staging folder",
    )
    .await?;
    let download = storage.download(key).await?;
    let (tar, verified) = codec::unpack(download, compression, Payload::Tar, expected);
    let put = helper.put_archive(&format!("/volume/{staging}"), tar).await;
    let verified = verified.await;
    match (put, verified) {
        (Ok(()), Ok(held)) if held.is_empty() => {}
        (Ok(()), Ok(held)) => {
            helper
                .create_symlinks(&format!("/volume/{staging}"), &held)
                .await?;
            log(format!(
                "created {} symlinks that point outside the volume after extraction",
                held.len()
            ))
            .await?;
        }
        (Err(e), _) => {
            return Err(RestoreError::Failed(format!(
                "extracting the archive failed: {e}"
            )))
        }
        (Ok(()), Err(_)) => {
            return Err(RestoreError::Failed(
                "the archive could not be verified to its end (see the checksum above)".into(),
            ))
        }
    }
    log("archive downloaded, sha256 verified and staged; replacing the volume's contents".into())
        .await?;
    sh_ok(
        helper,
        &swap_script(staging, old),
        "replace the volume's contents",
    )
    .await?;
    Ok(())
}

async fn sh_ok(helper: &HelperContainer, script: &str, what: &str) -> Result<(), RestoreError> {
    let out = helper.sh(script).await?;
    if out.exit_code != 0 {
        return Err(RestoreError::Failed(format!(
            "could not {what} (exit {}): {}",
            out.exit_code,
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Moves the volume's entries aside, the staged ones in, takes the root's owner and mode from the
/// archive, and deletes the old entries last; any failure moves everything back.
fn swap_script(staging: &str, old: &str) -> String {
    format!(
        r#"
cd /volume || exit 1
S='{staging}'; O='{old}'
each() {{ for f in "$1"* "$1".[!.]* "$1"..?*; do if [ -e "$f" ] || [ -L "$f" ]; then echo "$f"; fi; done; }}
rollback() {{
  for f in $(each ''); do case "$f" in "$S"|"$O") ;; *) mv -- "$f" "$S/" ;; esac; done
  for f in $(each "$O/"); do mv -- "$f" ./; done
  rmdir "$O"
  echo "restore rolled back: $1" >&2
  exit 1
}}
IFS='
'
mkdir "$O" || exit 1
for f in $(each ''); do case "$f" in "$S"|"$O") ;; *) mv -- "$f" "$O/" || rollback "moving $f aside" ;; esac; done
for f in $(each "$S/"); do mv -- "$f" ./ || rollback "moving $f in"; done
chown "$(stat -c %u:%g "$S")" . && chmod "$(stat -c %a "$S")" . && touch -r "$S" . || rollback "setting the root's owner and mode"
rmdir "$S"
rm -rf "$O"
"#
    )
}

async fn restore_dump<F, Fut>(
    docker: &DockerClient,
    storage: &TargetStorage,
    key: &str,
    compression: Compression,
    expected: Digest,
    volume: &str,
    log: &F,
) -> Result<(), RestoreError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let container = docker
        .container_using_volume(volume)
        .await?
        .ok_or_else(|| {
            RestoreError::Failed(format!(
                "no running container mounts {volume}: start the database container, then restore"
            ))
        })?;
    // psql commits what it has read when its input ends, so the archive is verified whole first.
    let digest = codec::digest(storage.download(key).await?)
        .await
        .map_err(|e| RestoreError::Failed(format!("downloading the archive failed: {e}")))?;
    if digest != expected {
        return Err(RestoreError::Failed(format!(
            "checksum mismatch: the archive has {} bytes with sha256:{}, the backup recorded {} bytes with sha256:{}; nothing was changed",
            digest.size, digest.sha256_hex, expected.size, expected.sha256_hex
        )));
    }
    log("archive verified; replaying the dump with psql in one transaction".into()).await?;
    let login = PgLogin::of(&container);
    let cmd = login.command(&[
        "psql",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "--quiet",
    ]);
    let (sql, verified) = codec::unpack(
        storage.download(key).await?,
        compression,
        Payload::Sql,
        expected,
    );
    let outcome = docker
        .exec_write(&container.id, cmd, login.env(), sql)
        .await?;
    if verified.await.is_err() {
        return Err(RestoreError::Failed(
            "the archive changed while it was replayed; psql's transaction may not have been rolled back".into(),
        ));
    }
    if outcome.exit_code != 0 {
        return Err(RestoreError::Failed(format!(
            "psql exited with status {}; its transaction was rolled back: {}",
            outcome.exit_code,
            outcome.stderr.trim()
        )));
    }
    Ok(())
}

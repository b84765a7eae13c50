//! VerifyRun: one actor per verification of a backup. It downloads the backup's object, checks its
//! size and sha256 against the row, and reads its content to the end the way a restore would — a
//! tar entry by entry through the restore's guard (`crate::tar_guard`), a dump decompressed to its
//! end — without writing anything anywhere. Its end goes to the supervisor ([`VerifyEnded`]),
//! which records it on the verification and on the backup row.
//!
//! Outcomes: [`Verdict::Intact`]; [`Verdict::Damaged`] (the object is missing, has another size or
//! checksum, does not decompress, or holds an entry a restore refuses) marks the backup
//! `verifyOutcome: failed`; an error that says nothing about the backup (the target did not
//! answer, the database went away) fails the verification and leaves the backup's outcome as it
//! was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use futures::{FutureExt as _, StreamExt as _};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::{self, Payload};
use crate::engine::Engine;
use crate::messages::VerifyEnded;
use crate::model::VolumeKind;
use crate::progress::{stage, Progress, Stalled};
use crate::storage::{StorageError, TargetStorage};
use crate::store::StoreError;
use crate::supervision::SHUTTING_DOWN;
use crate::task_watch::{self, Ended};

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything checked; the summary says what.
    Intact(String),
    /// The backup would not restore, and why.
    Damaged(String),
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Stalled(#[from] Stalled),
    #[error("reading the archive failed: {0}")]
    Read(std::io::Error),
    /// Another engine performs it (or it ended): nothing to record.
    #[error("the verification is not pending")]
    NotOurs,
}

pub struct VerifyRun {
    engine: Engine,
    verification_id: Uuid,
    supervisor: Recipient<VerifyEnded>,
    cancel: CancellationToken,
}

impl VerifyRun {
    pub fn new(
        engine: Engine,
        verification_id: Uuid,
        supervisor: Recipient<VerifyEnded>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            engine,
            verification_id,
            supervisor,
            cancel,
        }
    }
}

impl Actor for VerifyRun {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let progress = self.engine.board().start();
        let work = actix::spawn(execute(
            self.engine.clone(),
            self.verification_id,
            progress.clone(),
        ));
        task_watch::keep_heartbeat(
            ctx,
            self.engine.clone(),
            self.verification_id,
            progress,
            |e, id| async move { e.store().heartbeat_verification(id).await }.boxed(),
        );
        let cancel = self.cancel.clone();
        let watch = async move {
            match task_watch::join(work, Some(cancel)).await {
                Ended::Returned(Ok(verdict)) => (Ok(verdict), true),
                Ended::Returned(Err(VerifyError::NotOurs)) => {
                    (Err("not pending".to_owned()), false)
                }
                Ended::Returned(Err(e)) => (Err(format!("could not verify: {e}")), true),
                Ended::Panicked(why) => (Err(format!("verification crashed: {why}")), true),
                Ended::Stopped => (
                    Err(format!("{SHUTTING_DOWN}: the verification was stopped")),
                    true,
                ),
            }
        };
        ctx.spawn(watch.into_actor(self).map(|(outcome, ours), act, ctx| {
            act.supervisor.do_send(VerifyEnded {
                verification_id: act.verification_id,
                outcome,
                ours,
            });
            ctx.stop();
        }));
    }
}

/// Performs one verification (claimed by this engine, `pending`).
pub async fn execute(
    engine: Engine,
    verification_id: Uuid,
    progress: Progress,
) -> Result<Verdict, VerifyError> {
    let store = engine.store();
    if !store.mark_verification_running(verification_id).await? {
        return Err(VerifyError::NotOurs);
    }
    let log = |line: String, checked: Option<&'static str>| async move {
        store
            .append_verification_log(verification_id, &line, checked)
            .await
    };
    let verification = store.verification(verification_id).await?;
    let backup = store.backup(verification.backup_id).await?;
    progress.describe(
        format!("verifying {}/{}", backup.app_name, backup.volume_name),
        backup.size_bytes.and_then(|s| u64::try_from(s).ok()),
    );
    let crate::restore::ArchiveRef {
        key,
        expected,
        compression: _,
        target_id,
    } = match crate::restore::archive_of(&backup) {
        Ok(archive) => archive,
        Err(why) => {
            return Ok(Verdict::Damaged(format!(
                "the backup cannot be read: {why}"
            )))
        }
    };
    let target = store.target(target_id).await?;
    let settings = engine.settings();
    let storage = TargetStorage::open_with_step_limit(
        &target.config,
        settings.allow_local_backups,
        settings.stall_deadline,
    )?;
    let storage = engine.equip(storage, &target).await?;
    let _slot = engine.run_slot().await;

    // An encrypted archive that the engine holds no identity for: its stored object is checked
    // (there, of its size and sha256, which are of the encrypted bytes); its content cannot be.
    if let Err(why) = storage.opens(backup.encrypted_to.as_deref()) {
        // Every archive the backup needs (its chain's, for an incremental one), each against
        // its own row.
        let parts = match crate::chain::ancestry(store, &backup).await {
            Ok(chain) => chain
                .iter()
                .map(|b| {
                    let part = b
                        .storage_path
                        .clone()
                        .zip(crate::chain::recorded(b.size_bytes, b.checksum.as_deref()));
                    part.ok_or_else(|| format!("backup {} of the chain records no archive", b.id))
                })
                .collect::<Result<Vec<_>, _>>(),
            Err(crate::chain::ChainError::Store(e)) => return Err(e.into()),
            Err(e) => Err(e.to_string()),
        };
        let parts = match parts {
            Ok(parts) => parts,
            Err(why) => return Ok(Verdict::Damaged(why)),
        };
        for (key, expected) in &parts {
            if let Some(damage) = stored_only(&storage, key, expected, &progress, log).await? {
                return Ok(Verdict::Damaged(damage));
            }
        }
        log(format!("content not read: {why}"), None).await?;
        return Ok(Verdict::Intact(format!(
            "intact as stored: {} bytes, sha256:{}{} (encrypted; its content was not read: the \
             engine holds no identity for it)",
            expected.size,
            expected.sha256_hex,
            if parts.len() > 1 {
                format!(
                    ", and the {} archives of its chain before it",
                    parts.len() - 1
                )
            } else {
                String::new()
            }
        )));
    }

    // An incremental backup is its chain: every archive of it, read as one tree.
    let chained =
        match crate::chain::resolve(store, &storage, &backup, settings.stall_deadline).await {
            Ok(chained) => chained,
            Err(crate::chain::ChainError::Store(e)) => return Err(e.into()),
            Err(e) if e.is_damage() => return Ok(Verdict::Damaged(e.to_string())),
            Err(e) => return Err(VerifyError::Read(std::io::Error::other(e.to_string()))),
        };
    let objects = match &chained {
        Some(chain) => chain
            .parts
            .iter()
            .map(|p| (p.key.clone(), p.expected.size))
            .collect(),
        None => vec![(key.clone(), expected.size)],
    };
    if let Some(chain) = &chained {
        log(chain.describe(), None).await?;
    }

    // The objects: there, and of the recorded sizes.
    for (key, recorded) in objects {
        match storage.stat(&key).await? {
            None => {
                return Ok(Verdict::Damaged(format!(
                    "the object {key} is missing from target {}",
                    target.name
                )))
            }
            Some(size) if size != recorded => {
                return Ok(Verdict::Damaged(format!(
                    "the object {key} has {size} bytes, the backup recorded {recorded}"
                )))
            }
            Some(size) => log(format!("object {key}: {size} bytes"), Some("object")).await?,
        }
    }

    // Its bytes and content, read to the end.
    let payload = match backup.volume_kind {
        VolumeKind::Generic => Payload::Tar,
        VolumeKind::Postgres | VolumeKind::Engine => Payload::Sql,
    };
    // Whether the download itself failed (then the read's error says nothing about the archive).
    let cut = Arc::new(AtomicBool::new(false));
    let read = async {
        if let Some(chain) = &chained {
            let watch = crate::chain::ReadWatch {
                meter: Some(progress.meter(stage::DOWNLOAD)),
                cut: Arc::clone(&cut),
            };
            let (mut content, held) = codec::guard(chain.tree(&storage, watch));
            let mut bytes = 0u64;
            while let Some(chunk) = content.next().await {
                bytes += chunk.map_err(VerifyError::Read)?.len() as u64;
            }
            let held = held
                .await
                .map_err(|_| VerifyError::Read(std::io::Error::other("the check ended early")))?;
            return Ok::<_, VerifyError>((bytes, held.len(), None));
        }
        let body = storage.download(&key).await?;
        let seen = Arc::clone(&cut);
        let body: crate::stream::ByteStream = Box::pin(body.inspect(move |chunk| {
            if chunk.is_err() {
                seen.store(true, Ordering::Relaxed);
            }
        }));
        let body = progress.meter(stage::DOWNLOAD).stream(body);
        let format = storage
            .format(&key)
            .map_err(|e| VerifyError::Read(std::io::Error::other(e)))?;
        let (mut content, held) = codec::unpack(body, format, payload, expected.clone());
        let mut outline = None;
        let mut bytes = 0u64;
        if payload == Payload::Sql {
            let read = crate::pg::format::outline(content).await;
            let read = read.map_err(VerifyError::Read)?;
            bytes = read.bytes;
            outline = Some(read.describe());
        } else {
            while let Some(chunk) = content.next().await {
                bytes += chunk.map_err(VerifyError::Read)?.len() as u64;
            }
        }
        let held = held
            .await
            .map_err(|_| VerifyError::Read(std::io::Error::other("the check ended early")))?;
        Ok::<_, VerifyError>((bytes, held.len(), outline))
    };
    let deadline = settings.stall_deadline;
    let read = progress
        .deadline(deadline, &[stage::DOWNLOAD], read)
        .await?;
    let (bytes, symlinks, outline) = match read {
        Ok(read) => read,
        // The bytes came in whole: a read that failed on them (a changed byte, a cut end, an
        // entry a restore refuses, a stream that does not decompress, an archive of a chain that
        // lacks an entry its backup's manifest takes from it) is the archive's fault.
        Err(VerifyError::Read(e)) if !cut.load(Ordering::Relaxed) => {
            if chained.is_some() {
                return Ok(Verdict::Damaged(e.to_string()));
            }
            return Ok(Verdict::Damaged(
                why_unreadable(&storage, &key, &expected, e).await?,
            ));
        }
        Err(VerifyError::Storage(StorageError::NotFound { key, .. })) => {
            return Ok(Verdict::Damaged(format!("the object {key} is missing")))
        }
        Err(e) => return Err(e),
    };
    let matched = match &chained {
        Some(chain) => format!(
            "sizes and sha256 of the {} archives of the chain match their backups",
            chain.parts.len()
        ),
        None => format!("size and sha256:{} match the backup", expected.sha256_hex),
    };
    log(matched, Some("sha256")).await?;
    let content = match payload {
        Payload::Tar => {
            log(
                format!(
                    "tar read to its end: {bytes} bytes, every entry inside the volume \
                     ({symlinks} symlinks above the root, restored as links)"
                ),
                Some("tar entries"),
            )
            .await?;
            "tar"
        }
        Payload::Sql | Payload::Raw => {
            log(
                format!(
                    "dump decompressed to its end: {}",
                    outline.unwrap_or_default()
                ),
                Some("sql dump"),
            )
            .await?;
            "dump"
        }
    };
    Ok(Verdict::Intact(format!(
        "intact: {} bytes, sha256:{}, {content} of {bytes} bytes read to its end",
        expected.size, expected.sha256_hex
    )))
}

/// Checks one stored object without reading its content (an encrypted archive the engine holds
/// no identity for): there, and its bytes those the backup recorded. `Some(why)` if not.
async fn stored_only<L, F>(
    storage: &TargetStorage,
    key: &str,
    expected: &codec::Digest,
    progress: &Progress,
    log: L,
) -> Result<Option<String>, VerifyError>
where
    L: Fn(String, Option<&'static str>) -> F,
    F: std::future::Future<Output = Result<(), crate::store::StoreError>>,
{
    match storage.stat(key).await? {
        None => return Ok(Some(format!("the object {key} is missing"))),
        Some(size) if size != expected.size => {
            return Ok(Some(format!(
                "the object {key} has {size} bytes, the backup recorded {}",
                expected.size
            )))
        }
        Some(size) => log(format!("object {key}: {size} bytes"), Some("object")).await?,
    }
    let body = progress
        .meter(stage::DOWNLOAD)
        .stream(storage.download(key).await?);
    let actual = codec::digest(body).await.map_err(VerifyError::Read)?;
    if &actual != expected {
        return Ok(Some(format!(
            "checksum mismatch: the archive {key} has {} bytes with sha256:{}, the backup \
             recorded {} bytes with sha256:{}",
            actual.size, actual.sha256_hex, expected.size, expected.sha256_hex
        )));
    }
    log(
        format!(
            "size and sha256:{} of the encrypted object {key} match the backup",
            expected.sha256_hex
        ),
        Some("sha256"),
    )
    .await?;
    Ok(None)
}

/// Why an archive whose read failed is damaged: a decompressor meets a changed byte before the
/// hash of the whole object is known, so the object is hashed once more to tell a checksum
/// mismatch (the object changed since the backup) from an archive that was stored broken.
async fn why_unreadable(
    storage: &TargetStorage,
    key: &str,
    expected: &codec::Digest,
    read: std::io::Error,
) -> Result<String, VerifyError> {
    if read.to_string().contains("checksum mismatch") {
        return Ok(read.to_string());
    }
    let actual = codec::digest(storage.download(key).await?)
        .await
        .map_err(VerifyError::Read)?;
    Ok(if &actual == expected {
        format!("the object matches its recorded sha256, but its content does not read: {read}")
    } else {
        format!(
            "checksum mismatch: the archive has {} bytes with sha256:{}, the backup recorded {} \
             bytes with sha256:{} ({read})",
            actual.size, actual.sha256_hex, expected.size, expected.sha256_hex
        )
    })
}

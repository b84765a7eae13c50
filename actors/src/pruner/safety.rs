//! Deletes restores' safety backups (reason `pre-restore`) once they are older than
//! `restore.keep_pre_restore_days`: the object first, then the row becomes `pruned`. Job
//! retention never counts them; only this age does.

use crate::engine::Engine;
use crate::storage::TargetStorage;

use super::PruneError;

/// Prunes the expired safety backups; answers how many were deleted. One whose delete fails
/// keeps its row `success` with the error in its log, for the next sweep.
pub async fn prune_expired(engine: &Engine) -> Result<usize, PruneError> {
    let store = engine.store();
    let keep = engine.settings().keep_pre_restore;
    let mut pruned = 0;
    let expired = store.expired_pre_restore_backups(keep).await?;
    // One a restore is reading (or is about to: `pending`) is the undo in use: kept for now.
    let ids: Vec<_> = expired.iter().map(|b| b.id).collect();
    let in_use = store.backups_in_use(&ids).await?;
    for backup in expired.into_iter().filter(|b| !in_use.contains(&b.id)) {
        let (Some(target_id), Some(key)) = (backup.target_id, backup.storage_path.as_deref())
        else {
            continue;
        };
        let target = store.target(target_id).await?;
        let deleted =
            match TargetStorage::open(&target.config, engine.settings().allow_local_backups) {
                Ok(storage) => storage.delete(key).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
        match deleted {
            Ok(()) => {
                let line = format!(
                    "pruned: a safety backup older than {} days",
                    keep.as_secs() / 86_400
                );
                if store.mark_backup_pruned(backup.id, &line).await? {
                    pruned += 1;
                }
            }
            Err(e) => {
                store
                    .log_backup_prune_failure(backup.id, &format!("could not prune: {e}"))
                    .await?;
            }
        }
    }
    Ok(pruned)
}

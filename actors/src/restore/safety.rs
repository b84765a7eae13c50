//! A restore's safety backup: before a restore replaces a volume's files or replays a dump into its
//! database, the contents it is about to replace are backed up to the same target, under the
//! volume lock the restore holds — a backup row with reason `pre-restore`, linked from the restore
//! (`preRestoreBackupId`), outside the job's retention and kept `restore.keep_pre_restore_days`.
//! Restoring that backup undoes the restore. If the safety backup fails, the restore stops before
//! it changes anything.

use chrono::Utc;
use uuid::Uuid;

use super::{Log, RestoreError};
use crate::backup::VolumeJob;
use crate::crew::Crew;
use crate::engine::Engine;
use crate::model::{App, Backup, Compression, Target, Volume};
use crate::progress::Progress;
use crate::storage::TargetStorage;

/// What the safety backup of one restore needs: the restore, the backup it restores (whose app,
/// volume, target and compression the safety backup shares), and the volume, found and locked.
pub struct SafetyBackup<'a> {
    pub engine: &'a Engine,
    pub crew: &'a Crew,
    pub restore_id: Uuid,
    pub of: &'a Backup,
    pub target: &'a Target,
    pub storage: &'a TargetStorage,
    pub compression: Compression,
    pub docker_volume: &'a str,
    pub progress: &'a Progress,
}

impl SafetyBackup<'_> {
    /// Takes it; answers the new backup's id, or why the restore must not go on.
    pub async fn take(&self, log: &Log<'_>) -> Result<Uuid, RestoreError> {
        let store = self.engine.store();
        let row = store
            .insert_pre_restore_backup(self.restore_id, self.of)
            .await?;
        log.line(&format!(
            "backing up the current contents of {} first (safety backup {row})",
            self.docker_volume
        ))
        .await?;
        let org = store.organization(self.of.organization_id).await?;
        let app = App {
            id: self.of.app_id.clone(),
            organization_id: self.of.organization_id,
            name: self.of.app_name.clone(),
            volumes: Vec::new(),
        };
        let volume = Volume {
            name: self.of.volume_name.clone(),
            persistent: true,
            kind: self.of.volume_kind,
        };
        let job = VolumeJob {
            engine: self.engine,
            crew: self.crew,
            storage: self.storage,
            target: self.target,
            org: &org,
            compression: self.compression,
            level: None,
            app: &app,
            volume: &volume,
            started: Utc::now(),
            row,
            progress: self.progress,
            // A safety backup is whole by itself, outside any chain.
            incremental: None,
        };
        if job.run_locked(self.docker_volume).await? {
            log.line(&format!(
                "safety backup {row} taken; to undo this restore, restore backup {row}"
            ))
            .await?;
            return Ok(row);
        }
        let taken = store.backup(row).await?;
        let why = taken
            .log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no reason was recorded")
            .to_owned();
        Err(RestoreError::Failed(format!(
            "the safety backup of the current contents failed ({why}); nothing was restored \
             (a restore without it can be asked for with safetyBackup: false)"
        )))
    }
}

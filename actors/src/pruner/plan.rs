//! What the `Pruner` actor (pruner/mod.rs) does: applies a job's retention to each of its
//! (job, app, volume) series. Plan first — pure,
//! from the job's `success` rows, with [`crate::retention`] — then execute: delete each pruned
//! backup's object from the target it was written to, and only then mark its row `pruned`. A dry
//! run is the plan alone.
//!
//! A series never mixes apps or volumes: two apps with a volume of the same name are two series.
//! A delete that fails leaves the row `success` with the error in its log, and the next prune
//! tries again; an object that is already gone counts as deleted. When a delete fails in a way
//! that may pass (the target is down), the remaining deletes on that target wait for the next
//! prune instead of each waiting out the same failure. A backup that a restore is reading is left
//! for the next prune too.
//!
//! Two prunes of the same job at once are harmless: both plans are retention-valid, a delete of an
//! absent object succeeds, and only a `success` row becomes `pruned`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::engine::Engine;
use crate::model::{Backup, RetentionPolicy};
use crate::retention::{self, Candidate, Reason, RetentionError};
use crate::storage::TargetStorage;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the pruner is not running: {0}")]
    Unavailable(String),
    #[error("job {job_id}: {source}; nothing was pruned")]
    TimeZone {
        job_id: Uuid,
        #[source]
        source: RetentionError,
    },
}

/// A kept backup and the rules that keep it.
#[derive(Debug, Clone)]
pub struct KeptBackup {
    pub backup: Backup,
    pub reasons: Vec<Reason>,
}

/// The plan of one (job, app, volume) series; both lists newest first.
#[derive(Debug, Clone)]
pub struct SeriesPlan {
    pub app_id: String,
    pub app_name: String,
    pub volume_name: String,
    pub keep: Vec<KeptBackup>,
    pub prune: Vec<Backup>,
}

/// The plan of every series of a job.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    pub job_id: Uuid,
    pub policy: RetentionPolicy,
    pub timezone: String,
    pub series: Vec<SeriesPlan>,
}

impl PrunePlan {
    pub fn prune_count(&self) -> usize {
        self.series.iter().map(|s| s.prune.len()).sum()
    }

    pub fn keep_count(&self) -> usize {
        self.series.iter().map(|s| s.keep.len()).sum()
    }
}

/// What became of one backup the plan prunes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The object is gone and the row is `pruned`.
    Pruned,
    /// The row is still `success`; the error is in its log.
    Failed(String),
    /// Not attempted this time (a restore is reading it); the next prune tries again.
    Deferred(String),
}

#[derive(Debug, Clone)]
pub struct PruneResult {
    pub backup_id: Uuid,
    pub app_name: String,
    pub volume_name: String,
    pub storage_path: Option<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub results: Vec<PruneResult>,
}

impl PruneReport {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.results.iter().filter(|r| f(&r.outcome)).count()
    }

    pub fn pruned(&self) -> usize {
        self.count(|o| *o == Outcome::Pruned)
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }
}

fn finished(b: &Backup) -> DateTime<Utc> {
    b.finished_at.unwrap_or(b.created_at)
}

/// Splits a job's `success` rows into (app, volume) series and plans each. Pure.
pub fn plan_series(
    rows: Vec<Backup>,
    policy: &RetentionPolicy,
    tz: chrono_tz::Tz,
) -> Vec<SeriesPlan> {
    let mut groups: Vec<((String, String), Vec<Backup>)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for row in rows {
        let key = (row.app_id.clone(), row.volume_name.clone());
        let at = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(row);
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
        .into_iter()
        .map(|((app_id, volume_name), rows)| {
            let newest_name = rows
                .iter()
                .max_by_key(|b| finished(b))
                .map(|b| b.app_name.clone())
                .unwrap_or_default();
            let mut by_id: HashMap<Uuid, Backup> = rows.into_iter().map(|b| (b.id, b)).collect();
            let candidates = by_id
                .values()
                .map(|b| Candidate {
                    id: b.id,
                    time: finished(b),
                })
                .collect();
            let plan = keep_ancestors(retention::plan(candidates, policy, tz), &by_id);
            SeriesPlan {
                app_id,
                app_name: newest_name,
                volume_name,
                keep: plan
                    .keep
                    .into_iter()
                    .filter_map(|k| {
                        by_id.remove(&k.id).map(|backup| KeptBackup {
                            backup,
                            reasons: k.reasons,
                        })
                    })
                    .collect(),
                prune: plan
                    .prune
                    .into_iter()
                    .filter_map(|c| by_id.remove(&c.id))
                    .collect(),
            }
        })
        .collect()
}

/// Moves every backup that a kept one needs (its parent, and theirs, up to the chain's full
/// backup) from the pruned to the kept, with [`Reason::Ancestor`]: retention never breaks a chain.
pub fn keep_ancestors(
    mut plan: retention::Plan<Uuid>,
    rows: &HashMap<Uuid, Backup>,
) -> retention::Plan<Uuid> {
    let mut needed: Vec<Uuid> = plan
        .keep
        .iter()
        .filter_map(|k| rows.get(&k.id)?.chain.parent_backup_id)
        .collect();
    while let Some(id) = needed.pop() {
        if let Some(kept) = plan.keep.iter_mut().find(|k| k.id == id) {
            if !kept.reasons.contains(&Reason::Ancestor) {
                kept.reasons.push(Reason::Ancestor);
            }
            continue;
        }
        let Some(at) = plan.prune.iter().position(|c| c.id == id) else {
            // Not a success row of this series any more: the chain is broken already.
            continue;
        };
        let candidate = plan.prune.remove(at);
        plan.keep.push(retention::Kept {
            id: candidate.id,
            time: candidate.time,
            reasons: vec![Reason::Ancestor],
        });
        if let Some(parent) = rows.get(&id).and_then(|b| b.chain.parent_backup_id) {
            needed.push(parent);
        }
    }
    plan.keep
        .sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id)));
    plan
}

/// Plans every series of a job from its `success` rows; changes nothing.
#[tracing::instrument(skip(engine))]
pub async fn plan(engine: &Engine, job_id: Uuid) -> Result<PrunePlan, PruneError> {
    let store = engine.store();
    let job = store.job(job_id).await?;
    let tz = retention::parse_time_zone(&job.timezone)
        .map_err(|source| PruneError::TimeZone { job_id, source })?;
    let rows = store.job_success_backups(job_id).await?;
    Ok(PrunePlan {
        job_id,
        series: plan_series(rows, &job.retention, tz),
        policy: job.retention,
        timezone: job.timezone,
    })
}

/// What the targets of this execution did: opened storages, and targets whose delete failed in a
/// way that may pass, with the error.
#[derive(Default)]
struct Targets {
    open: HashMap<Uuid, Result<TargetStorage, String>>,
    down: HashMap<Uuid, String>,
}

/// Executes a plan: for each pruned backup, delete its object, then mark its row `pruned`.
#[tracing::instrument(skip(engine, plan), fields(job_id = %plan.job_id))]
pub async fn execute(engine: &Engine, plan: &PrunePlan) -> Result<PruneReport, PruneError> {
    let store = engine.store();
    let doomed: Vec<&Backup> = plan.series.iter().flat_map(|s| s.prune.iter()).collect();
    // A restore or verification of an incremental backup reads every ancestor: those are in use
    // too. (A drill reads the newest backups, which retention keeps with their ancestors.)
    let all: Vec<&Backup> = plan
        .series
        .iter()
        .flat_map(|s| s.keep.iter().map(|k| &k.backup).chain(s.prune.iter()))
        .collect();
    let ids: Vec<Uuid> = all.iter().map(|b| b.id).collect();
    let parents: HashMap<Uuid, Uuid> = all
        .iter()
        .filter_map(|b| Some((b.id, b.chain.parent_backup_id?)))
        .collect();
    let mut restoring: std::collections::HashSet<Uuid> =
        store.backups_in_use(&ids).await?.into_iter().collect();
    let mut needed: Vec<Uuid> = restoring.iter().copied().collect();
    while let Some(id) = needed.pop() {
        if let Some(parent) = parents.get(&id) {
            if restoring.insert(*parent) {
                needed.push(*parent);
            }
        }
    }
    let mut targets = Targets::default();
    let mut report = PruneReport::default();
    for backup in doomed {
        let outcome = if restoring.contains(&backup.id) {
            Outcome::Deferred(
                "a restore or verification of this backup, or of a later one of its chain, is in \
                 progress"
                    .to_owned(),
            )
        } else {
            prune_one(engine, &mut targets, backup).await?
        };
        match &outcome {
            Outcome::Pruned => {
                tracing::info!(backup_id = %backup.id, path = ?backup.storage_path, "pruned")
            }
            Outcome::Failed(why) => {
                tracing::warn!(backup_id = %backup.id, error = %why, "prune failed; the next prune retries")
            }
            Outcome::Deferred(why) => {
                tracing::info!(backup_id = %backup.id, %why, "prune deferred")
            }
        }
        report.results.push(PruneResult {
            backup_id: backup.id,
            app_name: backup.app_name.clone(),
            volume_name: backup.volume_name.clone(),
            storage_path: backup.storage_path.clone(),
            outcome,
        });
    }
    Ok(report)
}

/// Deletes one backup's object and marks its row; a failure is logged on the row.
async fn prune_one(
    engine: &Engine,
    targets: &mut Targets,
    backup: &Backup,
) -> Result<Outcome, PruneError> {
    let store = engine.store();
    let Some(key) = backup.storage_path.as_deref() else {
        store
            .mark_backup_pruned(backup.id, "pruned by retention (no object was stored)")
            .await?;
        return Ok(Outcome::Pruned);
    };
    let deleted = match backup.target_id {
        None => Err("its target was deleted, so its object cannot be deleted".to_owned()),
        Some(target_id) => {
            // The manifest first: an archive whose manifest is gone is still restorable as a
            // chain member's row says, a manifest without its archive is not.
            let manifest = match backup.chain.manifest_path.as_deref() {
                Some(manifest) => delete(engine, targets, target_id, manifest).await,
                None => Ok(()),
            };
            match manifest {
                Ok(()) => delete(engine, targets, target_id, key).await,
                Err(e) => Err(e),
            }
        }
    };
    match deleted {
        Ok(()) => {
            store
                .mark_backup_pruned(backup.id, &format!("pruned by retention: deleted {key}"))
                .await?;
            Ok(Outcome::Pruned)
        }
        Err(why) => {
            store
                .log_backup_prune_failure(
                    backup.id,
                    &format!("retention could not delete {key}; kept for the next prune: {why}"),
                )
                .await?;
            Ok(Outcome::Failed(why))
        }
    }
}

async fn delete(
    engine: &Engine,
    targets: &mut Targets,
    target_id: Uuid,
    key: &str,
) -> Result<(), String> {
    if let Some(why) = targets.down.get(&target_id) {
        return Err(format!(
            "not attempted, as an earlier delete on this target failed: {why}"
        ));
    }
    let storage = match targets.open.get(&target_id) {
        Some(opened) => opened.clone()?,
        None => {
            let opened = match engine.store().target(target_id).await {
                Ok(target) => {
                    TargetStorage::open(&target.config, engine.settings().allow_local_backups)
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(format!("cannot load target {target_id}: {e}")),
            };
            targets.open.insert(target_id, opened.clone());
            opened?
        }
    };
    match storage.delete(key).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let why = e.to_string();
            if e.is_retryable() {
                targets.down.insert(target_id, why.clone());
            }
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Status, VolumeKind};

    fn row(app: &str, volume: &str, minute: u32) -> Backup {
        let at = DateTime::parse_from_rfc3339(&format!("2024-05-01T10:{minute:02}:00Z"))
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        Backup {
            id: Uuid::new_v4(),
            run_id: Uuid::new_v4(),
            job_id: None,
            organization_id: Uuid::nil(),
            app_id: app.to_owned(),
            app_name: app.to_owned(),
            target_id: None,
            volume_name: volume.to_owned(),
            volume_kind: VolumeKind::Generic,
            status: Status::Success,
            size_bytes: Some(1),
            storage_path: Some(format!("{app}/{volume}/{minute}")),
            checksum: None,
            log: String::new(),
            started_at: Some(at),
            finished_at: Some(at),
            created_at: at,
            verified_at: None,
            verify_outcome: None,
            chain: Default::default(),
            encrypted_to: None,
        }
    }

    #[test]
    fn series_never_mix_apps_or_volumes() {
        // Same volume name in two apps, and two volumes of one app: three series.
        let rows = vec![
            row("a", "data", 5),
            row("b", "data", 4),
            row("a", "data", 3),
            row("a", "logs", 2),
            row("b", "data", 1),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(1),
            ..Default::default()
        };
        let plans = plan_series(rows, &policy, chrono_tz::Tz::UTC);
        let summary: Vec<(&str, &str, Vec<String>, Vec<String>)> = plans
            .iter()
            .map(|s| {
                let path = |b: &Backup| b.storage_path.clone().unwrap_or_default();
                (
                    s.app_id.as_str(),
                    s.volume_name.as_str(),
                    s.keep.iter().map(|k| path(&k.backup)).collect(),
                    s.prune.iter().map(path).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "a",
                    "data",
                    vec!["a/data/5".into()],
                    vec!["a/data/3".into()]
                ),
                ("a", "logs", vec!["a/logs/2".into()], vec![]),
                (
                    "b",
                    "data",
                    vec!["b/data/4".into()],
                    vec!["b/data/1".into()]
                ),
            ]
        );
    }

    use proptest::prelude::*;

    /// A series' runs as the engine makes them: each successful run continues the chain of the
    /// newest success while it holds fewer than `full_every` backups, else starts a new one; a
    /// prune follows every run. Returns the success rows left.
    fn simulate(outcomes: &[bool], full_every: i32, policy: &RetentionPolicy) -> Vec<Backup> {
        let mut rows: Vec<Backup> = Vec::new();
        for (i, &ok) in outcomes.iter().enumerate() {
            if !ok {
                continue;
            }
            let at = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default()
                + chrono::Duration::hours(7 * i as i64);
            let mut b = row("app", "data", 0);
            b.finished_at = Some(at);
            b.created_at = at;
            let parent = rows.iter().max_by_key(|r| finished(r));
            b.chain = match parent {
                Some(p) if p.chain.position + 1 < full_every => crate::model::ChainLink {
                    kind: crate::model::BackupKind::Incremental,
                    parent_backup_id: Some(p.id),
                    position: p.chain.position + 1,
                    ..Default::default()
                },
                _ => Default::default(),
            };
            rows.push(b);
            let plans = plan_series(rows.clone(), policy, chrono_tz::Tz::UTC);
            let pruned: Vec<Uuid> = plans
                .iter()
                .flat_map(|s| s.prune.iter().map(|b| b.id))
                .collect();
            rows.retain(|r| !pruned.contains(&r.id));
        }
        rows
    }

    fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
        let count = || proptest::option::of(0u32..6);
        (count(), count(), count(), count()).prop_map(|(last, daily, weekly, monthly)| {
            RetentionPolicy {
                keep_last: last,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                ..Default::default()
            }
        })
    }

    proptest! {
        #[test]
        fn no_kept_backup_ever_loses_an_ancestor(
            outcomes in proptest::collection::vec(proptest::bool::weighted(0.85), 1..60),
            full_every in 1i32..9,
            policy in arb_policy(),
        ) {
            let left = simulate(&outcomes, full_every, &policy);
            let ids: std::collections::HashSet<Uuid> = left.iter().map(|b| b.id).collect();
            for b in &left {
                if let Some(parent) = b.chain.parent_backup_id {
                    prop_assert!(ids.contains(&parent), "backup at position {} lost its parent", b.chain.position);
                }
            }
            // And the policy's own choice is kept: the plan of what is left keeps all of it.
            let plans = plan_series(left.clone(), &policy, chrono_tz::Tz::UTC);
            prop_assert!(plans.iter().all(|s| s.prune.is_empty()));
            // The newest backup is always there.
            prop_assert_eq!(left.is_empty(), !outcomes.iter().any(|&ok| ok));
        }

        #[test]
        fn without_chains_the_plan_is_the_policys(
            outcomes in proptest::collection::vec(Just(true), 1..40),
            policy in arb_policy(),
        ) {
            // fullEvery 1: every backup full; no backup is kept as an ancestor.
            let left = simulate(&outcomes, 1, &policy);
            let plans = plan_series(left, &policy, chrono_tz::Tz::UTC);
            prop_assert!(plans.iter().flat_map(|s| s.keep.iter()).all(|k| !k.reasons.contains(&Reason::Ancestor)));
        }
    }
}

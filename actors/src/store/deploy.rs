//! What the deploy pipeline's messages change: an app's registration (with its auto-created job),
//! an app's removal, and runs it asks for. Each message's effect is one transaction, and each is
//! idempotent, so a message delivered twice (a consumer died before acknowledging it, or the
//! pipeline sent it twice) changes nothing the second time — enforced by the database's unique
//! constraints, not by the order in which instances happen to run.

use uuid::Uuid;

use super::{Store, StoreError};
use crate::model::{RunReason, Volume};

/// `app.deployed`, validated.
#[derive(Debug, Clone)]
pub struct DeployedApp {
    pub org_slug: String,
    pub org_name: Option<String>,
    pub app_id: String,
    pub app_name: String,
    pub volumes: Vec<Volume>,
}

/// What happened about the auto-created job of a deployed app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoJob {
    Created(Uuid),
    /// No persistent volume: nothing to back up.
    NoPersistentVolume,
    /// A backup job covers the app already (or its auto job exists).
    AlreadyCovered,
    /// No target of the organization nor a system target exists.
    NoTarget,
}

/// The outcome of recording a deployed app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployed {
    Recorded {
        organization_id: Uuid,
        auto_job: AutoJob,
    },
    /// The app id belongs to another organization; nothing changed.
    Foreign,
}

/// The outcome of removing a deleted app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    /// The jobs that covered it, and those of them disabled because they cover no app any more.
    Removed {
        uncovered: Vec<Uuid>,
        disabled: Vec<Uuid>,
    },
    /// No such app (never deployed, or removed already).
    Absent,
    /// The app id belongs to another organization; nothing changed.
    Foreign,
}

/// A run asked for by `backup.requested`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedRun {
    pub run_id: Uuid,
    pub job_id: Uuid,
    /// False when this request had asked for a run of this job already (a redelivery).
    pub new: bool,
}

/// The outcome of `backup.requested`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    Runs {
        organization_id: Uuid,
        runs: Vec<RequestedRun>,
    },
    /// Nothing can run, and why (unknown organization, app or job; no enabled job covers the app).
    Nothing {
        organization_id: Option<Uuid>,
        reason: String,
    },
}

/// The auto-created job's settings, as the seed gives them.
pub const AUTO_SCHEDULE: &str = "0 2 * * *";

impl Store {
    /// Records the organization, the app and its volumes and, if the app has a persistent volume,
    /// no job covers it and a target resolves, creates its job `Auto: {appName}` — all in one
    /// transaction. `backup_job.auto_for_app_id` is unique: a concurrent or repeated delivery
    /// inserts nothing.
    #[tracing::instrument(skip(self, app), fields(org = %app.org_slug, app_id = %app.app_id))]
    pub async fn record_deployed_app(&self, app: &DeployedApp) -> Result<Deployed, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let org: Uuid = tx
            .query_one(
                "INSERT INTO organization (slug, name) VALUES ($1, COALESCE($2, $1))
                 ON CONFLICT (slug) DO UPDATE SET name = COALESCE($2, organization.name)
                 RETURNING id",
                &[&app.org_slug, &app.org_name],
            )
            .await?
            .get(0);
        let owned = tx
            .query_opt(
                "INSERT INTO app (id, organization_id, name) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
                     WHERE app.organization_id = EXCLUDED.organization_id
                 RETURNING id",
                &[&app.app_id, &org, &app.app_name],
            )
            .await?;
        if owned.is_none() {
            return Ok(Deployed::Foreign);
        }
        super::claims::write_volumes(&tx, &app.app_id, org, &app.app_name, &app.volumes).await?;
        let auto_job = auto_job(&tx, org, app).await?;
        tx.commit().await?;
        Ok(Deployed::Recorded {
            organization_id: org,
            auto_job,
        })
    }

    /// Removes the organization's app: its jobs stop covering it, and a job left with no app is
    /// disabled. Its history rows and archives stay (they do not reference the app row).
    #[tracing::instrument(skip(self))]
    pub async fn remove_deleted_app(
        &self,
        org_slug: &str,
        app_id: &str,
    ) -> Result<Removed, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let owner = tx
            .query_opt(
                "SELECT o.slug FROM app a JOIN organization o ON o.id = a.organization_id
                 WHERE a.id = $1 FOR UPDATE OF a",
                &[&app_id],
            )
            .await?;
        match owner {
            None => return Ok(Removed::Absent),
            Some(row) if row.get::<_, String>(0) != org_slug => return Ok(Removed::Foreign),
            Some(_) => {}
        }
        let uncovered: Vec<Uuid> = tx
            .query(
                "SELECT job_id FROM backup_job_app WHERE app_id = $1 ORDER BY job_id",
                &[&app_id],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Cascades to its volumes and job memberships; an auto job forgets its app; its Docker
        // volume names are released to the organization, not freed (the volumes may stay).
        tx.execute("DELETE FROM app WHERE id = $1", &[&app_id])
            .await?;
        let disabled: Vec<Uuid> = tx
            .query(
                "UPDATE backup_job j SET enabled = false, updated_at = now()
                 WHERE j.id = ANY($1) AND j.enabled
                   AND NOT EXISTS (SELECT 1 FROM backup_job_app ja WHERE ja.job_id = j.id)
                 RETURNING j.id",
                &[&uncovered],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await?;
        Ok(Removed::Removed {
            uncovered,
            disabled,
        })
    }

    /// Asks for runs of `job_id`, or of every enabled job covering `app_id`, on behalf of the
    /// pipeline's `request_id` — the run requests the HTTP `run` route also makes, which a
    /// scheduler-role Dispatcher claims. A request asks for each job once: asking again (a
    /// redelivery) returns the run asked for before.
    #[tracing::instrument(skip(self))]
    pub async fn request_deploy_runs(
        &self,
        org_slug: &str,
        app_id: Option<&str>,
        job_id: Option<Uuid>,
        request_id: &str,
    ) -> Result<Requested, StoreError> {
        let mut client = self.pool().get().await?;
        let tx = client.transaction().await?;
        let Some(org) = tx
            .query_opt("SELECT id FROM organization WHERE slug = $1", &[&org_slug])
            .await?
            .map(|r| r.get::<_, Uuid>(0))
        else {
            return Ok(Requested::Nothing {
                organization_id: None,
                reason: format!("no organization has the slug {org_slug:?}"),
            });
        };
        let nothing = |reason: String| {
            Ok(Requested::Nothing {
                organization_id: Some(org),
                reason,
            })
        };
        let jobs: Vec<Uuid> = match (job_id, app_id) {
            (Some(job), _) => {
                let found = tx
                    .query_opt(
                        "SELECT id FROM backup_job WHERE id = $1 AND organization_id = $2",
                        &[&job, &org],
                    )
                    .await?;
                if found.is_none() {
                    return nothing(format!("organization {org_slug} has no job {job}"));
                }
                vec![job]
            }
            (None, Some(app)) => {
                let found = tx
                    .query_opt(
                        "SELECT 1 FROM app WHERE id = $1 AND organization_id = $2",
                        &[&app, &org],
                    )
                    .await?;
                if found.is_none() {
                    return nothing(format!("organization {org_slug} has no app {app:?}"));
                }
                let jobs: Vec<Uuid> = tx
                    .query(
                        "SELECT j.id FROM backup_job j JOIN backup_job_app ja ON ja.job_id = j.id
                         WHERE ja.app_id = $1 AND j.organization_id = $2 AND j.enabled
                         ORDER BY j.created_at, j.id",
                        &[&app, &org],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if jobs.is_empty() {
                    return nothing(format!("no enabled backup job covers app {app:?}"));
                }
                jobs
            }
            (None, None) => return nothing("neither appId nor jobId was given".to_owned()),
        };
        let mut runs = Vec::with_capacity(jobs.len());
        let reason = RunReason::Deploy.as_str();
        for job in jobs {
            let inserted = tx
                .query_opt(
                    "INSERT INTO run_request (id, job_id, reason, request_id) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (job_id, request_id) WHERE reason = 'deploy' AND request_id IS NOT NULL
                     DO NOTHING RETURNING id",
                    &[&Uuid::new_v4(), &job, &reason, &request_id],
                )
                .await?;
            let run = match inserted {
                Some(row) => RequestedRun {
                    run_id: row.get(0),
                    job_id: job,
                    new: true,
                },
                None => RequestedRun {
                    run_id: tx
                        .query_one(
                            "SELECT id FROM run_request
                             WHERE job_id = $1 AND request_id = $2 AND reason = 'deploy'",
                            &[&job, &request_id],
                        )
                        .await?
                        .get(0),
                    job_id: job,
                    new: false,
                },
            };
            runs.push(run);
        }
        tx.commit().await?;
        Ok(Requested::Runs {
            organization_id: org,
            runs,
        })
    }

    /// How many runs the pipeline's `request_id` asked for in the organization (what a waiter
    /// counts `backup.completed` events up to).
    pub async fn deploy_request_runs(
        &self,
        organization_id: Uuid,
        request_id: &str,
    ) -> Result<i64, StoreError> {
        let client = self.pool().get().await?;
        Ok(client
            .query_one(
                "SELECT count(*) FROM run_request r JOIN backup_job j ON j.id = r.job_id
                 WHERE r.request_id = $1 AND r.reason = 'deploy' AND j.organization_id = $2",
                &[&request_id, &organization_id],
            )
            .await?
            .get(0))
    }
}

/// The seed's rule for auto-created jobs, inside the deploy's transaction.
async fn auto_job(
    tx: &deadpool_postgres::Transaction<'_>,
    org: Uuid,
    app: &DeployedApp,
) -> Result<AutoJob, StoreError> {
    if !app.volumes.iter().any(|v| v.persistent) {
        return Ok(AutoJob::NoPersistentVolume);
    }
    let covered: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM backup_job_app WHERE app_id = $1)
                 OR EXISTS (SELECT 1 FROM backup_job WHERE auto_for_app_id = $1)",
            &[&app.app_id],
        )
        .await?
        .get(0);
    if covered {
        return Ok(AutoJob::AlreadyCovered);
    }
    // `resolve_target`'s order always finds one of these when any exists.
    let target: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM backup_target
                            WHERE organization_id = $1 OR organization_id IS NULL)",
            &[&org],
        )
        .await?
        .get(0);
    if !target {
        return Ok(AutoJob::NoTarget);
    }
    // The job keeps no target of its own, so it follows the resolution order when targets change.
    let created = tx
        .query_opt(
            "INSERT INTO backup_job (organization_id, name, schedule, timezone, enabled,
                keep_all, keep_last, keep_daily, keep_weekly, keep_monthly,
                notify_on_success, notify_on_failure, auto_for_app_id)
             VALUES ($1, $2, $3, 'UTC', true, false, 1, 7, 1, 1, false, true, $4)
             ON CONFLICT (auto_for_app_id) DO NOTHING
             RETURNING id",
            &[
                &org,
                &format!("Auto: {}", app.app_name),
                &AUTO_SCHEDULE,
                &app.app_id,
            ],
        )
        .await?;
    let Some(row) = created else {
        return Ok(AutoJob::AlreadyCovered);
    };
    let job: Uuid = row.get(0);
    tx.execute(
        "INSERT INTO backup_job_app (job_id, app_id) VALUES ($1, $2)",
        &[&job, &app.app_id],
    )
    .await?;
    Ok(AutoJob::Created(job))
}

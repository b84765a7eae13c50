//! `vardo-backup status`: every job of every organization with its last run, next run, last
//! success and overdue flag, read from the database alone (no server, no Redis, no Docker) with
//! the queries the Backups page uses (`store/health.rs`).

use std::collections::HashMap;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use vardo_actors::schedule::Schedule;
use vardo_actors::store::Store;

use crate::config::Config;

/// One job's line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    pub organization: String,
    pub job: String,
    pub job_id: Uuid,
    pub enabled: bool,
    pub schedule: String,
    pub timezone: String,
    /// `success`, `failed` or `running`; null before the first run.
    pub last_outcome: Option<&'static str>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub overdue: bool,
}

impl JobStatus {
    /// An enabled job whose newest run failed, or that is overdue.
    fn needs_attention(&self) -> bool {
        self.enabled && (self.overdue || self.last_outcome == Some("failed"))
    }
}

/// A connection to the database only: `migrate` and `status` need nothing else. Without
/// `secret_key` the store's secret box is a throwaway one — these commands never seal or open
/// a secret field.
pub fn database_only(config: &Config) -> anyhow::Result<Store> {
    use secrecy::ExposeSecret as _;
    let secrets = match &config.secret_key {
        Some(key) => vardo_actors::secrets::SecretBox::from_base64(key)?,
        None => vardo_actors::secrets::SecretBox::from_base64(&secrecy::SecretString::from(
            vardo_actors::secrets::SecretBox::generate_key(),
        ))?,
    };
    Ok(Store::connect(
        config.required_database_url()?.expose_secret(),
        config.database_pool_size.max(1),
        secrets,
    )?)
}

/// Every job's status, organizations and jobs oldest first.
pub async fn collect(store: &Store) -> anyhow::Result<Vec<JobStatus>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let orgs = store.list_organizations(after, 200).await?;
        let Some(last) = orgs.last() else { break };
        after = Some((last.created_at, last.id));
        for org in &orgs {
            let runs: HashMap<_, _> = store.last_runs(org.id).await?.into_iter().collect();
            let successes: HashMap<_, _> =
                store.last_successes(org.id).await?.into_iter().collect();
            let mut jobs_after = None;
            loop {
                let jobs = store.list_job_records(org.id, jobs_after, 500).await?;
                let Some(last) = jobs.last() else { break };
                jobs_after = Some((last.created_at, last.job.id));
                for r in &jobs {
                    let j = &r.job;
                    let run = runs.get(&j.id);
                    out.push(JobStatus {
                        organization: org.slug.clone(),
                        job: j.name.clone(),
                        job_id: j.id,
                        enabled: j.enabled,
                        schedule: j.schedule.clone(),
                        timezone: j.timezone.clone(),
                        last_outcome: run.map(|r| r.outcome),
                        last_run_at: run.map(|r| r.finished_at.unwrap_or(r.started_at)),
                        next_run_at: j
                            .enabled
                            .then(|| Schedule::parse(&j.schedule, &j.timezone).ok())
                            .flatten()
                            .and_then(|s| s.next_after(Utc::now())),
                        last_success_at: successes.get(&j.id).map(|s| s.finished_at),
                        overdue: r.overdue,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "—".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// The table a person reads.
fn table(jobs: &[JobStatus]) -> String {
    let header = [
        "ORGANIZATION",
        "JOB",
        "LAST RUN",
        "NEXT RUN",
        "LAST SUCCESS",
        "OVERDUE",
    ];
    let rows: Vec<[String; 6]> = jobs
        .iter()
        .map(|j| {
            [
                j.organization.clone(),
                if j.enabled {
                    j.job.clone()
                } else {
                    format!("{} (disabled)", j.job)
                },
                match j.last_outcome {
                    Some(o) => format!("{o} {}", when(j.last_run_at)),
                    None => "never".to_owned(),
                },
                when(j.next_run_at),
                when(j.last_success_at),
                if j.overdue { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header)];
    for row in &rows {
        out.push(line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]));
    }
    out.join("\n")
}

/// Prints the status; exits 0 when no enabled job needs attention, 1 when one failed its last
/// run or is overdue.
pub async fn status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let store = database_only(config)?;
    let jobs = collect(&store)
        .await
        .context("reading the jobs from the database")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else if jobs.is_empty() {
        println!("no jobs");
    } else {
        println!("{}", table(&jobs));
    }
    Ok(if jobs.iter().any(JobStatus::needs_attention) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

//! The retention commands: `retention` plans a policy over timestamps read on stdin and prints the
//! plan as JSON (no configuration, no database); `prune --job` prints a job's plan (`--dry-run`) or
//! prunes the job now.

use std::io::BufRead;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vardo_actors::model::RetentionPolicy;
use vardo_actors::pruner::{self, Outcome};
use vardo_actors::retention::{self, Candidate, Reason, RetentionError};

use crate::startup::Application;

/// `vardo-backup retention`: the policy, as `restic forget` spells it.
#[derive(Debug, clap::Args)]
pub struct RetentionArgs {
    /// Keep the N newest backups.
    #[arg(long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N newest hours that have one.
    #[arg(long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the N newest days that have one.
    #[arg(long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the N newest ISO weeks that have one.
    #[arg(long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the N newest months that have one.
    #[arg(long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the N newest years that have one.
    #[arg(long, value_name = "N", value_parser = count, allow_hyphen_values = true)]
    pub keep_yearly: Option<u32>,
    /// Keep every backup.
    #[arg(long)]
    pub keep_all: bool,
    /// The IANA time zone whose hours, days, weeks, months and years the rules count in.
    #[arg(long, value_name = "TZ", default_value = "UTC")]
    pub timezone: String,
}

fn count(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| format!("expected a whole number, 0 or more, got {s:?}"))
}

#[derive(Debug, thiserror::Error)]
enum InputError {
    #[error("line {line}: {text:?} is not an RFC 3339 timestamp ({reason})")]
    Line {
        line: usize,
        text: String,
        reason: chrono::ParseError,
    },
    #[error("cannot read stdin: {0}")]
    Read(#[from] std::io::Error),
    #[error(transparent)]
    TimeZone(#[from] RetentionError),
    #[error("{0}")]
    Policy(String),
}

impl RetentionArgs {
    fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_all: self.keep_all,
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }
}

/// `vardo-backup retention`: exit 0 with the JSON plan, or 2 with the reason (and line) on stderr.
pub fn retention(args: &RetentionArgs) -> ExitCode {
    match plan_input(args, std::io::stdin().lock()) {
        Ok(plan) => match serde_json::to_string(&plan) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: cannot print the plan: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `{"keep":[{"time":…,"reasons":[…]}],"prune":[{"time":…}]}`, newest first; each time as it was
/// given. Blank lines are skipped; line numbers count them.
fn plan_input(args: &RetentionArgs, input: impl BufRead) -> Result<PlanOut, InputError> {
    let tz = retention::parse_time_zone(&args.timezone)?;
    let policy = args.policy();
    policy.validate().map_err(InputError::Policy)?;
    let mut texts = Vec::new();
    let mut candidates = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let time: DateTime<Utc> = DateTime::parse_from_rfc3339(text)
            .map_err(|reason| InputError::Line {
                line: n + 1,
                text: text.to_owned(),
                reason,
            })?
            .with_timezone(&Utc);
        candidates.push(Candidate {
            id: texts.len(),
            time,
        });
        texts.push(text.to_owned());
    }
    let plan = retention::plan(candidates, &policy, tz);
    let text = |id: usize| texts.get(id).cloned().unwrap_or_default();
    Ok(PlanOut {
        keep: plan
            .keep
            .into_iter()
            .map(|k| KeepOut {
                time: text(k.id),
                reasons: k.reasons,
            })
            .collect(),
        prune: plan
            .prune
            .into_iter()
            .map(|c| PruneOut { time: text(c.id) })
            .collect(),
    })
}

/// The printed plan; field order as documented.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
struct PlanOut {
    keep: Vec<KeepOut>,
    prune: Vec<PruneOut>,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize)]
struct KeepOut {
    time: String,
    reasons: Vec<Reason>,
}

#[derive(Debug, PartialEq, Eq, serde::Serialize)]
struct PruneOut {
    time: String,
}

/// `vardo-backup prune --job`: prints the plan (`dry_run`), or prunes now and prints one line per
/// pruned backup; exits 1 if any delete failed.
pub async fn prune(app: &Application, job: Uuid, dry_run: bool) -> anyhow::Result<ExitCode> {
    let engine = app.engine();
    let plan = pruner::plan(engine, job).await?;
    if dry_run {
        for series in &plan.series {
            let name = format!("{}/{}", series.app_name, series.volume_name);
            for k in &series.keep {
                let reasons: Vec<&str> = k.reasons.iter().map(|r| r.as_str()).collect();
                println!(
                    "{name} keep {} {} {}",
                    k.backup.id,
                    when(&k.backup),
                    reasons.join(",")
                );
            }
            for b in &series.prune {
                println!(
                    "{name} prune {} {} {}",
                    b.id,
                    when(b),
                    b.storage_path.as_deref().unwrap_or("-")
                );
            }
        }
        println!(
            "dry run: {} to prune, {} to keep in {} series; nothing was changed",
            plan.prune_count(),
            plan.keep_count(),
            plan.series.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let report = pruner::execute(engine, &plan).await?;
    for r in &report.results {
        let name = format!("{}/{}", r.app_name, r.volume_name);
        match &r.outcome {
            Outcome::Pruned => println!(
                "{name} pruned {} {}",
                r.backup_id,
                r.storage_path.as_deref().unwrap_or("-")
            ),
            Outcome::Failed(why) => println!("{name} failed {} {why}", r.backup_id),
            Outcome::Deferred(why) => println!("{name} deferred {} {why}", r.backup_id),
        }
    }
    let deferred = report.count(|o| matches!(o, Outcome::Deferred(_)));
    println!(
        "pruned {}, failed {}, deferred {}",
        report.pruned(),
        report.failed(),
        deferred
    );
    Ok(if report.failed() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn when(b: &vardo_actors::model::Backup) -> String {
    b.finished_at
        .unwrap_or(b.created_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(keep_daily: Option<u32>) -> RetentionArgs {
        RetentionArgs {
            keep_last: None,
            keep_hourly: None,
            keep_daily,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_all: false,
            timezone: "UTC".into(),
        }
    }

    #[test]
    fn plans_stdin_lines_newest_first_keeping_their_text() {
        let input = "2024-01-01T10:00:00Z\n\n2024-01-02T11:00:00+01:00\n2024-01-02T09:00:00Z\n";
        let plan = plan_input(&args(Some(1)), input.as_bytes()).unwrap_or_default();
        assert_eq!(
            serde_json::to_string(&plan).unwrap_or_default(),
            r#"{"keep":[{"time":"2024-01-02T11:00:00+01:00","reasons":["daily"]}],"prune":[{"time":"2024-01-02T09:00:00Z"},{"time":"2024-01-01T10:00:00Z"}]}"#
        );
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let input = "2024-01-01T10:00:00Z\n\nyesterday\n";
        let err = plan_input(&args(Some(1)), input.as_bytes())
            .map(|_| ())
            .expect_err("a bad line is refused");
        assert!(
            err.to_string().starts_with("line 3: \"yesterday\""),
            "{err}"
        );
        assert!(count("-1").is_err());
        let err = plan_input(&args(Some(0)), "".as_bytes())
            .map(|_| ())
            .expect_err("all zero is refused");
        assert!(err.to_string().contains("every keep value is 0"), "{err}");
    }
}

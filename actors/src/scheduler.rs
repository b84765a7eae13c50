//! Scheduler: ticks at the start of every wall-clock minute, finds the jobs due since the last
//! minute evaluated, and starts each at most once per scheduled minute across every instance.
//!
//! Exactly-once has two guards: the seed's Redis lock `lock:backup:{jobId}:{minute}` (61 s), taken
//! first so that instances racing in the same minute do not even reach the database, and a
//! compare-and-set of the job's `last_scheduled_for` in Postgres, which still holds when a late or
//! restarted scheduler catches up a minute whose lock has expired.
//!
//! Missed minutes: a tick evaluates every minute since the last one evaluated (by any instance,
//! remembered in `scheduler_state`), at most `catch_up` back; a job due once or more in that span
//! fires once, for its latest due minute. While Redis or Postgres does not answer, a tick fires
//! nothing, logs one error, and does not move the evaluated minute, so the next good tick catches up.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::crew::Crew;
use crate::engine::Engine;
use crate::messages::{Report, StartRun};
use crate::metrics::LockOutcome;
use crate::model::RunReason;
use crate::run::RunSupervisor;
use crate::schedule::{minute_of, Schedule};
use crate::store::{ScheduledJob, StoreError};
use crate::worker::WorkerBook;

/// The Redis lock's time to live, per the seed.
const LOCK_TTL: Duration = Duration::from_millis(61_000);

/// Evaluate the minute containing `now` (and any missed since the last evaluated one).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<TickReport, TickError>")]
pub struct Tick {
    pub now: DateTime<Utc>,
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// The minutes evaluated: `(from, to]`, or None when the tick's minute was already evaluated.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub jobs: usize,
    /// (job, scheduled minute) started by this instance.
    pub started: Vec<(Uuid, DateTime<Utc>)>,
    /// Due, but another instance held the minute's lock or had already fired it.
    pub taken_elsewhere: usize,
    /// Due, but the previous run is still going.
    pub busy: usize,
    pub invalid_schedules: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("redis does not answer, no job fires this minute: {0}")]
    Redis(String),
    #[error("postgres does not answer, no job fires this minute: {0}")]
    Store(#[from] StoreError),
}

/// The span of minutes a tick at `minute` evaluates: after the last evaluated minute (this
/// instance's or any instance's), never more than `catch_up` back; None if already evaluated.
pub fn evaluation_window(
    last_here: Option<DateTime<Utc>>,
    last_anywhere: Option<DateTime<Utc>>,
    minute: DateTime<Utc>,
    catch_up: Duration,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let earliest =
        minute - chrono::Duration::from_std(catch_up).unwrap_or(chrono::Duration::hours(1));
    let last = last_here.max(last_anywhere);
    let from = match last {
        Some(last) => last.max(earliest),
        // First start ever: only this minute.
        None => minute - chrono::Duration::minutes(1),
    };
    (from < minute).then_some((from, minute))
}

pub struct Scheduler {
    engine: Engine,
    crew: Crew,
    supervisor: Addr<RunSupervisor>,
    instance: String,
    last_evaluated: Option<DateTime<Utc>>,
    /// A tick is a task: it failed when it erred (Redis or Postgres away).
    book: WorkerBook,
}

impl Scheduler {
    pub fn new(
        engine: Engine,
        crew: Crew,
        supervisor: Addr<RunSupervisor>,
        instance: String,
    ) -> Self {
        Self {
            engine,
            crew,
            supervisor,
            instance,
            last_evaluated: None,
            book: WorkerBook::new("scheduler"),
        }
    }

    /// Ticks again just after the next minute starts (re-aligned every time, so no drift).
    fn schedule_next(&self, ctx: &mut Context<Self>) {
        let now = Utc::now();
        let next = minute_of(now) + chrono::Duration::minutes(1);
        let wait = (next - now).to_std().unwrap_or_default() + Duration::from_millis(50);
        ctx.run_later(wait, |act, ctx| {
            ctx.notify(Tick { now: Utc::now() });
            act.schedule_next(ctx);
        });
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Tick { now: Utc::now() });
        self.schedule_next(ctx);
    }
}

impl Handler<Report> for Scheduler {
    type Result = MessageResult<Report>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.book.status())
    }
}

impl Handler<Tick> for Scheduler {
    type Result = AtomicResponse<Self, Result<TickReport, TickError>>;

    fn handle(&mut self, msg: Tick, _: &mut Context<Self>) -> Self::Result {
        let (engine, crew, supervisor, instance) = (
            self.engine.clone(),
            self.crew.clone(),
            self.supervisor.clone(),
            self.instance.clone(),
        );
        let last = self.last_evaluated;
        let task = self.book.begin();
        AtomicResponse::new(Box::pin(
            async move {
                let started = std::time::Instant::now();
                let result = tick(&engine, &crew, &supervisor, &instance, last, msg.now).await;
                engine.metrics().record_tick(started.elapsed());
                result
            }
            .into_actor(self)
            .map(|result, act, _| {
                let result = task.end(result);
                match &result {
                    Ok(report) => {
                        if let Some((_, to)) = report.window {
                            act.last_evaluated = Some(to);
                        }
                        if !report.started.is_empty() {
                            tracing::info!(
                                started = report.started.len(),
                                "scheduled runs started"
                            );
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "scheduler tick failed"),
                }
                result
            }),
        ))
    }
}

#[tracing::instrument(skip(engine, crew, supervisor, last_here))]
async fn tick(
    engine: &Engine,
    crew: &Crew,
    supervisor: &Addr<RunSupervisor>,
    instance: &str,
    last_here: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<TickReport, TickError> {
    let store = engine.store();
    if engine.is_shutting_down() {
        // The minute is left unevaluated, for another instance or the next start to catch up.
        return Ok(TickReport::default());
    }
    engine.ping_redis().await.map_err(TickError::Redis)?;
    let minute = minute_of(now);
    let last_anywhere = store.last_evaluated_minute().await?;
    let mut report = TickReport {
        window: evaluation_window(last_here, last_anywhere, minute, engine.settings().catch_up),
        ..Default::default()
    };
    let Some((from, to)) = report.window else {
        return Ok(report);
    };
    let jobs = store.enabled_jobs().await?;
    report.jobs = jobs.len();
    for job in &jobs {
        let schedule = match Schedule::parse(&job.schedule, &job.timezone) {
            Ok(s) => s,
            Err(e) => {
                report.invalid_schedules += 1;
                tracing::error!(job_id = %job.id, error = %e, "job skipped: its schedule is invalid");
                continue;
            }
        };
        if let Some(due) = schedule.latest_due_between(from, to) {
            fire(engine, crew, supervisor, instance, job, due, &mut report).await?;
        }
        schedule_drill(engine, crew, instance, job, from, to).await?;
    }
    store.record_evaluated_minute(to).await?;
    crate::overdue::check_overdue(engine, &jobs, now).await?;
    Ok(report)
}

async fn fire(
    engine: &Engine,
    crew: &Crew,
    supervisor: &Addr<RunSupervisor>,
    instance: &str,
    job: &ScheduledJob,
    due: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), TickError> {
    if engine.is_shutting_down() {
        return Ok(());
    }
    let key = format!("lock:backup:{}:{}", job.id, due.timestamp().div_euclid(60));
    let held = crew.take_lock(&key, instance, LOCK_TTL).await;
    let outcome = match &held {
        Ok(true) => LockOutcome::Acquired,
        Ok(false) => LockOutcome::Contended,
        Err(_) => LockOutcome::Error,
    };
    engine.metrics().record_lock("backup", outcome);
    if !held.map_err(|e| TickError::Redis(e.to_string()))? {
        report.taken_elsewhere += 1;
        return Ok(());
    }
    let fired = fire_locked(engine, supervisor, job, due, report).await;
    if fired.is_err() {
        // The minute was not fired: give its lock back, so that the next good tick (here or on
        // another instance) fires it instead of finding it taken until the lock expires.
        if let Err(e) = crew.release_lock(&key, instance).await {
            tracing::warn!(%key, error = %e, "could not release the minute's lock after an error");
        }
    }
    fired
}

/// Records the job's drill due in the window, if any, under the minute's drill lock; the row's
/// (job, slot) is unique, so the drill happens once across instances, and any scheduler
/// instance's dispatcher claims it.
async fn schedule_drill(
    engine: &Engine,
    crew: &Crew,
    instance: &str,
    job: &ScheduledJob,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), TickError> {
    let Some(expr) = &job.drill_schedule else {
        return Ok(());
    };
    let due = match Schedule::parse(expr, &job.timezone) {
        Ok(s) => s.latest_due_between(from, to),
        Err(e) => {
            tracing::error!(job_id = %job.id, error = %e, "drill skipped: its schedule is invalid");
            return Ok(());
        }
    };
    let Some(due) = due else {
        return Ok(());
    };
    let key = format!("lock:drill:{}:{}", job.id, due.timestamp().div_euclid(60));
    let held = crew.take_lock(&key, instance, LOCK_TTL).await;
    engine.metrics().record_lock(
        "drill",
        match &held {
            Ok(true) => LockOutcome::Acquired,
            Ok(false) => LockOutcome::Contended,
            Err(_) => LockOutcome::Error,
        },
    );
    if !held.map_err(|e| TickError::Redis(e.to_string()))? {
        return Ok(());
    }
    if engine.store().insert_scheduled_drill(job.id, due).await? {
        tracing::info!(job_id = %job.id, minute = %due, "drill scheduled");
    }
    Ok(())
}

/// The part of [`fire`] done under the minute's lock.
async fn fire_locked(
    engine: &Engine,
    supervisor: &Addr<RunSupervisor>,
    job: &ScheduledJob,
    due: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), TickError> {
    let store = engine.store();
    if store
        .job_has_live_run(job.id, engine.settings().run_lease)
        .await?
    {
        report.busy += 1;
        engine.metrics().record_skipped_run("busy");
        tracing::warn!(job_id = %job.id, minute = %due, "skipped: the job's previous run is still going");
        return Ok(());
    }
    if !store.claim_scheduled_minute(job.id, due).await? {
        report.taken_elsewhere += 1;
        return Ok(());
    }
    supervisor.do_send(StartRun {
        run_id: None,
        job_id: job.id,
        reason: RunReason::Schedule,
        scheduled_for: Some(due),
        on_finish: None,
        request_id: None,
    });
    report.started.push((job.id, due));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_first_tick_evaluates_only_its_minute() {
        let m = at("2024-05-01T10:00:00Z");
        assert_eq!(
            evaluation_window(None, None, m, HOUR),
            Some((at("2024-05-01T09:59:00Z"), m))
        );
    }

    #[test]
    fn a_late_tick_in_the_same_minute_evaluates_nothing() {
        let m = at("2024-05-01T10:00:00Z");
        assert_eq!(evaluation_window(Some(m), None, m, HOUR), None);
        assert_eq!(
            evaluation_window(None, Some(m), m, HOUR),
            None,
            "another instance did it"
        );
    }

    #[test]
    fn a_gap_is_caught_up_from_the_last_evaluated_minute_within_the_window() {
        let m = at("2024-05-01T10:10:00Z");
        let last = at("2024-05-01T10:00:00Z");
        assert_eq!(
            evaluation_window(Some(last), None, m, HOUR),
            Some((last, m))
        );
        let long_ago = at("2024-04-30T10:00:00Z");
        assert_eq!(
            evaluation_window(None, Some(long_ago), m, HOUR),
            Some((at("2024-05-01T09:10:00Z"), m)),
            "bounded by the catch-up window"
        );
    }

    #[test]
    fn a_ten_minute_gap_fires_an_every_five_minutes_job_once() {
        let s = Schedule::parse("*/5 * * * *", "UTC").expect("valid");
        let (from, to) = evaluation_window(
            Some(at("2024-05-01T10:00:00Z")),
            None,
            at("2024-05-01T10:10:00Z"),
            HOUR,
        )
        .expect("window");
        assert_eq!(
            s.latest_due_between(from, to),
            Some(at("2024-05-01T10:10:00Z"))
        );
    }
}

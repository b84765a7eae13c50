//! Start-up in one place: builds the engine and its actors from the config, and serves.

use std::cell::OnceCell;
use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use uuid::Uuid;
use vardo_actors::crew::Crew;
use vardo_actors::engine::{Engine, EngineSettings};
use vardo_actors::messages::RunFinished;
use vardo_actors::model::{Restore, TargetKind, Verification};
use vardo_actors::run::RunSupervisor;

use crate::config::Config;
use crate::role::Role;

/// What start-up prepares from vardo.yml: the `backup:` section's system target and the
/// `self_backup:` job (`None`: self backups off).
#[derive(Clone)]
pub struct Preparation {
    pub system_target: Option<(
        TargetKind,
        serde_json::Value,
        Option<vardo_actors::encryption::Encryption>,
    )>,
    /// (target name, the rest of the plan).
    pub self_backup: Option<(String, std::sync::Arc<crate::config::SelfBackupConfig>)>,
    /// Disable the system job when `self_backup` is absent: `serve` only, so that a command run
    /// with another vardo.yml never turns the engine's backups off.
    pub disable_absent_self_backup: bool,
}

impl Preparation {
    pub fn of(config: &Config) -> Self {
        Self {
            system_target: config
                .backup
                .as_ref()
                .map(|b| (b.kind, b.target_json(), b.encryption.clone())),
            self_backup: config
                .self_backup
                .clone()
                .map(|s| (s.target.clone(), std::sync::Arc::new(s))),
            disable_absent_self_backup: false,
        }
    }
}

async fn prepare(engine: &Engine, preparation: Preparation) -> anyhow::Result<()> {
    engine.store().migrate().await.context("migrate")?;
    if let Some((kind, config, encryption)) = preparation.system_target {
        let encryption = encryption
            .map(|e| e.canonical())
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let id = engine
            .store()
            .upsert_system_target(SYSTEM_TARGET, kind, config, encryption.as_ref())
            .await
            .context("create the system target from the backup: section")?;
        tracing::info!(target_id = %id, "system target \"{SYSTEM_TARGET}\" is configured");
    }
    let plan = match &preparation.self_backup {
        Some((target, config)) => match engine.store().system_target_id(target).await? {
            Some(id) => Some(config.plan(id)),
            None => {
                tracing::error!(
                    "self_backup is off: self_backup.target names no system target ({target:?})"
                );
                return Ok(());
            }
        },
        None if preparation.disable_absent_self_backup => None,
        None => return Ok(()),
    };
    // The tenants' engine starts either way; an engine whose own backups cannot be set up says so.
    if let Err(e) = vardo_actors::self_backup::ensure(engine.store(), plan.as_ref()).await {
        tracing::error!(error = %e, "self_backup is off: its system job could not be set up");
    }
    Ok(())
}

/// The actors of the scheduler role; they live as long as this value.
#[allow(dead_code)]
struct Workers {
    supervisor: actix::Addr<vardo_actors::run::RunSupervisor>,
    scheduler: actix::Addr<vardo_actors::scheduler::Scheduler>,
    dispatcher: actix::Addr<vardo_actors::dispatcher::Dispatcher>,
    janitor: actix::Addr<vardo_actors::janitor::Janitor>,
    /// The deploy pipeline's consumer; None when `events.consume` is off.
    deploy_events: Option<actix::Addr<vardo_actors::deploy_events::DeployEvents>>,
}

/// How long `backup --job` waits for a given-up upload to abort before it exits.
const UPLOADS_SETTLE: Duration = Duration::from_secs(30);

/// The name of the system-level target that the `backup:` section of vardo.yml defines.
pub const SYSTEM_TARGET: &str = "System default";

pub fn init_tracing() {
    let filter = EnvFilter::try_from_env("VARDO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::progress_bar::LogWriter)
        // colours only on a terminal: `docker logs` and log files get plain text
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The built process: engine and actors; tests drive the real binary built from this.
pub struct Application {
    engine: Engine,
    /// Lock, VolumeRunner, Uploader and Pruner, started with the application.
    crew: Crew,
    /// `VARDO_ADMIN_TOKEN`, for the HTTP control plane.
    admin_token: Option<secrecy::SecretString>,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let engine = Engine::build(EngineSettings {
            database_url: config.required_database_url()?.clone(),
            database_pool_size: config.database_pool_size,
            redis_url: config.required_redis_url()?.clone(),
            secret_key: config.required_secret_key()?.clone(),
            age_identity_file: config.encryption.identity_file.clone(),
            docker_host: config.docker_host.clone(),
            helper_image: config.helper_image.clone(),
            allow_local_backups: config.allow_local_backups,
            read_volumes_from_host: config.read_volumes_from_host,
            heartbeat_interval: Duration::from_secs(config.scheduler.heartbeat_seconds),
            run_lease: Duration::from_secs(config.scheduler.lease_seconds),
            max_concurrent_runs: config.scheduler.max_concurrent_runs,
            stall_deadline: Duration::from_secs(config.scheduler.stall_seconds),
            catch_up: Duration::from_secs(u64::from(config.scheduler.catch_up_minutes) * 60),
            shutdown_grace: Duration::from_secs(config.scheduler.shutdown_grace_seconds),
            keep_pre_restore: Duration::from_secs(
                u64::from(config.restore.keep_pre_restore_days) * 86_400,
            ),
            drill_postgres_image: config.drill.postgres_image.clone(),
            notifications: config.notify_settings(),
            events: config.events.settings(),
        })?;
        Ok(Self {
            crew: Crew::start(&engine),
            engine,
            admin_token: config.admin_token.clone(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies the schema and the `backup:` section's system target.
    pub async fn prepare(&self, config: &Config) -> anyhow::Result<()> {
        prepare(&self.engine, Preparation::of(config)).await
    }

    /// `prepare` for a server: it keeps trying while the database is away (the server answers
    /// `/readyz` with 503 meanwhile), so start-up order does not matter. The receiver resolves once
    /// the schema is applied.
    pub fn prepare_in_background(&self, preparation: Preparation) -> oneshot::Receiver<()> {
        let engine = self.engine.clone();
        let (done, prepared) = oneshot::channel();
        actix::spawn(async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match prepare(&engine, preparation.clone()).await {
                    Ok(()) => {
                        engine.mark_prepared();
                        let _ = done.send(());
                        return;
                    }
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "start-up preparation failed; retrying"
                        );
                        engine.note_unprepared(format!("{e:#}"));
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        prepared
    }

    /// Serves HTTP at once; the workers of the scheduler role start once `prepared` resolves, so
    /// that none of them queries a schema that is still being applied.
    ///
    /// Returns after a graceful shutdown (SIGTERM or SIGINT): HTTP stops accepting and lets its
    /// requests finish, the workers take nothing new, the runs and restores get the grace period
    /// (`scheduler.shutdown_grace_seconds`) and are then failed "engine shutting down", uploads
    /// are aborted and this process's helper containers removed.
    pub async fn serve(
        &self,
        role: Role,
        listen: &str,
        prepared: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let mut signals = crate::shutdown::Signals::install().context("signal handlers")?;
        // The scheduler role's supervisor, once its workers started.
        let supervisor: Rc<OnceCell<Addr<RunSupervisor>>> = Rc::default();
        if role != Role::Web {
            // Bad notification settings stop the server now, not once the database answers.
            vardo_actors::notify::Senders::new(&self.engine.settings().notifications)
                .context("notification settings")?;
            let (engine, crew) = (self.engine.clone(), self.crew.clone());
            let started = Rc::clone(&supervisor);
            actix::spawn(async move {
                if prepared.await.is_err() || engine.is_shutting_down() {
                    return;
                }
                vardo_actors::instance::spawn_heartbeat(engine.clone());
                // Kept alive for as long as the server runs.
                let workers = start_workers(&engine, &crew);
                let _ = started.set(workers.supervisor.clone());
                // Notices are delivered where runs run; several instances share the outbox.
                let _notifier = match vardo_actors::notifier::Notifier::start(engine.clone()) {
                    Ok(addr) => {
                        crew.register("notifier", addr.clone().recipient());
                        Some(addr)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the notifier could not start");
                        None
                    }
                };
                // The events publisher drains the event outbox to Redis; instances share it.
                let _publisher = engine.settings().events.publish.then(|| {
                    vardo_actors::events_publisher::EventsPublisher::start(engine.clone())
                });
                std::future::pending::<()>().await;
            });
        }
        let grace = self.engine.settings().shutdown_grace;
        let server = crate::http::server(
            self.engine.clone(),
            self.crew.clone(),
            listen,
            self.admin_token.as_ref(),
            grace,
        )?;
        let http = server.handle();
        // The server runs as its own task: it must keep being polled to carry out a stop.
        let mut server = actix::spawn(server);
        let signal = tokio::select! {
            ended = &mut server => {
                // Without a stop asked for, the server only ends on an error.
                ended.context("http server task")?.context("http server")?;
                return Ok(());
            }
            signal = signals.next() => signal,
        };
        tracing::info!(
            signal,
            grace_s = grace.as_secs(),
            "shutting down: taking no new work"
        );
        let hurry = CancellationToken::new();
        let hurried = hurry.clone();
        actix::spawn(async move {
            let again = signals.next().await;
            tracing::warn!(signal = again, "second signal: ending the grace period now");
            hurried.cancel();
        });
        // HTTP stops accepting now, and its in-flight requests finish meanwhile (within the grace).
        let (report, ()) = tokio::join!(
            vardo_actors::shutdown::drain(&self.engine, supervisor.get(), &hurry),
            http.stop(true)
        );
        server
            .await
            .context("http server task")?
            .context("http server")?;
        tracing::info!(
            live = report.live,
            cancelled = report.cancelled,
            settled = report.settled,
            helpers_removed = report.helpers_removed,
            "shut down"
        );
        Ok(())
    }

    pub async fn run_job_now(&self, job: Uuid) -> anyhow::Result<RunFinished> {
        vardo_actors::instance::spawn_heartbeat(self.engine.clone());
        let supervisor =
            vardo_actors::run::RunSupervisor::start(self.engine.clone(), self.crew.clone());
        let outcome = vardo_actors::wait::run_and_wait(&supervisor, job).await;
        // A run that stalled or failed dropped its upload, which aborts in the background: the
        // command ends once that is done, so no multipart upload is left open behind it.
        if !vardo_actors::storage::uploads_settled(UPLOADS_SETTLE).await {
            tracing::error!(
                "an upload did not end within {UPLOADS_SETTLE:?}; its multipart upload may be left open"
            );
        }
        self.instance_stopped().await;
        let outcome = outcome?;
        // The command delivers its own run's notices before it exits: one attempt each. A notice
        // whose attempt failed stays in the outbox, and a running server (role all or scheduler)
        // retries it on schedule.
        match vardo_actors::notify::deliver_run(&self.engine, outcome.run_id).await {
            Ok(t) if t.retrying > 0 => tracing::warn!(
                delivered = t.delivered,
                failed = t.failed,
                retrying = t.retrying,
                "some notices were not delivered; a running server retries them"
            ),
            Ok(t) if t.failed > 0 => tracing::warn!(
                delivered = t.delivered,
                failed = t.failed,
                "some notices could not be delivered"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "notices not delivered; a running server delivers them")
            }
        }
        // And its run's events (backup.succeeded / failed, backup.completed): one attempt each;
        // what fails stays in the event outbox for a running server's publisher.
        if self.engine.settings().events.publish {
            match vardo_actors::events_publisher::publish_run(&self.engine, outcome.run_id).await {
                Ok(p) => {
                    if let Some(error) = p.error {
                        tracing::warn!(
                            published = p.published,
                            error,
                            "some events were not published; a running server publishes them"
                        );
                    }
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "events not published; a running server publishes them"
                ),
            }
        }
        Ok(outcome)
    }

    pub async fn restore_now(&self, backup: Uuid, safety_backup: bool) -> anyhow::Result<Restore> {
        vardo_actors::instance::spawn_heartbeat(self.engine.clone());
        let supervisor =
            vardo_actors::run::RunSupervisor::start(self.engine.clone(), self.crew.clone());
        let restore =
            vardo_actors::wait::restore_and_wait(&self.engine, &supervisor, backup, safety_backup)
                .await;
        self.instance_stopped().await;
        Ok(restore?)
    }

    pub async fn verify_now(&self, backup: Uuid) -> anyhow::Result<Verification> {
        vardo_actors::instance::spawn_heartbeat(self.engine.clone());
        let supervisor =
            vardo_actors::run::RunSupervisor::start(self.engine.clone(), self.crew.clone());
        let verified = vardo_actors::wait::verify_and_wait(&self.engine, &supervisor, backup).await;
        self.instance_stopped().await;
        Ok(verified?)
    }

    /// Drills the job here and waits for its end.
    pub async fn drill_now(&self, job: Uuid) -> anyhow::Result<vardo_actors::model::Drill> {
        vardo_actors::instance::spawn_heartbeat(self.engine.clone());
        let supervisor =
            vardo_actors::run::RunSupervisor::start(self.engine.clone(), self.crew.clone());
        let drilled = vardo_actors::wait::drill_and_wait(&self.engine, &supervisor, job).await;
        self.instance_stopped().await;
        Ok(drilled?)
    }

    /// The command's work is done: any helper it left may be removed by any janitor.
    async fn instance_stopped(&self) {
        if let Err(e) = self
            .engine
            .store()
            .stop_instance(self.engine.instance())
            .await
        {
            tracing::warn!(error = %e, "could not mark this instance stopped");
        }
    }
}

/// The scheduler role: runs (supervised), the scheduler, the request dispatcher, the janitor,
/// the deploy events consumer.
fn start_workers(engine: &Engine, crew: &Crew) -> Workers {
    use actix::Actor as _;
    use vardo_actors::{dispatcher::Dispatcher, janitor::Janitor, scheduler::Scheduler};
    let instance = engine.instance().to_owned();
    tracing::info!(%instance, "scheduler role started");
    let supervisor = vardo_actors::run::RunSupervisor::start(engine.clone(), crew.clone());
    let scheduler = Scheduler::new(
        engine.clone(),
        crew.clone(),
        supervisor.clone(),
        instance.clone(),
    )
    .start();
    crew.register("supervisor", supervisor.clone().recipient());
    crew.register("scheduler", scheduler.clone().recipient());
    Workers {
        scheduler,
        deploy_events: engine.settings().events.consume.then(|| {
            vardo_actors::deploy_events::DeployEvents::new(engine.clone(), instance.clone()).start()
        }),
        dispatcher: Dispatcher::new(engine.clone(), supervisor.clone(), instance).start(),
        janitor: Janitor::new(engine.clone(), crew.clone()).start(),
        supervisor,
    }
}

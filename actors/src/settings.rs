//! The engine's settings, built from the process configuration: what the engine itself needs, and
//! the notification and deploy-events settings its actors read. They live here, below every actor,
//! so that the engine handle and the modules that read them never import each other for them.

use std::time::Duration;

use secrecy::SecretString;

/// Settings the engine's actors read; built from the process configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub database_url: SecretString,
    pub database_pool_size: usize,
    pub redis_url: SecretString,
    pub secret_key: SecretString,
    /// An age identity file the engine decrypts archives with (besides the identities sealed in
    /// the database); `None`: those only.
    pub age_identity_file: Option<std::path::PathBuf>,
    pub docker_host: Option<String>,
    pub helper_image: String,
    pub allow_local_backups: bool,
    /// Read file volumes from their folders on the Docker host instead of through Docker's
    /// archive API (the engine must run on that host and be able to read them).
    pub read_volumes_from_host: bool,
    /// How often a run refreshes `heartbeat_at` on its unfinished rows.
    pub heartbeat_interval: Duration,
    /// Unfinished rows whose heartbeat is older than this belong to a dead engine.
    pub run_lease: Duration,
    /// Runs at once in this process; more wait with their rows `pending`.
    pub max_concurrent_runs: usize,
    /// A backup or restore that moves no byte for this long fails as stalled (see
    /// [`crate::progress`]).
    pub stall_deadline: Duration,
    /// How far back the scheduler looks for firings it missed.
    pub catch_up: Duration,
    /// How long a graceful shutdown lets runs and restores finish before it fails them.
    pub shutdown_grace: Duration,
    /// How long a restore's safety backup is kept.
    pub keep_pre_restore: Duration,
    /// The image of a dump's scratch container when no running container of the app's database
    /// shows which image it uses.
    pub drill_postgres_image: Option<String>,
    /// SMTP server, private-address switch and retry schedule of notifications.
    pub notifications: NotifySettings,
    /// The deploy pipeline's streams: consumed messages, dead letters, published results.
    pub events: EventSettings,
}

/// The notification settings of the process (`smtp:` and `notifications:` in vardo.yml).
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// lettre's URL form; `None`: email channels fail with a message saying so.
    pub smtp_url: Option<SecretString>,
    pub smtp_from: String,
    /// Lets webhook and Slack URLs reach private and loopback addresses.
    pub allow_private_addresses: bool,
    /// The wait before the 2nd attempt; each next wait is 3× longer.
    pub retry_base: Duration,
    /// Attempts per notice before it is `failed`.
    pub max_attempts: u32,
}

impl Default for NotifySettings {
    /// 4 attempts at about 0, 5, 20 and 65 s.
    fn default() -> Self {
        Self {
            smtp_url: None,
            smtp_from: "vardo-backup@localhost".to_owned(),
            allow_private_addresses: false,
            retry_base: Duration::from_secs(5),
            max_attempts: 4,
        }
    }
}

impl NotifySettings {
    /// The wait after the `attempt`-th failed attempt.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.retry_base
            .saturating_mul(3u32.saturating_pow(attempt.saturating_sub(1)))
    }
}

/// The stream names, group and redelivery policy (`events:` in vardo.yml).
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// Run the consumer (in the scheduler role).
    pub consume: bool,
    /// Publish run results to `backup_events_stream`.
    pub publish: bool,
    pub stream: String,
    pub group: String,
    pub dead_letter_stream: String,
    pub backup_events_stream: String,
    /// A pending message idle this long is claimed by a live consumer.
    pub claim_idle: Duration,
    /// Deliveries after which a failing message is dead-lettered.
    pub max_deliveries: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            consume: true,
            publish: true,
            stream: "vardo:events".to_owned(),
            group: "vardo-backup".to_owned(),
            dead_letter_stream: "vardo:events:dead".to_owned(),
            backup_events_stream: "vardo:backup-events".to_owned(),
            claim_idle: Duration::from_secs(60),
            max_deliveries: 5,
        }
    }
}

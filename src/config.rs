//! Configuration in layers: defaults → `vardo.yml` → environment. Unknown keys are an error that
//! names the key; secrets are `SecretString`s and print as `********`.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Yaml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use vardo_actors::model::{TargetConfig, TargetKind};

/// Environment variables and the config key each one sets.
const ENV_KEYS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database_url"),
    ("REDIS_URL", "redis_url"),
    ("DOCKER_HOST", "docker_host"),
    ("VARDO_LISTEN", "listen"),
    ("ALLOW_LOCAL_BACKUPS", "allow_local_backups"),
    ("VARDO_READ_VOLUMES_FROM_HOST", "read_volumes_from_host"),
    ("VARDO_SECRET_KEY", "secret_key"),
    ("VARDO_ADMIN_TOKEN", "admin_token"),
    ("VARDO_AGE_IDENTITY_FILE", "encryption.identity_file"),
    ("VARDO_HELPER_IMAGE", "helper_image"),
    ("VARDO_MAX_CONCURRENT_RUNS", "scheduler.max_concurrent_runs"),
    ("VARDO_RUN_LEASE_SECONDS", "scheduler.lease_seconds"),
    ("VARDO_HEARTBEAT_SECONDS", "scheduler.heartbeat_seconds"),
    ("VARDO_STALL_SECONDS", "scheduler.stall_seconds"),
    ("VARDO_CATCH_UP_MINUTES", "scheduler.catch_up_minutes"),
    (
        "VARDO_SHUTDOWN_GRACE_SECONDS",
        "scheduler.shutdown_grace_seconds",
    ),
    (
        "VARDO_KEEP_PRE_RESTORE_DAYS",
        "restore.keep_pre_restore_days",
    ),
    ("VARDO_DRILL_POSTGRES_IMAGE", "drill.postgres_image"),
    ("VARDO_SMTP_URL", "smtp.url"),
    ("VARDO_SMTP_FROM", "smtp.from"),
    (
        "VARDO_ALLOW_PRIVATE_WEBHOOKS",
        "notifications.allow_private_addresses",
    ),
    ("VARDO_NOTIFY_RETRY_BASE_MS", "notifications.retry_base_ms"),
    ("VARDO_NOTIFY_MAX_ATTEMPTS", "notifications.max_attempts"),
    ("VARDO_EVENTS_CONSUME", "events.consume"),
    ("VARDO_EVENTS_PUBLISH", "events.publish"),
    ("VARDO_EVENTS_STREAM", "events.stream"),
    ("VARDO_EVENTS_GROUP", "events.group"),
    (
        "VARDO_EVENTS_DEAD_LETTER_STREAM",
        "events.dead_letter_stream",
    ),
    ("VARDO_BACKUP_EVENTS_STREAM", "events.backup_events_stream"),
    (
        "VARDO_EVENTS_CLAIM_IDLE_SECONDS",
        "events.claim_idle_seconds",
    ),
    ("VARDO_EVENTS_MAX_DELIVERIES", "events.max_deliveries"),
];

/// The file used when neither `--config` nor `VARDO_CONFIG` names one, if it exists.
const DEFAULT_FILE: &str = "config/vardo.yml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Needed by every command but `config`, `healthcheck` and `retention`.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    #[serde(default = "default_pool_size")]
    pub database_pool_size: usize,
    /// Needed by the commands that run work (`serve`, `backup`, `restore`, …), not by `migrate`,
    /// `status` or `config`.
    #[serde(default)]
    pub redis_url: Option<SecretString>,
    #[serde(default)]
    pub docker_host: Option<String>,
    #[serde(default)]
    pub allow_local_backups: bool,
    /// Read file volumes from their folders on the Docker host (engine on that host, as root).
    #[serde(default)]
    pub read_volumes_from_host: bool,
    /// Seals secret fields in the database; needed wherever they are written or read.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    #[serde(default = "default_helper_image")]
    pub helper_image: String,
    /// The seed's `backup:` section: the system-level target "System default".
    #[serde(default)]
    pub backup: Option<SystemTargetConfig>,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub restore: RestoreConfig,
    #[serde(default)]
    pub drill: DrillConfig,
    /// `self_backup:` — the engine's own database, backed up by a system job; absent: off.
    #[serde(default)]
    pub self_backup: Option<SelfBackupConfig>,
    #[serde(default)]
    pub smtp: SmtpConfig,
    #[serde(default)]
    pub notifications: NotificationsConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub encryption: EncryptionConfig,
}

/// `encryption:` — the age identity file the engine decrypts archives with (targets choose
/// their recipients; identities can also be sealed in the database with `vardo-backup identity`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

/// `events:` — the deploy pipeline's Redis Streams: the messages consumed (in the scheduler
/// role), their dead letters, and the run results published.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    pub consume: bool,
    pub publish: bool,
    pub stream: String,
    pub group: String,
    /// Default: `{stream}:dead`.
    pub dead_letter_stream: Option<String>,
    pub backup_events_stream: String,
    /// A message pending this long (its consumer died, or handling it failed) is claimed by a
    /// live consumer.
    pub claim_idle_seconds: u64,
    /// Deliveries after which a failing message moves to the dead-letter stream.
    pub max_deliveries: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        let d = vardo_actors::deploy_events::EventSettings::default();
        Self {
            consume: d.consume,
            publish: d.publish,
            stream: d.stream,
            group: d.group,
            dead_letter_stream: None,
            backup_events_stream: d.backup_events_stream,
            claim_idle_seconds: d.claim_idle.as_secs(),
            max_deliveries: d.max_deliveries,
        }
    }
}

impl EventsConfig {
    /// The engine's event settings.
    pub fn settings(&self) -> vardo_actors::deploy_events::EventSettings {
        vardo_actors::deploy_events::EventSettings {
            consume: self.consume,
            publish: self.publish,
            stream: self.stream.clone(),
            group: self.group.clone(),
            dead_letter_stream: self
                .dead_letter_stream
                .clone()
                .unwrap_or_else(|| format!("{}:dead", self.stream)),
            backup_events_stream: self.backup_events_stream.clone(),
            claim_idle: std::time::Duration::from_secs(self.claim_idle_seconds),
            max_deliveries: self.max_deliveries,
        }
    }
}

/// `smtp:` — the server that sends notification emails.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// lettre's URL form: `smtps://user:pass@host:465`, `smtp://user:pass@host:587?tls=required`.
    #[serde(default)]
    pub url: Option<SecretString>,
    #[serde(default = "default_smtp_from")]
    pub from: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            url: None,
            from: default_smtp_from(),
        }
    }
}

fn default_smtp_from() -> String {
    vardo_actors::notify::NotifySettings::default().smtp_from
}

/// `notifications:` — where webhooks may go and how deliveries are retried.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// Lets webhook and Slack URLs reach private and loopback addresses.
    pub allow_private_addresses: bool,
    /// The wait before the second attempt; each next wait is three times longer.
    pub retry_base_ms: u64,
    pub max_attempts: u32,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        let d = vardo_actors::notify::NotifySettings::default();
        Self {
            allow_private_addresses: d.allow_private_addresses,
            retry_base_ms: u64::try_from(d.retry_base.as_millis()).unwrap_or(u64::MAX),
            max_attempts: d.max_attempts,
        }
    }
}

impl Config {
    /// The engine's notification settings.
    pub fn notify_settings(&self) -> vardo_actors::notify::NotifySettings {
        vardo_actors::notify::NotifySettings {
            smtp_url: self.smtp.url.clone(),
            smtp_from: self.smtp.from.clone(),
            allow_private_addresses: self.notifications.allow_private_addresses,
            retry_base: std::time::Duration::from_millis(self.notifications.retry_base_ms),
            max_attempts: self.notifications.max_attempts,
        }
    }
}

/// `restore:` — what restores keep.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreConfig {
    /// Days a restore's safety backup (of the contents it replaced) is kept before the janitor
    /// deletes it.
    pub keep_pre_restore_days: u32,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        Self {
            keep_pre_restore_days: 7,
        }
    }
}

/// `self_backup:` — when and where the engine's own database (DATABASE_URL) is backed up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfBackupConfig {
    /// Five-field cron, e.g. `0 3 * * *`.
    pub schedule: String,
    #[serde(default = "utc")]
    pub timezone: String,
    /// A system-level target's name (default: "System default", the `backup:` section's).
    #[serde(default = "system_target")]
    pub target: String,
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    #[serde(default)]
    pub compression: Option<String>,
    #[serde(default)]
    pub notify_on_success: bool,
    #[serde(default = "yes")]
    pub notify_on_failure: bool,
}

impl SelfBackupConfig {
    /// Its retention; keep_last 7 when it names none.
    pub fn retention(&self) -> vardo_actors::model::RetentionPolicy {
        let none = self.keep_last.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none();
        vardo_actors::model::RetentionPolicy {
            keep_all: false,
            keep_last: if none { Some(7) } else { self.keep_last },
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            ..Default::default()
        }
    }

    /// The system job's settings, once its target's id is known.
    pub fn plan(&self, target_id: uuid::Uuid) -> vardo_actors::self_backup::SelfBackupPlan {
        vardo_actors::self_backup::SelfBackupPlan {
            schedule: self.schedule.clone(),
            timezone: self.timezone.clone(),
            target_id,
            retention: self.retention(),
            compression: self
                .compression
                .as_deref()
                .and_then(vardo_actors::model::Compression::parse)
                .unwrap_or(vardo_actors::model::Compression::Gzip),
            notify_on_success: self.notify_on_success,
            notify_on_failure: self.notify_on_failure,
        }
    }
}

fn utc() -> String {
    "UTC".to_owned()
}

fn system_target() -> String {
    "System default".to_owned()
}

fn yes() -> bool {
    true
}

/// `drill:` — what drills need.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillConfig {
    /// The image of a dump's scratch container when no running container of the app's database
    /// shows its image.
    pub postgres_image: Option<String>,
}

/// `scheduler:` — runs, leases and catch-up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Runs at once in this instance; more wait with their rows `pending`.
    pub max_concurrent_runs: usize,
    /// A `pending`/`running` row whose heartbeat is older than this is failed by any instance.
    pub lease_seconds: u64,
    /// How often a run refreshes its rows' heartbeat (well below the lease).
    pub heartbeat_seconds: u64,
    /// How far back a late tick or a restarted scheduler looks for missed firings.
    pub catch_up_minutes: u32,
    /// A backup or restore that moves no byte for this long fails as stalled.
    pub stall_seconds: u64,
    /// On SIGTERM/SIGINT, how long runs, restores and HTTP requests may take to finish before
    /// they are failed "engine shutting down".
    pub shutdown_grace_seconds: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_concurrent_runs: 2,
            lease_seconds: 120,
            heartbeat_seconds: 15,
            catch_up_minutes: 60,
            stall_seconds: 300,
            shutdown_grace_seconds: 60,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_pool_size() -> usize {
    16
}

fn default_helper_image() -> String {
    "busybox:1.36".into()
}

/// `backup:` in vardo.yml, with the seed's snake_case names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemTargetConfig {
    #[serde(rename = "type")]
    pub kind: TargetKind,
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub private_key: Option<SecretString>,
    #[serde(default)]
    pub path: Option<String>,
    /// `{type: age, recipients: [...]}` or `{type: none}`; absent: the stored setting is kept
    /// (plain for a new target), so that one set through the API survives a restart.
    #[serde(default)]
    pub encryption: Option<vardo_actors::encryption::Encryption>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error(
        "configuration: {key} is not set (set {env}, or `{key}:` in the configuration file); \
         this command needs it"
    )]
    Missing {
        key: &'static str,
        env: &'static str,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // One message per problem, each naming its key and where the value came from.
        Self::Invalid(
            e.into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

impl Config {
    /// Loads the layers. `file` is `--config`; without it `VARDO_CONFIG`, then `config/vardo.yml`
    /// when present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("VARDO_CONFIG").map(PathBuf::from));
        let mut figment = Figment::new();
        match explicit {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path)),
            Some(path) => figment = figment.merge(Yaml::file(path)),
            None if Path::new(DEFAULT_FILE).exists() => {
                figment = figment.merge(Yaml::file(DEFAULT_FILE))
            }
            None => {}
        }
        let env = Env::raw().filter_map(|key| {
            ENV_KEYS
                .iter()
                .find(|(var, _)| key == *var)
                .map(|(_, field)| (*field).into())
        });
        let config: Config = figment.merge(env).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// `database_url`, or the error naming the setting.
    pub fn required_database_url(&self) -> Result<&SecretString, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            key: "database_url",
            env: "DATABASE_URL",
        })
    }

    /// `redis_url`, or the error naming the setting.
    pub fn required_redis_url(&self) -> Result<&SecretString, ConfigError> {
        self.redis_url.as_ref().ok_or(ConfigError::Missing {
            key: "redis_url",
            env: "REDIS_URL",
        })
    }

    /// `secret_key`, or the error naming the setting.
    pub fn required_secret_key(&self) -> Result<&SecretString, ConfigError> {
        self.secret_key.as_ref().ok_or(ConfigError::Missing {
            key: "secret_key",
            env: "VARDO_SECRET_KEY",
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.secret_key {
            vardo_actors::secrets::SecretBox::from_base64(key)
                .map_err(|e| ConfigError::Invalid(format!("secret_key: {e}")))?;
        }
        if let Some(backup) = &self.backup {
            backup.target_config()?;
            if let Some(encryption) = &backup.encryption {
                encryption
                    .recipients()
                    .map_err(|e| ConfigError::Invalid(format!("backup.encryption: {e}")))?;
            }
        }
        if let Some(sb) = &self.self_backup {
            vardo_actors::schedule::Schedule::parse(&sb.schedule, &sb.timezone)
                .map_err(|e| ConfigError::Invalid(format!("self_backup.schedule: {e}")))?;
            if let Some(c) = &sb.compression {
                vardo_actors::model::Compression::parse(c).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "self_backup.compression: {c:?} is not gzip or zstd"
                    ))
                })?;
            }
            sb.retention()
                .validate()
                .map_err(|e| ConfigError::Invalid(format!("self_backup: {e}")))?;
        }
        let s = &self.scheduler;
        if s.max_concurrent_runs == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.max_concurrent_runs must be at least 1".into(),
            ));
        }
        if s.heartbeat_seconds == 0 || s.heartbeat_seconds * 2 > s.lease_seconds {
            return Err(ConfigError::Invalid(
                "scheduler.heartbeat_seconds must be at least 1 and at most half of scheduler.lease_seconds".into(),
            ));
        }
        if s.stall_seconds == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.stall_seconds must be at least 1".into(),
            ));
        }
        if self.restore.keep_pre_restore_days == 0 {
            // A safety backup deleted before anyone could use it would be an undo that is not.
            return Err(ConfigError::Invalid(
                "restore.keep_pre_restore_days must be at least 1".into(),
            ));
        }
        if let Some(url) = &self.smtp.url {
            vardo_actors::notify::email::check_smtp_url(url.expose_secret())
                .map_err(|e| ConfigError::Invalid(format!("smtp.url: {e}")))?;
        }
        vardo_actors::notify::email::check_mailbox(&self.smtp.from)
            .map_err(|e| ConfigError::Invalid(format!("smtp.from: {e}")))?;
        if self.notifications.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "notifications.max_attempts must be at least 1".into(),
            ));
        }
        let e = self.events.settings();
        for (key, value) in [
            ("events.stream", &e.stream),
            ("events.group", &e.group),
            ("events.dead_letter_stream", &e.dead_letter_stream),
            ("events.backup_events_stream", &e.backup_events_stream),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::Invalid(format!("{key} must not be empty")));
            }
        }
        if e.dead_letter_stream == e.stream || e.backup_events_stream == e.stream {
            return Err(ConfigError::Invalid(
                "events.dead_letter_stream and events.backup_events_stream must differ from events.stream".into(),
            ));
        }
        if e.claim_idle.is_zero() || e.max_deliveries == 0 {
            return Err(ConfigError::Invalid(
                "events.claim_idle_seconds and events.max_deliveries must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The effective configuration with every secret masked, for `vardo-backup config`.
    pub fn redacted(&self) -> serde_json::Value {
        let mask = |s: &SecretString| mask_url_or_secret(s.expose_secret());
        serde_json::json!({
            "listen": self.listen,
            "database_url": self.database_url.as_ref().map(mask),
            "database_pool_size": self.database_pool_size,
            "redis_url": self.redis_url.as_ref().map(mask),
            "docker_host": self.docker_host,
            "allow_local_backups": self.allow_local_backups,
            "read_volumes_from_host": self.read_volumes_from_host,
            "secret_key": self.secret_key.as_ref().map(|_| MASK),
            "admin_token": self.admin_token.as_ref().map(|_| MASK),
            "helper_image": self.helper_image,
            "scheduler": {
                "max_concurrent_runs": self.scheduler.max_concurrent_runs,
                "lease_seconds": self.scheduler.lease_seconds,
                "heartbeat_seconds": self.scheduler.heartbeat_seconds,
                "catch_up_minutes": self.scheduler.catch_up_minutes,
                "stall_seconds": self.scheduler.stall_seconds,
                "shutdown_grace_seconds": self.scheduler.shutdown_grace_seconds,
            },
            "restore": {
                "keep_pre_restore_days": self.restore.keep_pre_restore_days,
            },
            "drill": {
                "postgres_image": self.drill.postgres_image,
            },
            "self_backup": self.self_backup.as_ref().map(|s| serde_json::json!({
                "schedule": s.schedule,
                "timezone": s.timezone,
                "target": s.target,
            })),
            "smtp": {
                "url": self.smtp.url.as_ref().map(mask),
                "from": self.smtp.from,
            },
            "notifications": {
                "allow_private_addresses": self.notifications.allow_private_addresses,
                "retry_base_ms": self.notifications.retry_base_ms,
                "max_attempts": self.notifications.max_attempts,
            },
            "events": {
                "consume": self.events.consume,
                "publish": self.events.publish,
                "stream": self.events.stream,
                "group": self.events.group,
                "dead_letter_stream": self.events.settings().dead_letter_stream,
                "backup_events_stream": self.events.backup_events_stream,
                "claim_idle_seconds": self.events.claim_idle_seconds,
                "max_deliveries": self.events.max_deliveries,
            },
            "backup": self.backup.as_ref().map(|b| serde_json::json!({
                "type": b.kind.as_str(),
                "bucket": b.bucket, "region": b.region, "access_key": b.access_key,
                "secret_key": b.secret_key.as_ref().map(|_| MASK),
                "endpoint": b.endpoint, "prefix": b.prefix, "host": b.host,
                "username": b.username, "port": b.port,
                "private_key": b.private_key.as_ref().map(|_| MASK), "path": b.path,
                "encryption": b.encryption,
            })),
            "encryption": {
                "identity_file": self.encryption.identity_file,
            },
        })
    }
}

pub const MASK: &str = "********";

/// A URL keeps its shape with the password masked; anything else is masked whole.
fn mask_url_or_secret(value: &str) -> String {
    match value.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:{MASK}@{host}")
            }
            None => value.to_owned(),
        },
        None => MASK.to_owned(),
    }
}

impl SystemTargetConfig {
    /// The target's JSON config in the API's camelCase shape (secrets in clear, sealed by the store).
    pub fn target_json(&self) -> serde_json::Value {
        let secret = |s: &Option<SecretString>| s.as_ref().map(|v| v.expose_secret().to_owned());
        let mut json = match self.kind {
            TargetKind::S3 | TargetKind::R2 | TargetKind::B2 => serde_json::json!({
                "bucket": self.bucket, "region": self.region, "accessKeyId": self.access_key,
                "secretAccessKey": secret(&self.secret_key), "endpoint": self.endpoint,
                "prefix": self.prefix,
            }),
            TargetKind::Ssh => serde_json::json!({
                "host": self.host, "username": self.username, "path": self.path,
                "port": self.port.unwrap_or(22), "privateKey": secret(&self.private_key),
            }),
            TargetKind::Local => serde_json::json!({ "path": self.path }),
        };
        if let Some(map) = json.as_object_mut() {
            map.retain(|_, v| !v.is_null());
        }
        json
    }

    /// Checks that the section has what its type needs.
    pub fn target_config(&self) -> Result<TargetConfig, ConfigError> {
        TargetConfig::from_json(self.kind, self.target_json())
            .map_err(|e| ConfigError::Invalid(format!("backup (type {}): {e}", self.kind.as_str())))
    }
}

#[cfg(test)]
// figment's Jail API fixes the closure's error type.
#[allow(clippy::result_large_err)]
#[path = "config_tests.rs"]
mod tests;

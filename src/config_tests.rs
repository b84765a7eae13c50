//! Unit tests of the configuration layers (figment's Jail).

use super::*;
use figment::Jail;

const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn base(jail: &mut Jail) {
    jail.set_env("DATABASE_URL", "postgres://u:pw@127.0.0.1/db");
    jail.set_env("REDIS_URL", "redis://127.0.0.1:6379");
    jail.set_env("VARDO_SECRET_KEY", KEY);
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        base(jail);
        jail.create_file("v.yml", "listen: 127.0.0.1:9000\nhelper_image: from-file\n")?;
        jail.set_env("VARDO_HELPER_IMAGE", "from-env");
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.helper_image, "from-env");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_named() {
    Jail::expect_with(|jail| {
        base(jail);
        jail.create_file("v.yml", "listen: x\nretentoin: 3\n")?;
        let err = Config::load(Some(Path::new("v.yml"))).expect_err("unknown key");
        assert!(err.to_string().contains("retentoin"), "{err}");
        jail.create_file("w.yml", "backup:\n  type: s3\n  bukket: b\n")?;
        let err = Config::load(Some(Path::new("w.yml"))).expect_err("unknown nested key");
        assert!(err.to_string().contains("bukket"), "{err}");
        Ok(())
    });
}

#[test]
fn backup_section_needs_its_fields() {
    Jail::expect_with(|jail| {
        base(jail);
        jail.create_file("v.yml", "backup:\n  type: r2\n  region: auto\n")?;
        let err = Config::load(Some(Path::new("v.yml"))).expect_err("no bucket");
        assert!(err.to_string().contains("bucket"), "{err}");
        Ok(())
    });
}

#[test]
fn a_named_file_must_exist() {
    Jail::expect_with(|jail| {
        base(jail);
        let err = Config::load(Some(Path::new("nope.yml"))).expect_err("missing");
        assert!(err.to_string().contains("nope.yml"));
        Ok(())
    });
}

#[test]
fn redaction_hides_every_secret() {
    Jail::expect_with(|jail| {
        base(jail);
        jail.set_env("VARDO_ADMIN_TOKEN", "admintok");
        jail.create_file(
            "v.yml",
            "backup:\n  type: s3\n  bucket: b\n  region: r\n  access_key: ak\n  secret_key: topsecret\n",
        )?;
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        let shown = c.redacted().to_string();
        for secret in ["topsecret", "admintok", KEY, ":pw@"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("postgres://u:********@127.0.0.1/db"));
        Ok(())
    });
}

#[test]
fn notification_settings_come_from_file_and_environment() {
    Jail::expect_with(|jail| {
        base(jail);
        jail.create_file(
            "v.yml",
            "smtp:\n  from: Vardo <backups@example.com>\nnotifications:\n  max_attempts: 6\n",
        )?;
        jail.set_env(
            "VARDO_SMTP_URL",
            "smtp://mailer:smtppass@127.0.0.1:2525?tls=required",
        );
        jail.set_env("VARDO_ALLOW_PRIVATE_WEBHOOKS", "true");
        jail.set_env("VARDO_NOTIFY_RETRY_BASE_MS", "250");
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        let n = c.notify_settings();
        assert!(n.allow_private_addresses);
        assert_eq!(n.retry_base, std::time::Duration::from_millis(250));
        assert_eq!(n.max_attempts, 6);
        assert_eq!(n.smtp_from, "Vardo <backups@example.com>");
        let shown = c.redacted().to_string();
        assert!(!shown.contains("smtppass"), "{shown}");
        assert!(
            shown.contains("smtp://mailer:********@127.0.0.1:2525"),
            "{shown}"
        );

        jail.create_file("w.yml", "smtp:\n  from: not a mailbox\n")?;
        let err = Config::load(Some(Path::new("w.yml"))).expect_err("bad from");
        assert!(err.to_string().contains("smtp.from"), "{err}");
        Ok(())
    });
}

#[test]
fn notifications_default_to_safe_values() {
    Jail::expect_with(|jail| {
        base(jail);
        let c = Config::load(None).map_err(|e| e.to_string())?;
        let n = c.notify_settings();
        assert!(
            !n.allow_private_addresses,
            "private webhooks are off by default"
        );
        assert!(n.smtp_url.is_none());
        assert_eq!((n.retry_base.as_secs(), n.max_attempts), (5, 4));
        Ok(())
    });
}

#[test]
fn event_streams_come_from_file_and_environment() {
    Jail::expect_with(|jail| {
        base(jail);
        let d = Config::load(None)
            .map_err(|e| e.to_string())?
            .events
            .settings();
        assert_eq!(
            (
                d.stream.as_str(),
                d.group.as_str(),
                d.dead_letter_stream.as_str()
            ),
            ("vardo:events", "vardo-backup", "vardo:events:dead")
        );
        assert_eq!((d.claim_idle.as_secs(), d.max_deliveries), (60, 5));
        jail.create_file("v.yml", "events:\n  stream: deploys\n  max_deliveries: 3\n")?;
        jail.set_env("VARDO_EVENTS_CLAIM_IDLE_SECONDS", "2");
        jail.set_env("VARDO_BACKUP_EVENTS_STREAM", "results");
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        let e = c.events.settings();
        assert_eq!(
            (e.stream.as_str(), e.dead_letter_stream.as_str()),
            ("deploys", "deploys:dead")
        );
        assert_eq!((e.claim_idle.as_secs(), e.max_deliveries), (2, 3));
        assert_eq!(e.backup_events_stream, "results");
        jail.create_file("w.yml", "events:\n  max_deliveries: 0\n")?;
        let err = Config::load(Some(Path::new("w.yml"))).expect_err("zero deliveries");
        assert!(err.to_string().contains("events.max_deliveries"), "{err}");
        jail.create_file("x.yml", "events:\n  strem: x\n")?;
        let err = Config::load(Some(Path::new("x.yml"))).expect_err("unknown key");
        assert!(err.to_string().contains("strem"), "{err}");
        Ok(())
    });
}

#[test]
fn the_shutdown_grace_defaults_to_a_minute_and_comes_from_file_or_environment() {
    Jail::expect_with(|jail| {
        base(jail);
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.scheduler.shutdown_grace_seconds, 60);
        jail.create_file("v.yml", "scheduler:\n  shutdown_grace_seconds: 5\n")?;
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.scheduler.shutdown_grace_seconds, 5);
        jail.set_env("VARDO_SHUTDOWN_GRACE_SECONDS", "1");
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.scheduler.shutdown_grace_seconds, 1);
        assert_eq!(c.redacted()["scheduler"]["shutdown_grace_seconds"], 1);
        Ok(())
    });
}

#[test]
fn the_stall_deadline_comes_from_file_and_environment_and_is_never_zero() {
    Jail::expect_with(|jail| {
        base(jail);
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.scheduler.stall_seconds, 300);
        jail.create_file("v.yml", "scheduler:\n  stall_seconds: 40\n")?;
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.scheduler.stall_seconds, 40);
        jail.set_env("VARDO_STALL_SECONDS", "3");
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.scheduler.stall_seconds, 3);
        jail.set_env("VARDO_STALL_SECONDS", "0");
        let err = Config::load(None).expect_err("zero");
        assert!(err.to_string().contains("stall_seconds"), "{err}");
        Ok(())
    });
}

#[test]
fn safety_backups_are_kept_a_week_unless_configured_and_never_zero_days() {
    Jail::expect_with(|jail| {
        base(jail);
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.restore.keep_pre_restore_days, 7);
        jail.create_file("v.yml", "restore:\n  keep_pre_restore_days: 30\n")?;
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.restore.keep_pre_restore_days, 30);
        jail.set_env("VARDO_KEEP_PRE_RESTORE_DAYS", "2");
        let c = Config::load(Some(Path::new("v.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(c.restore.keep_pre_restore_days, 2);
        jail.set_env("VARDO_KEEP_PRE_RESTORE_DAYS", "0");
        let err = Config::load(None).expect_err("zero");
        assert!(err.to_string().contains("keep_pre_restore_days"), "{err}");
        Ok(())
    });
}

#[test]
fn self_backup_is_off_unless_configured_and_its_schedule_and_compression_are_checked() {
    Jail::expect_with(|jail| {
        base(jail);
        let c = Config::load(None).map_err(|e| e.to_string())?;
        assert!(c.self_backup.is_none());
        jail.create_file("s.yml", "self_backup:\n  schedule: \"0 3 * * *\"\n")?;
        let c = Config::load(Some(Path::new("s.yml"))).map_err(|e| e.to_string())?;
        let s = c.self_backup.expect("configured");
        assert_eq!(
            (s.target.as_str(), s.timezone.as_str()),
            ("System default", "UTC")
        );
        assert_eq!(s.retention().keep_last, Some(7));
        for (file, field) in [
            (
                "self_backup:\n  schedule: \"every night\"\n",
                "self_backup.schedule",
            ),
            (
                "self_backup:\n  schedule: \"0 3 * * *\"\n  compression: lz4\n",
                "self_backup.compression",
            ),
        ] {
            jail.create_file("bad.yml", file)?;
            let err = Config::load(Some(Path::new("bad.yml"))).expect_err(file);
            assert!(err.to_string().contains(field), "{err}");
        }
        Ok(())
    });
}

#[test]
fn the_example_file_loads_as_it_ships() {
    Jail::expect_with(|jail| {
        base(jail);
        let example = repo_file("config/vardo.example.yml");
        jail.create_file("example.yml", &example)?;
        let c = Config::load(Some(Path::new("example.yml"))).map_err(|e| e.to_string())?;
        assert!(c.encryption.identity_file.is_none());
        jail.set_env("VARDO_AGE_IDENTITY_FILE", "/etc/vardo/key.txt");
        let c = Config::load(Some(Path::new("example.yml"))).map_err(|e| e.to_string())?;
        assert_eq!(
            c.encryption.identity_file.as_deref(),
            Some(Path::new("/etc/vardo/key.txt"))
        );
        Ok(())
    });
}

#[test]
fn a_system_target_with_a_bad_recipient_is_refused_naming_it() {
    Jail::expect_with(|jail| {
        base(jail);
        jail.create_file(
            "v.yml",
            "backup:\n  type: local\n  path: /b\n  encryption:\n    type: age\n    recipients: [age1nope]\n",
        )?;
        let err = Config::load(Some(Path::new("v.yml"))).expect_err("bad recipient");
        assert!(err.to_string().contains("backup.encryption"), "{err}");
        Ok(())
    });
}

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(path)).expect("a file of the repository")
}

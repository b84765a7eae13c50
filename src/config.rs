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
    ("VARDO_SECRET_KEY", "secret_key"),
    ("VARDO_ADMIN_TOKEN", "admin_token"),
    ("VARDO_HELPER_IMAGE", "helper_image"),
];

/// The file used when neither `--config` nor `VARDO_CONFIG` names one, if it exists.
const DEFAULT_FILE: &str = "config/vardo.yml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    pub database_url: SecretString,
    #[serde(default = "default_pool_size")]
    pub database_pool_size: usize,
    pub redis_url: SecretString,
    #[serde(default)]
    pub docker_host: Option<String>,
    #[serde(default)]
    pub allow_local_backups: bool,
    pub secret_key: SecretString,
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    #[serde(default = "default_helper_image")]
    pub helper_image: String,
    /// The seed's `backup:` section: the system-level target "System default".
    #[serde(default)]
    pub backup: Option<SystemTargetConfig>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
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

    fn validate(&self) -> Result<(), ConfigError> {
        vardo_actors::secrets::SecretBox::from_base64(&self.secret_key)
            .map_err(|e| ConfigError::Invalid(format!("secret_key: {e}")))?;
        if let Some(backup) = &self.backup {
            backup.target_config()?;
        }
        Ok(())
    }

    /// The effective configuration with every secret masked, for `vardo-backup config`.
    pub fn redacted(&self) -> serde_json::Value {
        let mask = |s: &SecretString| mask_url_or_secret(s.expose_secret());
        serde_json::json!({
            "listen": self.listen,
            "database_url": mask(&self.database_url),
            "database_pool_size": self.database_pool_size,
            "redis_url": mask(&self.redis_url),
            "docker_host": self.docker_host,
            "allow_local_backups": self.allow_local_backups,
            "secret_key": MASK,
            "admin_token": self.admin_token.as_ref().map(|_| MASK),
            "helper_image": self.helper_image,
            "backup": self.backup.as_ref().map(|b| serde_json::json!({
                "type": b.kind.as_str(),
                "bucket": b.bucket, "region": b.region, "access_key": b.access_key,
                "secret_key": b.secret_key.as_ref().map(|_| MASK),
                "endpoint": b.endpoint, "prefix": b.prefix, "host": b.host,
                "username": b.username, "port": b.port,
                "private_key": b.private_key.as_ref().map(|_| MASK), "path": b.path,
            })),
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
mod tests {
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
}

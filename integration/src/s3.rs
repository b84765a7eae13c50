//! A bucket per test on the S3 server, created and removed with signed requests.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use secrecy::SecretString;
use uuid::Uuid;
use vardo_actors::model::target::S3Config;
use vardo_actors::model::TargetConfig;
use vardo_actors::storage::TargetStorage;

use crate::setting;

pub struct TestBucket {
    pub name: String,
    bucket: Bucket,
    credentials: Credentials,
}

impl TestBucket {
    pub async fn create() -> anyhow::Result<Self> {
        let name = format!("vardo-{}", Uuid::new_v4().simple());
        let bucket = Bucket::new(
            setting("VARDO_TEST_S3_ENDPOINT").parse()?,
            UrlStyle::Path,
            name.clone(),
            setting("VARDO_TEST_S3_REGION"),
        )?;
        let credentials = Credentials::new(
            setting("VARDO_TEST_S3_ACCESS_KEY"),
            setting("VARDO_TEST_S3_SECRET_KEY"),
        );
        let url = bucket
            .create_bucket(&credentials)
            .sign(Duration::from_secs(60));
        let resp = reqwest::Client::new().put(url).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "CreateBucket {name}: {}",
            resp.status()
        );
        Ok(Self {
            name,
            bucket,
            credentials,
        })
    }

    /// The multipart uploads open in this bucket (any key): s3s-fs keeps
    /// `.bucket-{b64(bucket)}.object-{b64(key)}.upload-{id}.metadata.json` in its data folder from
    /// CreateMultipartUpload until the upload is completed or aborted (it has no
    /// ListMultipartUploads).
    pub fn open_multipart_uploads(&self) -> Vec<String> {
        use base64::Engine as _;
        let marker = format!(
            ".bucket-{}.object-",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.name)
        );
        let root = std::path::PathBuf::from(setting("VARDO_TEST_S3_ROOT"));
        let entries = std::fs::read_dir(&root).unwrap_or_else(|e| {
            panic!("cannot read the s3s-fs data folder {}: {e}", root.display())
        });
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name.starts_with(&marker) && name.contains(".upload-"))
            .collect()
    }

    /// The target config (the API's JSON shape) for this bucket, with the real credentials.
    pub fn target_json(&self, prefix: Option<&str>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "bucket": self.name,
            "region": setting("VARDO_TEST_S3_REGION"),
            "accessKeyId": setting("VARDO_TEST_S3_ACCESS_KEY"),
            "secretAccessKey": setting("VARDO_TEST_S3_SECRET_KEY"),
            "endpoint": setting("VARDO_TEST_S3_ENDPOINT"),
        });
        if let Some(p) = prefix {
            v["prefix"] = p.into();
        }
        v
    }

    /// The bucket as a target config, with the real credentials.
    pub fn config(&self, prefix: Option<&str>) -> TargetConfig {
        TargetConfig::S3(S3Config {
            bucket: self.name.clone(),
            region: setting("VARDO_TEST_S3_REGION"),
            access_key_id: setting("VARDO_TEST_S3_ACCESS_KEY"),
            secret_access_key: SecretString::from(setting("VARDO_TEST_S3_SECRET_KEY")),
            endpoint: Some(setting("VARDO_TEST_S3_ENDPOINT")),
            prefix: prefix.map(str::to_owned),
        })
    }

    /// The bucket through the engine's storage adapter.
    pub fn storage(&self) -> TargetStorage {
        TargetStorage::open(&self.config(None), false).expect("the bucket opens")
    }

    /// Empties and removes the bucket.
    pub async fn remove(self) -> anyhow::Result<()> {
        let storage = self.storage();
        for key in storage.list("").await? {
            storage.delete(&key).await?;
        }
        let url = self
            .bucket
            .delete_bucket(&self.credentials)
            .sign(Duration::from_secs(60));
        let resp = reqwest::Client::new().delete(url).send().await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "DeleteBucket {}: {}",
            self.name,
            resp.status()
        );
        Ok(())
    }
}

//! Organizations, apps, targets and jobs written straight through the engine's store, and the
//! target configurations of the test bed's real services.

use uuid::Uuid;
use vardo_actors::model::{
    App, Compression, Organization, RetentionPolicy, TargetKind, Volume, VolumeKind,
};
use vardo_actors::store::NewJob;

use crate::{setting, TestBed};

impl TestBed {
    pub async fn organization(&self) -> Organization {
        self.store
            .upsert_organization(&format!("org-{}", self.id), Some("Test org"))
            .await
            .expect("organization")
    }

    /// An app named `{name}{id}` with the given volumes (all persistent unless named `tmp*`).
    pub async fn app(&self, org: &Organization, name: &str, volumes: &[(&str, VolumeKind)]) -> App {
        let app = App {
            id: format!("{name}-{}", self.id),
            organization_id: org.id,
            name: format!("{name}{}", self.id),
            volumes: volumes
                .iter()
                .map(|(v, kind)| Volume {
                    name: (*v).to_owned(),
                    persistent: !v.starts_with("tmp"),
                    kind: *kind,
                })
                .collect(),
        };
        self.store.upsert_app(&app).await.expect("app");
        app
    }

    /// An app `name` with one file volume `files`, its blue Docker volume created and filled by
    /// `fill` (a shell script run with the volume at `/volume`); the app and the Docker volume.
    pub async fn app_with_files(
        &self,
        org: &Organization,
        name: &str,
        fill: &str,
    ) -> (App, String) {
        let app = self.app(org, name, &[("files", VolumeKind::Generic)]).await;
        let volume = self.blue(&app, "files");
        self.docker.create_volume(&volume).await.expect("volume");
        crate::volumes::sh(&self.docker, &volume, fill)
            .await
            .expect("fill the volume");
        (app, volume)
    }

    /// The Docker volume the engine looks for first: `{app}-blue_{volume}`, tracked for cleanup.
    pub fn blue(&self, app: &App, volume: &str) -> String {
        self.track_volume(&format!("{}-blue_{volume}", app.name))
    }

    pub async fn target(
        &self,
        org: Option<Uuid>,
        kind: TargetKind,
        config: serde_json::Value,
    ) -> Uuid {
        self.store
            .insert_target(
                org,
                &format!("{}-{}", kind.as_str(), Uuid::new_v4()),
                kind,
                config,
                false,
            )
            .await
            .expect("target")
    }

    /// An S3 target of the organization on this bed's bucket, reached at `endpoint` (a fault
    /// proxy's URL in front of the S3 server).
    pub async fn s3_target_at(&self, org: Uuid, endpoint: &str) -> Uuid {
        let mut config = self.bucket.target_json(None);
        config["endpoint"] = endpoint.into();
        self.target(Some(org), TargetKind::S3, config).await
    }

    pub fn ssh_config(&self) -> serde_json::Value {
        let key = std::fs::read_to_string(setting("VARDO_TEST_SSH_KEY")).expect("client key");
        serde_json::json!({
            "host": setting("VARDO_TEST_SSH_HOST"),
            "port": setting("VARDO_TEST_SSH_PORT").parse::<u16>().expect("port"),
            "username": setting("VARDO_TEST_SSH_USER"),
            "path": format!("{}/{}", setting("VARDO_TEST_SSH_ROOT"), self.scratch),
            "privateKey": key,
        })
    }

    pub fn local_config(&self) -> serde_json::Value {
        serde_json::json!({ "path": self.local_dir() })
    }

    pub async fn job(
        &self,
        org: &Organization,
        target: Option<Uuid>,
        apps: &[&App],
        compression: Compression,
    ) -> Uuid {
        self.store
            .insert_job(&NewJob {
                organization_id: org.id,
                name: format!("job-{}", Uuid::new_v4()),
                schedule: "0 2 * * *".into(),
                timezone: "UTC".into(),
                enabled: true,
                target_id: target,
                retention: RetentionPolicy {
                    keep_all: true,
                    ..Default::default()
                },
                notify_on_success: false,
                notify_on_failure: true,
                compression,
                compression_level: None,
                // Off: a test that wants drills says when.
                drill_schedule: None,
                incremental_full_every: None,
                app_ids: apps.iter().map(|a| a.id.clone()).collect(),
            })
            .await
            .expect("job")
    }
}

//! A database container from the local Postgres image, its data in a named volume.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use vardo_actors::docker::DockerClient;

use crate::{eventually, setting, TestBed};

pub const USER: &str = "appuser";
pub const PASSWORD: &str = "apppass";
pub const DB: &str = "appdb";

/// Starts a container on `volume` and waits until it accepts queries; returns its id.
pub async fn start(bed: &TestBed, volume: &str) -> anyhow::Result<String> {
    let name = format!("vardo-test-pg-{}", uuid::Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(setting("VARDO_TEST_POSTGRES_IMAGE")),
        env: Some(vec![
            format!("POSTGRES_USER={USER}"),
            format!("POSTGRES_PASSWORD={PASSWORD}"),
            format!("POSTGRES_DB={DB}"),
        ]),
        labels: Some(HashMap::from([("vardo-test".to_owned(), "1".to_owned())])),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/var/lib/postgresql/data".to_owned()),
                source: Some(volume.to_owned()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = bed
        .docker
        .raw()
        .create_container(Some(options), body)
        .await?;
    bed.track_container(&created.id);
    bed.docker.raw().start_container(&created.id, None).await?;
    wait_ready(&bed.docker, &created.id).await;
    Ok(created.id)
}

pub async fn wait_ready(docker: &DockerClient, id: &str) {
    eventually(
        Duration::from_secs(60),
        "postgres to accept queries",
        || async {
            psql(docker, id, "SELECT 1")
                .await
                .ok()
                .filter(|o| o.trim() == "1")
        },
    )
    .await;
}

/// Runs one SQL command with `psql -tA` in the container's `appdb`; its output, or its error.
pub async fn psql(docker: &DockerClient, id: &str, sql: &str) -> anyhow::Result<String> {
    psql_in(docker, id, DB, sql).await
}

/// Runs one SQL command with `psql -tA` in `database` (any name); its output, or its error.
pub async fn psql_in(
    docker: &DockerClient,
    id: &str,
    database: &str,
    sql: &str,
) -> anyhow::Result<String> {
    let dbname = vardo_actors::pg::login::conninfo_dbname(database);
    let cmd = [
        "psql",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-tA",
        "-U",
        USER,
        "-d",
        &dbname,
        "-c",
        sql,
    ]
    .map(str::to_owned)
    .to_vec();
    let empty: vardo_actors::stream::ByteStream = Box::pin(futures::stream::empty());
    let out = docker.exec_write(id, cmd, vec![], empty).await?;
    anyhow::ensure!(out.exit_code == 0, "psql: {}", out.stderr);
    Ok(out.stdout)
}

//! Finding the running app container that mounts a volume (the database container a `pg_dump` or
//! `psql` is executed in), with its environment; and the helper containers on a volume that a
//! command still runs in.

use std::collections::HashMap;

use bollard::models::{ContainerSummary, MountPoint};
use bollard::query_parameters::ListContainersOptionsBuilder;

use super::error::{is_not_found, DockerError};
use super::helper::{HELPER_LABEL_KEY, HELPER_LABEL_VALUE, INSTANCE_LABEL_KEY};
use super::DockerClient;

/// A running container, as the exec functions need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The container's environment (`Config.Env`), e.g. `POSTGRES_USER`.
    pub env: HashMap<String, String>,
    /// The image it was created from (as its config names it).
    pub image: String,
    /// Where it mounts the volume asked about.
    pub mount_path: String,
}

impl DockerClient {
    /// A running container that mounts `volume` (at any destination), with its environment.
    /// Our own helper containers are never returned. With several candidates, the most recently
    /// created wins (Docker lists newest first).
    #[tracing::instrument(skip(self))]
    pub async fn container_using_volume(
        &self,
        volume: &str,
    ) -> Result<Option<ContainerRef>, DockerError> {
        // Docker's `volume` filter also matches a mount *destination* equal to the value, so the
        // mounts are checked again below.
        let filters = HashMap::from([("volume", vec![volume]), ("status", vec!["running"])]);
        let options = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::api("list running containers", e))?;
        let Some(found) = containers
            .iter()
            .find(|c| mounts_volume(c, volume) && !is_helper(c))
        else {
            return Ok(None);
        };
        let Some(id) = found.id.clone() else {
            return Ok(None);
        };
        let mount_path = found
            .mounts
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|m| m.typ.as_deref() == Some("volume") && m.name.as_deref() == Some(volume))
            .and_then(|m| m.destination.clone())
            .unwrap_or_default();

        let inspected = match self.docker.inspect_container(&id, None).await {
            Ok(inspected) => inspected,
            // Gone between the listing and now: nothing is using the volume any more.
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(DockerError::api(format!("inspect the container {id}"), e)),
        };
        let name = inspected
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned();
        let config = inspected.config.unwrap_or_default();
        let image = config.image.clone().unwrap_or_default();
        let env = parse_env(config.env.unwrap_or_default());
        Ok(Some(ContainerRef {
            id,
            name,
            env,
            image,
            mount_path,
        }))
    }
}

/// A running helper container that mounts a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperOnVolume {
    pub id: String,
    /// The engine instance that created it (its `vardo-backup.instance` label), if labelled.
    pub instance: Option<String>,
    /// Whether a command (`docker exec`) still runs in it: a swap step or a recovery.
    pub busy: bool,
}

impl DockerClient {
    /// Every running helper container, whoever created it, that mounts `volume`, and whether a
    /// command still runs in each. A container or command that ends meanwhile counts as idle.
    #[tracing::instrument(skip(self))]
    pub async fn helpers_on_volume(
        &self,
        volume: &str,
    ) -> Result<Vec<HelperOnVolume>, DockerError> {
        let label = format!("{HELPER_LABEL_KEY}={HELPER_LABEL_VALUE}");
        let filters = HashMap::from([
            ("label", vec![label.as_str()]),
            ("volume", vec![volume]),
            ("status", vec!["running"]),
        ]);
        let options = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::api("list helper containers", e))?;
        let mut found = Vec::new();
        for container in containers
            .iter()
            .filter(|c| mounts_volume(c, volume) && is_helper(c))
        {
            let Some(id) = container.id.clone() else {
                continue;
            };
            let instance = container
                .labels
                .as_ref()
                .and_then(|l| l.get(INSTANCE_LABEL_KEY))
                .cloned();
            let busy = self.runs_a_command(&id).await?;
            found.push(HelperOnVolume { id, instance, busy });
        }
        Ok(found)
    }

    /// Whether any exec of container `id` is still running.
    async fn runs_a_command(&self, id: &str) -> Result<bool, DockerError> {
        let inspected = match self.docker.inspect_container(id, None).await {
            Ok(inspected) => inspected,
            Err(e) if is_not_found(&e) => return Ok(false),
            Err(e) => return Err(DockerError::api(format!("inspect the container {id}"), e)),
        };
        for exec in inspected.exec_ids.unwrap_or_default() {
            match self.docker.inspect_exec(&exec).await {
                Ok(state) if state.running == Some(true) => return Ok(true),
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(DockerError::api(format!("inspect a command in {id}"), e)),
            }
        }
        Ok(false)
    }
}

fn mounts_volume(container: &ContainerSummary, volume: &str) -> bool {
    container
        .mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|m: &MountPoint| {
            m.typ.as_deref() == Some("volume") && m.name.as_deref() == Some(volume)
        })
}

fn is_helper(container: &ContainerSummary) -> bool {
    container
        .labels
        .as_ref()
        .and_then(|labels| labels.get(HELPER_LABEL_KEY))
        .is_some_and(|v| v == HELPER_LABEL_VALUE)
}

/// `["K=V", "FLAG"]` → `{K: V, FLAG: ""}`; the first `=` splits, later ones belong to the value.
fn parse_env(entries: Vec<String>) -> HashMap<String, String> {
    entries
        .into_iter()
        .map(|entry| match entry.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (entry, String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_splits_at_the_first_equals_sign() {
        let env = parse_env(vec![
            "POSTGRES_PASSWORD=a=b".into(),
            "EMPTY=".into(),
            "BARE".into(),
        ]);
        assert_eq!(env["POSTGRES_PASSWORD"], "a=b");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env["BARE"], "");
    }

    #[test]
    fn only_volume_mounts_of_that_name_count() {
        let summary = |typ: &str, name: &str| ContainerSummary {
            mounts: Some(vec![MountPoint {
                typ: Some(typ.into()),
                name: Some(name.into()),
                destination: Some("/data".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(mounts_volume(&summary("volume", "v1"), "v1"));
        assert!(!mounts_volume(&summary("volume", "v2"), "v1"));
        assert!(!mounts_volume(&summary("bind", "v1"), "v1"));
        assert!(!mounts_volume(&summary("volume", "v1"), "/data"));
    }
}

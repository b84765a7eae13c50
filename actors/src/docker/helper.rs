//! Helper containers: throw-away containers of the helper image that mount one volume at
//! `/volume`, labelled `vardo-backup=helper` and named `vardo-helper-<uuid>`, and the drop guard that
//! removes them even when their owner forgets or fails.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;

use super::error::{is_not_found, DockerError};
use super::exec::ExecOutcome;
use super::DockerClient;

/// Label put on every container this adapter creates, so strays can be found and removed.
pub const HELPER_LABEL_KEY: &str = "vardo-backup";
/// Value of [`HELPER_LABEL_KEY`] on helper containers.
pub const HELPER_LABEL_VALUE: &str = "helper";
/// Label naming the engine instance that created a helper container (see `crate::instance`).
pub const INSTANCE_LABEL_KEY: &str = "vardo-backup.instance";
/// Where helper containers mount the volume they work on.
pub const VOLUME_MOUNT: &str = "/volume";

/// A started helper container. Remove it with [`HelperContainer::remove`]; dropping it removes it
/// in the background (best effort).
#[derive(Debug)]
pub struct HelperContainer {
    client: DockerClient,
    guard: ContainerGuard,
}

impl DockerClient {
    /// Starts a helper container (`sleep 86400`) with `volume` mounted at `/volume`, read-only when
    /// asked. The volume must exist: Docker would otherwise create an empty one silently.
    #[tracing::instrument(skip(self))]
    pub async fn start_helper(
        &self,
        volume: &str,
        read_only: bool,
    ) -> Result<HelperContainer, DockerError> {
        let guard = self.create_helper_container(volume, read_only).await?;
        // On failure the guard removes the created container.
        self.docker
            .start_container(guard.id(), None)
            .await
            .map_err(|e| DockerError::api("start a helper container", e))?;
        Ok(HelperContainer {
            client: self.clone(),
            guard,
        })
    }

    /// Creates (does not start) a helper container mounting `volume` at `/volume`; pulls the helper
    /// image first if Docker says it is missing.
    pub(crate) async fn create_helper_container(
        &self,
        volume: &str,
        read_only: bool,
    ) -> Result<ContainerGuard, DockerError> {
        if !self.volume_exists(volume).await? {
            return Err(DockerError::VolumeNotFound {
                volume: volume.to_owned(),
            });
        }
        let name = format!("vardo-helper-{}", uuid::Uuid::new_v4());
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let body = helper_container_body(
            &self.helper_image,
            volume,
            read_only,
            self.instance.as_deref(),
        );
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Err(e) if is_not_found(&e) => {
                // 404 on create means the image is missing (the volume was checked above).
                self.ensure_helper_image().await?;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        }
        .map_err(|e| DockerError::api("create a helper container", e))?;
        for warning in &created.warnings {
            tracing::warn!(container = %name, %warning, "Docker warned while creating a helper");
        }
        tracing::debug!(container = %name, id = %created.id, "helper container created");
        Ok(ContainerGuard::new(self.docker.clone(), created.id))
    }
}

fn helper_container_body(
    image: &str,
    volume: &str,
    read_only: bool,
    instance: Option<&str>,
) -> ContainerCreateBody {
    let mut labels = HashMap::from([(HELPER_LABEL_KEY.to_owned(), HELPER_LABEL_VALUE.to_owned())]);
    if let Some(instance) = instance {
        labels.insert(INSTANCE_LABEL_KEY.to_owned(), instance.to_owned());
    }
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(vec!["sleep".to_owned(), "86400".to_owned()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some(VOLUME_MOUNT.to_owned()),
                source: Some(volume.to_owned()),
                typ: Some(MountType::VOLUME),
                read_only: Some(read_only),
                // Never copy image content into the volume: it holds the app's data only.
                volume_options: Some(MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            network_mode: Some("none".to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl HelperContainer {
    /// The container's id.
    pub fn id(&self) -> &str {
        self.guard.id()
    }

    /// Runs `sh -c script` in the container and collects its output (each stream capped at 64 KiB)
    /// and exit code. A non-zero exit is an `Ok` outcome: the caller judges it.
    #[tracing::instrument(skip(self, script), fields(container = %self.id()))]
    pub async fn sh(&self, script: &str) -> Result<ExecOutcome, DockerError> {
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        self.client.exec_collect(self.id(), cmd, Vec::new()).await
    }

    /// Runs `sh -c script sh args…`: the arguments reach the script as `$1…`, never through its text.
    #[tracing::instrument(skip(self, script, args), fields(container = %self.id()))]
    pub async fn sh_with_args(
        &self,
        script: &str,
        args: &[String],
    ) -> Result<ExecOutcome, DockerError> {
        let mut cmd = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            "sh".to_owned(),
        ];
        cmd.extend(args.iter().cloned());
        self.client.exec_collect(self.id(), cmd, Vec::new()).await
    }

    /// Removes the container (force: it is running). A container already gone counts as removed.
    #[tracing::instrument(skip(self), fields(container = %self.id()))]
    pub async fn remove(mut self) -> Result<(), DockerError> {
        self.guard.remove_now().await
    }

    pub(crate) fn client(&self) -> &DockerClient {
        &self.client
    }
}

/// Owns a container id and force-removes the container when dropped, unless removed already.
/// The removal on drop is spawned on the current tokio runtime; without one it is only logged.
#[derive(Debug)]
pub(crate) struct ContainerGuard {
    docker: Docker,
    id: String,
    armed: bool,
}

impl ContainerGuard {
    pub(crate) fn new(docker: Docker, id: String) -> Self {
        Self {
            docker,
            id,
            armed: true,
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Removes the container now and disarms the guard, whatever the outcome: a failed removal is
    /// reported to the caller, not retried behind its back.
    pub(crate) async fn remove_now(&mut self) -> Result<(), DockerError> {
        self.armed = false;
        remove_container(&self.docker, &self.id).await
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (docker, id) = (self.docker.clone(), std::mem::take(&mut self.id));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = remove_container(&docker, &id).await {
                        tracing::warn!(container = %id, error = %e, "could not remove a helper container");
                    }
                });
            }
            Err(_) => tracing::warn!(
                container = %id,
                "helper container left behind: dropped outside a tokio runtime"
            ),
        }
    }
}

/// A helper container found on the Docker host, whoever created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperInfo {
    pub id: String,
    /// The `vardo-backup.instance` label: the engine instance that created it, if labelled.
    pub instance: Option<String>,
}

impl DockerClient {
    /// Every container labelled `vardo-backup=helper`, running or not; with `instance`, only that
    /// instance's.
    #[tracing::instrument(skip(self))]
    pub async fn list_helpers(
        &self,
        instance: Option<&str>,
    ) -> Result<Vec<HelperInfo>, DockerError> {
        let mut label = vec![format!("{HELPER_LABEL_KEY}={HELPER_LABEL_VALUE}")];
        if let Some(instance) = instance {
            label.push(format!("{INSTANCE_LABEL_KEY}={instance}"));
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&HashMap::from([("label".to_owned(), label)]))
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::api("list helper containers", e))?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let instance = c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(INSTANCE_LABEL_KEY))
                    .cloned();
                Some(HelperInfo {
                    id: c.id?,
                    instance,
                })
            })
            .collect())
    }

    /// Force-removes a helper container by id; one already gone counts as removed.
    pub async fn remove_helper(&self, id: &str) -> Result<(), DockerError> {
        remove_container(&self.docker, id).await
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => {
            tracing::debug!(container = %id, "helper container removed");
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(DockerError::api(
            format!("remove the helper container {id}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_body_mounts_the_volume_read_only_without_copy_and_labelled() {
        let body = helper_container_body("img:1", "app-blue_data", true, Some("42-abc"));
        let json = serde_json::to_value(&body).unwrap_or_default();
        assert_eq!(json["Labels"]["vardo-backup"], "helper");
        assert_eq!(json["Labels"]["vardo-backup.instance"], "42-abc");
        let unlabelled = helper_container_body("img:1", "app-blue_data", true, None);
        let json = serde_json::to_value(&unlabelled).unwrap_or_default();
        assert!(json["Labels"].get("vardo-backup.instance").is_none());
        let mount = &json["HostConfig"]["Mounts"][0];
        assert_eq!(mount["Target"], "/volume");
        assert_eq!(mount["Source"], "app-blue_data");
        assert_eq!(mount["Type"], "volume");
        assert_eq!(mount["ReadOnly"], true);
        assert_eq!(mount["VolumeOptions"]["NoCopy"], true);
        assert_eq!(json["HostConfig"]["NetworkMode"], "none");
    }
}

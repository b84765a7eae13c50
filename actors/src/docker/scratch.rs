//! Scratch volumes and containers: made for one drill, labelled with its id, removed after it —
//! and, when an engine died before it could, found by their label and removed by a janitor.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};

use super::error::is_not_found;
use super::{DockerClient, DockerError, INSTANCE_LABEL_KEY};

/// Label on every scratch volume and container; its value is the drill's id.
pub const DRILL_LABEL_KEY: &str = "vardo-backup.drill";

/// A scratch volume or container, by the drill that made it.
#[derive(Debug, Clone)]
pub struct ScratchItem {
    /// Container id or volume name.
    pub id: String,
    pub drill: String,
    /// The engine instance that made it, when labelled.
    pub instance: Option<String>,
}

impl DockerClient {
    fn scratch_labels(&self, drill: &str) -> HashMap<String, String> {
        let mut labels = HashMap::from([(DRILL_LABEL_KEY.to_owned(), drill.to_owned())]);
        if let Some(instance) = &self.instance {
            labels.insert(INSTANCE_LABEL_KEY.to_owned(), instance.clone());
        }
        labels
    }

    /// Creates an empty scratch volume labelled with the drill.
    pub async fn create_scratch_volume(&self, name: &str, drill: &str) -> Result<(), DockerError> {
        if self.volume_exists(name).await? {
            return Err(DockerError::Failed(format!(
                "the scratch volume {name} exists already"
            )));
        }
        self.create_labelled_volume(name, self.scratch_labels(drill))
            .await
    }

    /// Creates and starts a scratch container from `image` (no network) with `volume` mounted
    /// at `mount_path`; answers its id.
    pub async fn start_scratch_container(
        &self,
        drill: &str,
        name: &str,
        image: &str,
        env: Vec<String>,
        volume: &str,
        mount_path: &str,
    ) -> Result<String, DockerError> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env),
            labels: Some(self.scratch_labels(drill)),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    target: Some(mount_path.to_owned()),
                    source: Some(volume.to_owned()),
                    typ: Some(MountType::VOLUME),
                    ..Default::default()
                }]),
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| DockerError::api(format!("create the scratch container {name}"), e))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove_scratch_container(&created.id).await;
            return Err(DockerError::api(
                format!("start the scratch container {name}"),
                e,
            ));
        }
        Ok(created.id)
    }

    /// Every scratch container (running or not) and every scratch volume.
    pub async fn list_scratch(&self) -> Result<(Vec<ScratchItem>, Vec<ScratchItem>), DockerError> {
        let filters = HashMap::from([("label".to_owned(), vec![DRILL_LABEL_KEY.to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| DockerError::api("list scratch containers", e))?
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.as_ref()?;
                let drill = labels.get(DRILL_LABEL_KEY)?.clone();
                let instance = labels.get(INSTANCE_LABEL_KEY).cloned();
                Some(ScratchItem {
                    id: c.id?,
                    drill,
                    instance,
                })
            })
            .collect();
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| DockerError::api("list scratch volumes", e))?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                let drill = v.labels.get(DRILL_LABEL_KEY)?.clone();
                let instance = v.labels.get(INSTANCE_LABEL_KEY).cloned();
                Some(ScratchItem {
                    id: v.name,
                    drill,
                    instance,
                })
            })
            .collect();
        Ok((containers, volumes))
    }

    /// Force-removes a scratch container and its anonymous volumes; one already gone counts.
    pub async fn remove_scratch_container(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(DockerError::api(
                format!("remove the scratch container {id}"),
                e,
            )),
        }
    }

    /// Removes a scratch volume — only one labelled as a drill's; one already gone counts.
    pub async fn remove_scratch_volume(&self, name: &str) -> Result<(), DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) if v.labels.contains_key(DRILL_LABEL_KEY) => {}
            Ok(_) => {
                return Err(DockerError::Failed(format!(
                    "{name} is not a scratch volume; it is left alone"
                )))
            }
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(DockerError::api(format!("inspect the volume {name}"), e)),
        }
        let options = RemoveVolumeOptionsBuilder::new().force(true).build();
        match self.docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(DockerError::api(
                format!("remove the scratch volume {name}"),
                e,
            )),
        }
    }
}

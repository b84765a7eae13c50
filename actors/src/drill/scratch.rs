//! A drill's scratch place: a new, uniquely named volume labelled with the drill (and, for a dump,
//! a container on it). Removed when the drill ends — also when it fails or is dropped (then in the
//! background) — and by any janitor once the drill is no longer live ([`sweep`]).

use std::time::Duration;

use uuid::Uuid;

use crate::docker::{DockerClient, DockerError};
use crate::store::Store;

pub struct Scratch {
    docker: DockerClient,
    pub volume: String,
    pub container: Option<String>,
    removed: bool,
}

impl Scratch {
    /// Creates the scratch volume `vardo-drill-{drill}-{n}`.
    pub async fn create(docker: &DockerClient, drill: Uuid, n: usize) -> Result<Self, DockerError> {
        let volume = format!("vardo-drill-{}-{n}", drill.simple());
        docker
            .create_scratch_volume(&volume, &drill.to_string())
            .await?;
        Ok(Self {
            docker: docker.clone(),
            volume,
            container: None,
            removed: false,
        })
    }

    /// Removes the container (if any), then the volume.
    pub async fn remove(mut self) -> Result<(), DockerError> {
        self.removed = true;
        remove(&self.docker, self.container.as_deref(), &self.volume).await
    }
}

async fn remove(
    docker: &DockerClient,
    container: Option<&str>,
    volume: &str,
) -> Result<(), DockerError> {
    if let Some(id) = container {
        docker.remove_scratch_container(id).await?;
    }
    // The helper that read the volume back is removed in the background when its stream ends:
    // the volume may still be in use for a moment.
    let mut tries = 0;
    loop {
        match docker.remove_scratch_volume(volume).await {
            Err(e) if tries < 40 && e.to_string().contains("in use") => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            done => return done,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (docker, container, volume) = (
            self.docker.clone(),
            self.container.take(),
            self.volume.clone(),
        );
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = remove(&docker, container.as_deref(), &volume).await {
                        tracing::warn!(%volume, error = %e, "could not remove a drill's scratch place; the janitor will");
                    }
                });
            }
            Err(_) => tracing::warn!(%volume, "a drill's scratch place is left to the janitor"),
        }
    }
}

/// Removes every scratch container and volume whose drill is not live any more (finished, failed,
/// or its engine silent for `lease`); answers how many were removed. An item whose drill this
/// database does not know is removed only when an engine instance of this database made it and is
/// gone (the drill's row went with its job); others are another deployment's: left alone.
pub async fn sweep(docker: &DockerClient, store: &Store, lease: Duration) -> anyhow::Result<usize> {
    let (containers, volumes) = docker.list_scratch().await?;
    let mut removed = 0;
    // Containers first: a volume in use cannot be removed.
    for (items, is_container) in [(containers, true), (volumes, false)] {
        for item in items {
            let Ok(id) = item.drill.parse::<Uuid>() else {
                continue;
            };
            let remove = match store.drill_is_live(id, lease).await? {
                Some(live) => !live,
                None => match &item.instance {
                    Some(instance) => {
                        let alive = store
                            .instances_alive(std::slice::from_ref(instance), lease)
                            .await?;
                        alive.get(instance) == Some(&false)
                    }
                    None => false,
                },
            };
            if !remove {
                continue;
            }
            let done = if is_container {
                docker.remove_scratch_container(&item.id).await
            } else {
                docker.remove_scratch_volume(&item.id).await
            };
            match done {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(item = %item.id, error = %e, "could not remove a scratch item")
                }
            }
        }
    }
    Ok(removed)
}

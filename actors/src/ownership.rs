//! Which Docker volume an app's volume is — an authorization decision, re-checked right before
//! every backup or restore touches a volume. The app must hold both of its volume's Docker names
//! (`{app}-blue_{volume}`, `{app}-green_{volume}`) in `docker_volume_claim`, as an app of the
//! organization the backup belongs to; and a Docker volume that carries the label
//! `vardo-backup.organization` must name that organization, one that carries `vardo-backup.app`
//! that app. A database container is reached only through the owned volume it mounts.

use std::collections::HashMap;

use crate::docker::{app_volume_candidates, DockerClient, DockerError};
use crate::store::{Store, StoreError};

/// Label naming the app (by id) that owns a Docker volume; set on volumes a restore creates, and
/// honoured when a deploy pipeline sets it.
pub const APP_LABEL: &str = "vardo-backup.app";
/// Label naming the owning organization (by id), beside [`APP_LABEL`].
pub const ORGANIZATION_LABEL: &str = "vardo-backup.organization";

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "the Docker volume {docker_volume} is not registered to app {app_id} of this organization \
         ({why}); nothing was read or written"
    )]
    NotOwned {
        docker_volume: String,
        app_id: String,
        why: &'static str,
    },
    #[error(
        "the Docker volume {docker_volume} is labelled {APP_LABEL}={label}, not app {app_id}; \
         nothing was read or written"
    )]
    Labelled {
        docker_volume: String,
        app_id: String,
        label: String,
    },
    #[error(
        "the Docker volume {docker_volume} is labelled {ORGANIZATION_LABEL} for another \
         organization, not this one; nothing was read or written"
    )]
    LabelledForeign { docker_volume: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Docker(#[from] DockerError),
}

/// Whose volume is being looked for.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub organization_id: uuid::Uuid,
    pub app_id: &'a str,
    pub app_name: &'a str,
    pub volume_name: &'a str,
}

impl Owner<'_> {
    /// Both Docker names of the volume, once the database says this app holds them.
    pub async fn candidates(&self, store: &Store) -> Result<[String; 2], OwnershipError> {
        let names = app_volume_candidates(self.app_name, self.volume_name);
        for name in &names {
            let why = match store.volume_claim(name).await? {
                Some(c)
                    if c.organization_id == self.organization_id
                        && c.app_id.as_deref() == Some(self.app_id) =>
                {
                    continue
                }
                Some(c) if c.organization_id == self.organization_id && c.app_id.is_none() => {
                    "the app that held that name was deleted or renamed; register the app's \
                     volumes again"
                }
                Some(_) => "another app holds that name",
                None => "no app holds that name; register the app's volumes first",
            };
            return Err(OwnershipError::NotOwned {
                docker_volume: name.clone(),
                app_id: self.app_id.to_owned(),
                why,
            });
        }
        Ok(names)
    }

    /// The existing Docker volume of this app's volume (blue, else green), ownership checked;
    /// `None` when neither exists.
    pub async fn find(
        &self,
        store: &Store,
        docker: &DockerClient,
    ) -> Result<Option<String>, OwnershipError> {
        for name in self.candidates(store).await? {
            let Some(labels) = docker.volume_labels(&name).await? else {
                continue;
            };
            if let Some(label) = labels.get(ORGANIZATION_LABEL) {
                // Compared as a UUID: a pipeline may spell it in upper case; anything that is
                // not this organization's id refuses.
                if label.parse::<uuid::Uuid>().ok() != Some(self.organization_id) {
                    return Err(OwnershipError::LabelledForeign {
                        docker_volume: name,
                    });
                }
            }
            if let Some(label) = labels.get(APP_LABEL) {
                if label != self.app_id {
                    return Err(OwnershipError::Labelled {
                        docker_volume: name,
                        app_id: self.app_id.to_owned(),
                        label: label.clone(),
                    });
                }
            }
            return Ok(Some(name));
        }
        Ok(None)
    }

    /// The labels a volume created for this app gets.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (APP_LABEL.to_owned(), self.app_id.to_owned()),
            (
                ORGANIZATION_LABEL.to_owned(),
                self.organization_id.to_string(),
            ),
        ])
    }
}

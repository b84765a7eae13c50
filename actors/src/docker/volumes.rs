//! Volume lookup and creation, including the blue/green naming of app volumes
//! (`{app}-blue_{volume}`, else `{app}-green_{volume}`).

use bollard::models::VolumeCreateRequest;

use super::error::{is_not_found, DockerError};
use super::DockerClient;

/// The Docker volume names an app's logical volume may have, in order of preference.
pub fn app_volume_candidates(app_name: &str, volume_name: &str) -> [String; 2] {
    [
        format!("{app_name}-blue_{volume_name}"),
        format!("{app_name}-green_{volume_name}"),
    ]
}

impl DockerClient {
    /// `{app}-blue_{volume}` if it exists, else `{app}-green_{volume}`, else `None`.
    #[tracing::instrument(skip(self))]
    pub async fn find_app_volume(
        &self,
        app_name: &str,
        volume_name: &str,
    ) -> Result<Option<String>, DockerError> {
        for candidate in app_volume_candidates(app_name, volume_name) {
            if self.volume_exists(&candidate).await? {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Whether a volume of exactly this name exists.
    #[tracing::instrument(skip(self))]
    pub async fn volume_exists(&self, name: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(DockerError::api(format!("inspect the volume {name:?}"), e)),
        }
    }

    /// The folder on the Docker host that holds a volume's files, for volumes whose files live
    /// there at all times: the `local` driver without options. (A `local` volume with options —
    /// NFS, a bind of another device — is mounted there only while a container uses it; reading
    /// the folder otherwise would find it empty.) `None` for any other volume.
    #[tracing::instrument(skip(self))]
    pub async fn host_folder(&self, name: &str) -> Result<Option<std::path::PathBuf>, DockerError> {
        let volume = self
            .docker
            .inspect_volume(name)
            .await
            .map_err(|e| DockerError::api(format!("inspect the volume {name:?}"), e))?;
        let plain_local =
            volume.driver == "local" && volume.options.is_empty() && !volume.mountpoint.is_empty();
        Ok(plain_local.then(|| std::path::PathBuf::from(volume.mountpoint)))
    }

    /// A volume's labels, `None` when there is no volume of that name.
    #[tracing::instrument(skip(self))]
    pub async fn volume_labels(
        &self,
        name: &str,
    ) -> Result<Option<std::collections::HashMap<String, String>>, DockerError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.labels)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(DockerError::api(format!("inspect the volume {name:?}"), e)),
        }
    }

    /// Creates a local volume; creating one that exists already is a no-op (Docker's semantics).
    #[tracing::instrument(skip(self))]
    pub async fn create_volume(&self, name: &str) -> Result<(), DockerError> {
        self.create_labelled_volume(name, Default::default()).await
    }

    /// [`DockerClient::create_volume`] with labels.
    #[tracing::instrument(skip(self))]
    pub async fn create_labelled_volume(
        &self,
        name: &str,
        labels: std::collections::HashMap<String, String>,
    ) -> Result<(), DockerError> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| DockerError::api(format!("create the volume {name:?}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blue_comes_before_green() {
        assert_eq!(
            app_volume_candidates("shop", "pgdata"),
            [
                "shop-blue_pgdata".to_owned(),
                "shop-green_pgdata".to_owned()
            ]
        );
    }
}

//! `DockerClient`: the connection to the engine (API version negotiated), and the helper image the
//! adapter runs its throw-away containers from.

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;

use super::error::{chain, is_not_found, DockerError};

/// A handle to one Docker engine. Cheap to clone: clones share the connection pool.
#[derive(Clone, Debug)]
pub struct DockerClient {
    pub(crate) docker: Docker,
    pub(crate) helper_image: String,
    /// The engine instance whose helpers this client labels (`vardo-backup.instance`), so that a
    /// sweep can tell a dead engine's helpers from a live one's; None labels none (tests, tools).
    pub(crate) instance: Option<String>,
}

impl DockerClient {
    /// Connects to `docker_host` (`unix:///var/run/docker.sock`, `/var/run/docker.sock`,
    /// `tcp://host:2375`, `http://host:2375`), or to the local default socket when `None` (which
    /// honours a `unix://` `DOCKER_HOST`), and negotiates the API version down to the engine's —
    /// without that, a 20.10 engine (API 1.41) refuses every call of this newer client.
    #[tracing::instrument(skip(helper_image))]
    pub async fn connect(
        docker_host: Option<&str>,
        helper_image: &str,
    ) -> Result<Self, DockerError> {
        let host = docker_host.unwrap_or("the local default socket").to_owned();
        let docker = match docker_host {
            None => Docker::connect_with_local_defaults(),
            Some(h) if h.starts_with('/') => Docker::connect_with_host(&format!("unix://{h}")),
            Some(h)
                if h.starts_with("unix://")
                    || h.starts_with("tcp://")
                    || h.starts_with("http://") =>
            {
                Docker::connect_with_host(h)
            }
            Some(h) => {
                return Err(DockerError::UnsupportedHost { host: h.to_owned() });
            }
        }
        .map_err(|source| DockerError::Connect {
            host: host.clone(),
            source,
        })?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|source| DockerError::Connect {
                host: host.clone(),
                source,
            })?;
        tracing::debug!(api_version = %docker.client_version(), "connected to Docker");
        Ok(Self {
            docker,
            helper_image: helper_image.to_owned(),
            instance: None,
        })
    }

    /// This client, labelling the helpers it creates as engine instance `instance`'s.
    pub fn for_instance(mut self, instance: &str) -> Self {
        self.instance = Some(instance.to_owned());
        self
    }

    /// Succeeds when the engine answers.
    #[tracing::instrument(skip(self))]
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| DockerError::api("answer a ping", e))
    }

    /// The image helper containers run from (it needs `sh`, `sleep`, `cat`, `tar`).
    pub fn helper_image(&self) -> &str {
        &self.helper_image
    }

    /// The underlying bollard client, for calls this adapter does not wrap.
    pub fn raw(&self) -> &Docker {
        &self.docker
    }

    /// Makes sure the helper image is present, pulling it when missing.
    #[tracing::instrument(skip(self), fields(image = %self.helper_image))]
    pub async fn ensure_helper_image(&self) -> Result<(), DockerError> {
        match self.docker.inspect_image(&self.helper_image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(DockerError::api(
                    format!("inspect the helper image {}", self.helper_image),
                    e,
                ))
            }
        }
        tracing::info!("helper image missing; pulling it");
        let options = CreateImageOptionsBuilder::new()
            .from_image(&self.helper_image)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            if let Err(e) = step {
                return Err(DockerError::HelperImage {
                    image: self.helper_image.clone(),
                    reason: chain(&e),
                });
            }
        }
        // A pull can "succeed" without producing the tag (e.g. a platform mismatch); check.
        match self.docker.inspect_image(&self.helper_image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(DockerError::HelperImage {
                image: self.helper_image.clone(),
                reason: chain(&e),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_unknown_schemes_before_connecting() {
        let err = DockerClient::connect(Some("ssh://box"), "img")
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|m| m.starts_with("unsupported Docker host \"ssh://box\"")),
            "{err:?}"
        );
    }
}

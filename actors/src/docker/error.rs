//! `DockerError`: every way the Docker adapter fails, worded for the person reading a backup log,
//! and whether retrying the same call later can help.

use bollard::errors::Error as BollardError;

/// A failure of the Docker adapter. Messages carry the engine's own words (the whole cause chain),
/// so the `Display` alone is enough for a backup row's log.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The `docker_host` setting names a transport this build cannot speak.
    #[error(
        "unsupported Docker host {host:?}: use unix:///path/to/docker.sock, an absolute socket path, \
         tcp://host:port or http://host:port"
    )]
    UnsupportedHost { host: String },

    /// The engine could not be reached, or its API version could not be negotiated.
    #[error("cannot reach the Docker engine at {host}: {}", chain(.source))]
    Connect {
        host: String,
        #[source]
        source: BollardError,
    },

    /// The helper image is not on this machine and pulling it failed.
    #[error(
        "the helper image {image} is not available on this Docker host and could not be pulled \
         ({reason}); load or build it locally, or make its registry reachable"
    )]
    HelperImage { image: String, reason: String },

    /// The named volume does not exist.
    #[error("Docker volume {volume:?} does not exist")]
    VolumeNotFound { volume: String },

    /// The container does not exist (any more).
    #[error("Docker container {container:?} does not exist")]
    ContainerNotFound { container: String },

    /// The container exists but is not running, so nothing can be executed in it.
    #[error("Docker container {container:?} is not running")]
    ContainerNotRunning { container: String },

    /// A command ran but its outcome could not be determined.
    #[error("command in container {container:?} ended in an unknown state: {detail}")]
    Exec { container: String, detail: String },

    /// The byte stream we were feeding to Docker (exec stdin, archive upload) failed.
    #[error("reading the data to send to Docker failed: {0}")]
    Input(#[source] std::io::Error),

    /// A precondition of ours that Docker's state does not meet.
    #[error("{0}")]
    Failed(String),

    /// Any other refusal or transport failure of a Docker API call.
    #[error("Docker could not {action}: {}", chain(.source))]
    Api {
        action: String,
        #[source]
        source: BollardError,
    },
}

impl DockerError {
    pub(crate) fn api(action: impl Into<String>, source: BollardError) -> Self {
        Self::Api {
            action: action.into(),
            source,
        }
    }

    /// Whether the same call may succeed later without anyone changing anything: the engine was
    /// unreachable, timed out, or failed on its side (5xx). Missing volumes, a missing helper image,
    /// a bad host setting or a failed input stream need a person (or another component) first.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Api { source, .. } => match status_code(source) {
                Some(code) => code >= 500,
                None => !matches!(
                    source,
                    BollardError::JsonDataError { .. }
                        | BollardError::JsonSerdeError { .. }
                        | BollardError::APIVersionParseError {}
                ),
            },
            Self::UnsupportedHost { .. }
            | Self::HelperImage { .. }
            | Self::VolumeNotFound { .. }
            | Self::ContainerNotFound { .. }
            | Self::ContainerNotRunning { .. }
            | Self::Exec { .. }
            | Self::Failed(_)
            | Self::Input(_) => false,
        }
    }
}

/// The HTTP status of an error the engine answered with, if it answered.
pub(crate) fn status_code(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// `true` when the engine answered 404 (no such container / volume / image / exec).
pub(crate) fn is_not_found(e: &BollardError) -> bool {
    status_code(e) == Some(404)
}

/// "outer: inner: innermost" — bollard's transport errors say little without their causes
/// ("client error (Connect)"), so messages carry the whole chain.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let piece = inner.to_string();
        // Transparent wrappers repeat their cause verbatim; say each thing once.
        if !text.ends_with(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        cur = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_retryable_client_errors_are_not() {
        let server = DockerError::api(
            "create a container",
            BollardError::DockerResponseServerError {
                status_code: 500,
                message: "boom".into(),
            },
        );
        let conflict = DockerError::api(
            "create a container",
            BollardError::DockerResponseServerError {
                status_code: 409,
                message: "name in use".into(),
            },
        );
        assert!(server.is_retryable());
        assert!(!conflict.is_retryable());
        assert!(!DockerError::VolumeNotFound { volume: "v".into() }.is_retryable());
        assert_eq!(
            conflict.to_string(),
            "Docker could not create a container: Docker responded with status code 409: name in use"
        );
    }

    #[test]
    fn chain_joins_causes_once() {
        let io = std::io::Error::other("connection refused");
        let e = DockerError::api("list volumes", BollardError::IOError { err: io });
        assert_eq!(
            e.to_string(),
            "Docker could not list volumes: connection refused"
        );
    }
}

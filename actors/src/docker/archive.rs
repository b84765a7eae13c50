//! Docker's archive API in both directions: a volume's contents as a tar stream (GET, from a
//! created-not-started helper container), and a tar stream extracted into a helper (PUT).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures::StreamExt;

use super::error::DockerError;
use super::helper::{HelperContainer, VOLUME_MOUNT};
use super::DockerClient;
use crate::stream::ByteStream;
use crate::tar_guard::HeldSymlink;

/// Docker answers a PUT archive only once it has extracted the whole body, and bollard's request
/// timeout (2 minutes by default) covers that wait: uploads get a day.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

impl DockerClient {
    /// The volume's contents as an uncompressed tar stream rooted at the volume root (`./`,
    /// `./dir/`, `./dir/file`), streamed from Docker's archive API out of a helper container that
    /// is created (never started) with the volume mounted read-only. Docker's tar writer keeps
    /// modes, numeric owners, mtimes, symlinks (not followed), hard links, empty directories, and
    /// long or non-ASCII names (PAX headers).
    ///
    /// The container is removed when the stream ends, or in the background when it is dropped.
    /// A failure mid-way arrives as an `Err` item wrapping a [`DockerError`].
    #[tracing::instrument(skip(self))]
    pub async fn export_volume(&self, volume: &str) -> Result<ByteStream, DockerError> {
        let mut guard = self.create_helper_container(volume, true).await?;
        // `/volume/.` (not `/volume`) makes Docker name the entries `./…` instead of `volume/…`.
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(&format!("{VOLUME_MOUNT}/."))
            .build();
        let mut body = self
            .docker
            .download_from_container(guard.id(), Some(options));

        // Wait for the first chunk, so that a refusal is this call's error, not the stream's.
        let first = match body.next().await {
            Some(Ok(chunk)) => Some(chunk),
            Some(Err(e)) => {
                if let Err(cleanup) = guard.remove_now().await {
                    tracing::warn!(error = %cleanup, "could not remove the export container");
                }
                return Err(DockerError::api(
                    format!("read the files of volume {volume:?}"),
                    e,
                ));
            }
            None => None,
        };

        let volume = volume.to_owned();
        let stream = async_stream::stream! {
            let mut guard = guard;
            if let Some(chunk) = first {
                yield Ok(chunk);
            }
            let mut failure = None;
            while let Some(item) = body.next().await {
                match item {
                    Ok(chunk) => yield Ok(chunk),
                    Err(e) => {
                        failure = Some(DockerError::api(
                            format!("read the files of volume {volume:?}"),
                            e,
                        ));
                        break;
                    }
                }
            }
            // Remove before the last item, so that whoever read to the end finds it gone.
            if let Err(e) = guard.remove_now().await {
                tracing::warn!(error = %e, volume = %volume, "could not remove the export container");
            }
            if let Some(e) = failure {
                yield Err(std::io::Error::other(e));
            }
        };
        Ok(stream.boxed())
    }
}

impl HelperContainer {
    /// Extracts an uncompressed tar stream into `path` (which must exist) inside the container,
    /// streaming the body. Docker keeps the entries' numeric owners, modes and mtimes — except for
    /// the archive's root entry (`./`), which it ignores; that one is applied to `path` afterwards
    /// (owner, mode, mtime), so an exported volume root comes back as it was.
    /// If `tar` yields an `Err`, the upload is aborted (Docker may have extracted a part) and
    /// `DockerError::Input` is returned.
    #[tracing::instrument(skip(self, tar), fields(container = %self.id()))]
    pub async fn put_archive(&self, path: &str, tar: ByteStream) -> Result<(), DockerError> {
        let watch: Arc<Mutex<UploadWatch>> = Arc::default();
        let seen = Arc::clone(&watch);
        let body = tar.map(move |item| {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            match item {
                Ok(chunk) => {
                    let want = BLOCK.saturating_sub(seen.head.len()).min(chunk.len());
                    seen.head.extend_from_slice(&chunk[..want]);
                    Ok(chunk)
                }
                Err(e) => {
                    let summary = std::io::Error::new(e.kind(), "the archive stream failed");
                    seen.failure = Some(e);
                    Err(summary)
                }
            }
        });
        let options = UploadToContainerOptionsBuilder::new().path(path).build();
        let docker = self.client().docker.clone().with_timeout(UPLOAD_TIMEOUT);
        let result = docker
            .upload_to_container(self.id(), Some(options), bollard::body_try_stream(body))
            .await;

        let watched = std::mem::take(&mut *watch.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some(e) = watched.failure {
            return Err(DockerError::Input(e));
        }
        result.map_err(|e| {
            DockerError::api(
                format!("extract an archive into {path} of container {}", self.id()),
                e,
            )
        })?;
        match RootEntry::parse(&watched.head) {
            Some(root) => self.apply_root_entry(path, &root).await,
            None => Ok(()),
        }
    }

    async fn apply_root_entry(&self, path: &str, root: &RootEntry) -> Result<(), DockerError> {
        // chown first: it clears set-uid/gid bits that chmod then sets back.
        let script = format!(
            "chown {}:{} \"$1\" && chmod {:o} \"$1\" && touch -c -d @{} \"$1\"",
            root.uid, root.gid, root.mode, root.mtime
        );
        let cmd = ["sh", "-c", &script, "sh", path]
            .map(str::to_owned)
            .to_vec();
        let outcome = self
            .client()
            .exec_collect(self.id(), cmd, Vec::new())
            .await?;
        if outcome.success() {
            Ok(())
        } else {
            Err(DockerError::Exec {
                container: self.id().to_owned(),
                detail: format!(
                    "could not give {path} the archive root's owner, mode and mtime (exit code {}): {}",
                    outcome.exit_code,
                    outcome.stderr.trim()
                ),
            })
        }
    }
}

/// Held-back symlinks created per `docker exec` (arguments stay far below ARG_MAX).
const SYMLINKS_PER_EXEC: usize = 256;

impl HelperContainer {
    /// Creates symlinks below `path` with their owners and mtimes, for those that Docker's archive
    /// API refuses to extract (targets above the extraction root). Names travel as arguments, never
    /// through the script's text.
    pub async fn create_symlinks(
        &self,
        path: &str,
        links: &[HeldSymlink],
    ) -> Result<(), DockerError> {
        // The link's folder keeps the mtime the extraction gave it.
        const SCRIPT: &str = r#"cd "$1" || exit 1; shift
while [ $# -gt 0 ]; do
  d=$(dirname -- "$1") && m=$(stat -c %Y "$d") || exit 1
  ln -s -- "$2" "$1" && chown -h "$3" "$1" && touch -h -c -d "@$4" "$1" || exit 1
  touch -c -d "@$m" "$d" || exit 1
  shift 4
done"#;
        for batch in links.chunks(SYMLINKS_PER_EXEC) {
            let mut cmd = ["sh", "-c", SCRIPT, "sh", path].map(str::to_owned).to_vec();
            for link in batch {
                cmd.push(link.path.clone());
                cmd.push(link.target.clone());
                cmd.push(format!("{}:{}", link.uid, link.gid));
                cmd.push(link.mtime.to_string());
            }
            let outcome = self
                .client()
                .exec_collect(self.id(), cmd, Vec::new())
                .await?;
            if !outcome.success() {
                return Err(DockerError::Exec {
                    container: self.id().to_owned(),
                    detail: format!(
                        "could not create symlinks pointing outside {path} (exit code {}): {}",
                        outcome.exit_code,
                        outcome.stderr.trim()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// A tar header block.
const BLOCK: usize = 512;

/// What `put_archive` learns from the bytes it forwards.
#[derive(Debug, Default)]
struct UploadWatch {
    /// The first header block of the archive.
    head: Vec<u8>,
    /// The input stream's own error, if it failed.
    failure: Option<std::io::Error>,
}

/// The attributes of an archive's root directory entry (`./`).
#[derive(Debug, PartialEq, Eq)]
struct RootEntry {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
}

impl RootEntry {
    /// The root entry, if the archive starts with one in a plain header block (Docker's does). An
    /// archive that starts otherwise (a PAX header, a file) is left as Docker extracts it.
    fn parse(head: &[u8]) -> Option<Self> {
        let block = head.get(..BLOCK)?;
        let header = tar::Header::from_byte_slice(block);
        let is_root = matches!(header.path_bytes().as_ref(), b"." | b"./");
        if !is_root || !header.entry_type().is_dir() {
            return None;
        }
        Some(Self {
            mode: header.mode().ok()? & 0o7777,
            uid: header.uid().ok()?,
            gid: header.gid().ok()?,
            mtime: header.mtime().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, kind: tar::EntryType) -> Vec<u8> {
        let mut header = tar::Header::new_ustar();
        let _ = header.set_path(path);
        header.set_entry_type(kind);
        header.set_mode(0o40700);
        header.set_uid(999);
        header.set_gid(998);
        header.set_mtime(1_577_934_245);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    #[test]
    fn root_entry_is_read_from_the_first_block() {
        let root = RootEntry::parse(&header("./", tar::EntryType::Directory));
        assert_eq!(
            root,
            Some(RootEntry {
                mode: 0o700,
                uid: 999,
                gid: 998,
                mtime: 1_577_934_245
            })
        );
        assert_eq!(
            RootEntry::parse(&header("./data/", tar::EntryType::Directory)),
            None
        );
        assert_eq!(
            RootEntry::parse(&header("./", tar::EntryType::Regular)),
            None
        );
        assert_eq!(RootEntry::parse(&[0; 100]), None);
    }
}

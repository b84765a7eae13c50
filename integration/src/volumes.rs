//! Docker volumes for tests: created with files through the helper image, read back as a listing
//! (name, mode, owner, type, mtime, content hash, link target) that two volumes can be compared by.

use vardo_actors::docker::DockerClient;

use crate::setting;

pub async fn docker() -> anyhow::Result<DockerClient> {
    Ok(DockerClient::connect(None, &setting("VARDO_HELPER_IMAGE")).await?)
}

/// Runs `script` with `sh -c` in a helper container that mounts `volume` at /volume.
pub async fn sh(docker: &DockerClient, volume: &str, script: &str) -> anyhow::Result<String> {
    let helper = docker.start_helper(volume, false).await?;
    let out = helper.sh(script).await;
    helper.remove().await?;
    let out = out?;
    anyhow::ensure!(
        out.exit_code == 0,
        "helper script failed ({}): {}",
        out.exit_code,
        out.stderr
    );
    Ok(out.stdout)
}

/// Every entry under the volume root, one line each, sorted: path, type, mode, uid:gid, size,
/// mtime (except directories, whose mtime a restore's renames may touch), sha256 or link target.
pub async fn listing(docker: &DockerClient, volume: &str) -> anyhow::Result<String> {
    let script = r#"cd /volume && find . -mindepth 1 | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then printf '%s link %s %s\n' "$f" "$(readlink "$f")" "$(stat -c '%u:%g %Y' "$f")";
  elif [ -d "$f" ]; then stat -c '%n dir %a %u:%g' "$f";
  elif [ -p "$f" ]; then stat -c '%n fifo %a %u:%g %Y' "$f";
  elif [ -c "$f" ] || [ -b "$f" ]; then stat -c '%n device %F %t:%T %a %u:%g %Y' "$f";
  else printf '%s %s\n' "$(stat -c '%n file %a %u:%g %s %Y links=%h' "$f")" "$(sha256sum < "$f" | cut -c1-64)"; fi
done; stat -c 'root %a %u:%g' ."#;
    sh(docker, volume, script).await
}

/// Removes the volume, and first any container still mounting it (e.g. the helper of an engine
/// that a test killed).
pub async fn remove(docker: &DockerClient, volume: &str) {
    let filters = std::collections::HashMap::from([("volume".to_owned(), vec![volume.to_owned()])]);
    let list = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    for c in docker
        .raw()
        .list_containers(Some(list))
        .await
        .unwrap_or_default()
    {
        if let Some(id) = c.id {
            let rm = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            let _ = docker.raw().remove_container(&id, Some(rm)).await;
        }
    }
    let opts = bollard::query_parameters::RemoveVolumeOptions { force: true };
    if let Err(e) = docker.raw().remove_volume(volume, Some(opts)).await {
        eprintln!("could not remove test volume {volume}: {e}");
    }
}

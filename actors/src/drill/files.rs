//! A file volume's drill: its archive extracted into the scratch volume (through the restore's
//! guard, as a restore extracts it), then the scratch volume's tree — read back through Docker's
//! archive API — compared with the archive's listing.

use super::scratch::Scratch;
use super::tree;
use super::{Ctx, Source};
use crate::progress::stage;

/// Differences listed in the log at most.
const SHOWN: usize = 20;

pub async fn drill(ctx: &Ctx<'_>, source: &Source, scratch: &Scratch) -> Result<String, String> {
    let docker = ctx.docker;
    let helper = docker
        .start_helper(&scratch.volume, false)
        .await
        .map_err(|e| e.to_string())?;
    let extracted = async {
        let (tar, verified) = source.tar(ctx.progress).await?;
        let tar = ctx.progress.meter(stage::EXTRACTION).stream(tar);
        let put = helper.put_archive(crate::docker::VOLUME_MOUNT, tar).await;
        let held = verified.await;
        put?;
        let held =
            held.map_err(|_| anyhow::anyhow!("the archive could not be verified to its end"))?;
        if !held.is_empty() {
            helper
                .create_symlinks(crate::docker::VOLUME_MOUNT, &held)
                .await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let extracted = ctx
        .progress
        .deadline(
            ctx.deadline,
            &[stage::DOWNLOAD, stage::EXTRACTION],
            extracted,
        )
        .await;
    if let Err(e) = helper.remove().await {
        tracing::warn!(error = %e, "could not remove the drill's helper container");
    }
    match extracted {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("extracting the archive failed: {e:#}")),
        Err(stalled) => return Err(stalled.to_string()),
    }
    ctx.log(&format!(
        "{}: archive extracted into scratch volume {}; comparing its tree with the archive",
        source.name, scratch.volume
    ))
    .await?;

    let listings = async {
        let (tar, _) = source.tar(ctx.progress).await?;
        let archive = tree::list(tar).await?;
        let export = docker.export_volume(&scratch.volume).await?;
        let restored = tree::list(ctx.progress.meter(stage::DOWNLOAD).stream(export)).await?;
        Ok::<_, anyhow::Error>((archive, restored))
    };
    let (archive, restored) = match ctx
        .progress
        .deadline(ctx.deadline, &[stage::DOWNLOAD], listings)
        .await
    {
        Ok(Ok(listings)) => listings,
        Ok(Err(e)) => return Err(format!("listing the trees failed: {e:#}")),
        Err(stalled) => return Err(stalled.to_string()),
    };
    let (count, shown) = tree::compare(&archive, &restored, SHOWN);
    if count > 0 {
        return Err(format!(
            "the restored tree differs from the archive in {count} entries: {}",
            shown.join("; ")
        ));
    }
    let bytes: u64 = archive.values().filter_map(|e| e.size).sum();
    Ok(format!(
        "{}: restored {} entries ({bytes} bytes of files); names, types, sizes, modes, owners \
         and link targets equal the archive's",
        source.name,
        archive.len()
    ))
}

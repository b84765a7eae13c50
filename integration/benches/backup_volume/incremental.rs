//! `VARDO_BENCH_STEPS=incremental` (`scripts/bench --incremental`): incremental backups side by
//! side with restic 0.14 (Debian's) on the same S3 server and the same volume — a first backup,
//! an unchanged second one, one after 2 % of the files changed, the storage used after seven
//! daily backups with 2 % change a day, and a restore of the seventh — with the verdict on each
//! goal of the incremental issue.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use uuid::Uuid;
use vardo_actors::model::{BackupKind, Compression, Organization, Status};
use vardo_integration::{setting, volumes, TestBed};

use crate::measure::{timed, Cost};
use crate::volume;

const MIB: f64 = 1024.0 * 1024.0;

/// One measured step of both tools.
struct Pair {
    what: &'static str,
    ours: Cost,
    restic: Cost,
}

/// Changes 2 % of the files (every 50th, a different set each day): a line appended to each.
fn change_script(day: u32) -> String {
    format!(
        r#"cd /volume && find . -type f | sort | awk 'NR % 50 == {day}' | while IFS= read -r f; do
  printf 'changed on day {day}\n' >> "$f"; done"#
    )
}

/// Waits out the second in which vardo-backup reads fresh entries again anyway.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(2100)).await;
}

struct Restic {
    env: Vec<(String, String)>,
    _cache: tempfile::TempDir,
}

impl Restic {
    fn new(bucket: &str) -> anyhow::Result<Self> {
        let cache = tempfile::tempdir()?;
        let endpoint = setting("VARDO_TEST_S3_ENDPOINT");
        let env = vec![
            (
                "RESTIC_REPOSITORY".to_owned(),
                format!("s3:{}/{bucket}/restic", endpoint.trim_end_matches('/')),
            ),
            ("RESTIC_PASSWORD".to_owned(), "bench".to_owned()),
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                setting("VARDO_TEST_S3_ACCESS_KEY"),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                setting("VARDO_TEST_S3_SECRET_KEY"),
            ),
            (
                "AWS_DEFAULT_REGION".to_owned(),
                setting("VARDO_TEST_S3_REGION"),
            ),
            (
                "RESTIC_CACHE_DIR".to_owned(),
                cache.path().display().to_string(),
            ),
        ];
        Ok(Self { env, _cache: cache })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("restic");
        cmd.args(args).envs(self.env.iter().cloned());
        cmd
    }

    fn backup(&self, label: &str, dir: &str) -> anyhow::Result<Cost> {
        let (_, cost) = timed(
            label,
            &mut self.command(&[
                "backup",
                "--quiet",
                "--compression",
                "auto",
                "--host",
                "bench",
                dir,
            ]),
        )
        .context("restic backup")?;
        Ok(cost)
    }
}

/// Bytes stored under `prefix` of the bucket, read from the S3 server's folder.
fn stored_bytes(bucket: &str, prefix: &str) -> anyhow::Result<u64> {
    let dir = Path::new(&setting("VARDO_TEST_S3_ROOT"))
        .join(bucket)
        .join(prefix);
    let out = crate::measure::text(&["du", "-sb", &dir.display().to_string()])?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du of {}: {out}", dir.display()))
}

#[allow(clippy::too_many_arguments)]
pub async fn compare(
    bed: &TestBed,
    binary: &Path,
    org: &Organization,
    target: Uuid,
    app_id: &str,
    docker_volume: &str,
    volume_bytes: u64,
) -> anyhow::Result<()> {
    let dir = volume::mountpoint(docker_volume)?;
    let restic = Restic::new(&bed.bucket.name)?;
    crate::measure::run(&mut restic.command(&["init"])).context("restic init")?;
    let job = crate::insert_job(bed, org, target, app_id, Compression::Zstd, None).await?;
    bed.db
        .client()
        .await?
        .execute(
            "UPDATE backup_job SET incremental_full_every = 7 WHERE id = $1",
            &[&job],
        )
        .await?;
    let ours = |label: &str| -> anyhow::Result<(Uuid, Cost)> {
        let (out, cost) = timed(
            label,
            crate::vardo(bed, binary, &["backup", "--job", &job.to_string()])
                .env("VARDO_READ_VOLUMES_FROM_HOST", "true"),
        )?;
        Ok((crate::first_backup_id(&out)?, cost))
    };

    let mut pairs = Vec::new();
    let mut rows = Vec::new();
    let mut first_source = String::new();
    settle().await;
    for day in 1..=7u32 {
        if day > 2 {
            volumes::sh(&bed.docker, docker_volume, &change_script(day)).await?;
            settle().await;
        }
        let (id, cost) = ours(&format!("vardo-incremental-day{day}"))?;
        let restic_cost = restic.backup(&format!("restic-day{day}"), &dir)?;
        let what = match day {
            1 => Some("first backup"),
            2 => Some("unchanged second backup"),
            3 => Some("backup after 2 % of the files changed"),
            _ => None,
        };
        if let Some(what) = what {
            pairs.push(Pair {
                what,
                ours: cost,
                restic: restic_cost,
            });
        }
        rows.push(id);
        if day == 1 {
            first_source = volume::fingerprint(&dir)?;
        }
    }
    for (day, id) in rows.iter().enumerate() {
        let b = bed.store.backup(*id).await?;
        ensure!(b.status == Status::Success, "day {}: {}", day + 1, b.log);
        let expected = if day == 0 {
            BackupKind::Full
        } else {
            BackupKind::Incremental
        };
        ensure!(
            b.chain.kind == expected,
            "day {}: {:?}\n{}",
            day + 1,
            b.chain,
            b.log
        );
    }
    let ours_stored = stored_bytes(&bed.bucket.name, "vardo")?;
    let restic_stored = stored_bytes(&bed.bucket.name, "restic")?;
    let source = volume::fingerprint(&dir)?;

    // For reference, not a goal: the restore of the chain's full backup alone, whose cost is
    // what a restore through Docker's archive API costs at all.
    volumes::remove(&bed.docker, docker_volume).await;
    let (_, full_restore) = timed(
        "vardo-restore-day1",
        &mut crate::vardo(bed, binary, &["restore", "--backup", &rows[0].to_string()]),
    )?;
    ensure!(
        volume::fingerprint(&volume::mountpoint(docker_volume)?)? == first_source,
        "the restored volume differs from the first day's"
    );

    // Restores of the seventh backup: vardo-backup into the volume (removed first, so created
    // empty), restic into an empty folder.
    volumes::remove(&bed.docker, docker_volume).await;
    let (out, ours_restore) = timed(
        "vardo-restore-day7",
        &mut crate::vardo(bed, binary, &["restore", "--backup", &rows[6].to_string()]),
    )?;
    ensure!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with("success"),
        "the restore of the seventh backup failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    ensure!(
        volume::fingerprint(&volume::mountpoint(docker_volume)?)? == source,
        "the restored volume differs from the seventh day's"
    );
    let into = tempfile::tempdir()?;
    let (_, restic_restore) = timed(
        "restic-restore-day7",
        &mut restic.command(&[
            "restore",
            "latest",
            "--target",
            &into.path().display().to_string(),
        ]),
    )?;
    let restored = into.path().join(dir.trim_start_matches('/'));
    ensure!(
        volume::fingerprint(&restored.display().to_string())? == source,
        "restic's restore differs from the seventh day's"
    );
    pairs.push(Pair {
        what: "restore of the seventh backup",
        ours: ours_restore,
        restic: restic_restore,
    });

    println!();
    println!(
        "incremental backups against restic 0.14 ({:.0} MiB volume, same S3 server; vardo-backup: zstd, host folder, fullEvery 7)",
        volume_bytes as f64 / MIB
    );
    println!(
        "  {:<40} {:>12} {:>12} {:>14} {:>14}  verdict",
        "run", "restic", "vardo-backup", "restic RSS", "vardo RSS"
    );
    for p in &pairs {
        let ratio = p.restic.wall_s / p.ours.wall_s;
        let (goal, met) = match p.what {
            "first backup" => ("≥ 1.3× faster", ratio >= 1.3),
            _ => ("at least as fast", ratio >= 1.0),
        };
        println!(
            "  {:<40} {:>10.2} s {:>10.2} s {:>11} KiB {:>11} KiB  {ratio:.2}× restic's speed; goal {goal}: {}",
            p.what,
            p.restic.wall_s,
            p.ours.wall_s,
            p.restic.peak_rss_kib.map_or("?".to_owned(), |k| k.to_string()),
            p.ours.peak_rss_kib.map_or("?".to_owned(), |k| k.to_string()),
            if met { "met" } else { "NOT met" }
        );
    }
    println!(
        "  {:<40} {:>12} {:>10.2} s {:>14} {:>11} KiB  (reference: a restore through Docker's archive API)",
        "restore of the first (full) backup",
        "",
        full_restore.wall_s,
        "",
        full_restore.peak_rss_kib.map_or("?".to_owned(), |k| k.to_string()),
    );
    let storage_ratio = ours_stored as f64 / restic_stored as f64;
    println!(
        "  {:<40} {:>8.1} MiB {:>8.1} MiB {:>29}  {storage_ratio:.2}× restic's; goal ≤ 1.5×: {}",
        "storage after seven daily backups (2 %/day)",
        restic_stored as f64 / MIB,
        ours_stored as f64 / MIB,
        "",
        if storage_ratio <= 1.5 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(())
}

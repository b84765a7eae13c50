//! Benchmark (not a test): one generated volume backed up and restored, side by side on the same
//! machine and the same S3 server, by the seed's pipeline and by vardo-backup. Run it with
//! `scripts/bench` (see BENCHMARKS.md); it prints a table and the verdict on each goal.
//!
//! 1. baseline — the seed's pipeline: `tar czf` in a helper container into a temporary file, then
//!    an ordinary S3 client (`curl --aws-sigv4`, one PUT) uploads that file;
//! 2. `vardo-backup backup --job` (the release build next to this bench) with a gzip job;
//! 3. the same with a zstd job; then both again with `VARDO_READ_VOLUMES_FROM_HOST=true`, reading
//!    the volume's folder on the host instead of Docker's archive API;
//! 4. the limit: `tar cf - | zstd -3 -T2 > /dev/null` on the host, over the volume's folder, and
//!    for comparison Docker's archive API alone (what vardo-backup reads volumes through), read
//!    with curl into /dev/null;
//! 5. restores of 2 and 3 into an empty volume with `vardo-backup restore`, against the baseline
//!    `curl <presigned URL> | tar xz` of the same .tar.gz into an empty volume's folder (one
//!    baseline for both formats, as the issue sets it), plus `curl | tar x --zstd` of the .tar.zst
//!    for comparison. GNU tar, gzip and zstd reading vardo's archives is checked on the way: every
//!    restored volume must match the original's fingerprint.
//!
//! 6. `gzip-age`, `zstd-age`: the backups of 2 and 3 to a target with age encryption, and the
//!    restore of the `.tar.gz.age`, beside the plain ones (the cost of encryption).
//! 7. `incremental` (not in the default steps): incremental backups against restic, see
//!    [`incremental`].
//!
//! Settings (environment): `VARDO_BENCH_MIB` (volume size, default 1024), `VARDO_BENCH_STEPS`
//! (comma-separated subset of
//! `baseline,gzip,zstd,gzip-age,zstd-age,gzip-host,zstd-host,raw,restore,incremental`,
//! default all but `incremental`),
//! `VARDO_BENCH_GZIP_LEVEL` / `VARDO_BENCH_ZSTD_LEVEL` (the jobs' level; default: the job default),
//! `VARDO_BENCH_PERF=<dir>` (sample the whole machine with `perf` during each run and print where
//! the CPU time went).
//! Everything it creates — volumes, bucket, database — is removed at the end.

mod incremental;
mod measure;
mod report;
mod volume;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use uuid::Uuid;
use vardo_actors::model::{
    Backup, Compression, Organization, RetentionPolicy, Status, TargetKind, VolumeKind,
};
use vardo_actors::storage::TargetStorage;
use vardo_actors::store::NewJob;
use vardo_integration::{process, repo_root, setting, volumes, TestBed};

use measure::{run, text, timed};
use report::{Id, Report, Row};

struct Config {
    mib: u64,
    steps: Vec<String>,
    gzip_level: Option<i32>,
    zstd_level: Option<i32>,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let number = |k: &str| -> anyhow::Result<Option<i64>> {
            var(k)
                .map(|v| {
                    v.trim()
                        .parse()
                        .with_context(|| format!("{k}={v:?} is not a whole number"))
                })
                .transpose()
        };
        let mib = number("VARDO_BENCH_MIB")?.unwrap_or(1024);
        ensure!(mib > 0, "VARDO_BENCH_MIB must be positive");
        let level = |k: &str| -> anyhow::Result<Option<i32>> {
            number(k)?.map(|n| Ok(i32::try_from(n)?)).transpose()
        };
        Ok(Self {
            mib: u64::try_from(mib)?,
            steps: var("VARDO_BENCH_STEPS")
                .unwrap_or_else(|| {
                    "baseline,gzip,zstd,gzip-age,zstd-age,gzip-host,zstd-host,raw,restore"
                        .to_owned()
                })
                .split(',')
                .map(|s| s.trim().to_owned())
                .collect(),
            gzip_level: level("VARDO_BENCH_GZIP_LEVEL")?,
            zstd_level: level("VARDO_BENCH_ZSTD_LEVEL")?,
        })
    }

    fn wants(&self, step: &str) -> bool {
        self.steps.iter().any(|s| s == step)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let bed = TestBed::new().await;
    let result = bench(&bed, &config).await;
    bed.cleanup().await;
    result
}

async fn bench(bed: &TestBed, config: &Config) -> anyhow::Result<()> {
    let binary = process::binary();
    println!("backup_volume benchmark");
    println!(
        "  date:    {}",
        text(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"])?
    );
    println!(
        "  machine: {} CPUs (nproc), {}, {} RAM, {}",
        text(&["nproc"])?,
        cpu_model(),
        text(&["sh", "-c", "free -h | awk '/^Mem:/ { print $2 }'"])?,
        text(&["uname", "-sr"])?
    );
    println!(
        "  docker:  {}; binary: {}",
        text(&["docker", "version", "--format", "{{.Server.Version}}"])?,
        binary.display()
    );
    println!("  load:    {} (1, 5, 15 min) at the start", loadavg());

    let org = bed.organization().await;
    let app = bed
        .app(&org, "bench", &[("data", VolumeKind::Generic)])
        .await;
    let volume = bed.track_volume(&bed.blue(&app, "data"));
    bed.docker.create_volume(&volume).await?;
    let started = Instant::now();
    let (files, volume_bytes) = volume::generate(&bed.docker, &volume, config.mib).await?;
    let source = volume::fingerprint(&volume::mountpoint(&volume)?)?;
    println!(
        "  volume:  {files} files, {:.1} MiB of file contents (75 % text, 25 % random), generated in {:.1} s",
        volume_bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    println!();

    let target = bed
        .target(
            Some(org.id),
            TargetKind::S3,
            bed.bucket.target_json(Some("vardo")),
        )
        .await;
    let storage = bed.bucket.storage();
    let mut report = Report::new(volume_bytes);

    if config.wants("baseline") {
        report.push(baseline_backup(bed, &volume, &storage).await?);
    }
    // The same bucket, archives encrypted with age to an identity of this run.
    let sealed_target = bed
        .target(
            Some(org.id),
            TargetKind::S3,
            bed.bucket.target_json(Some("vardo-age")),
        )
        .await;
    let (identity_text, recipient) = vardo_actors::encryption::Keyring::generate();
    let identity = tempfile::NamedTempFile::new()?;
    std::fs::write(
        identity.path(),
        secrecy::ExposeSecret::expose_secret(&identity_text),
    )?;
    bed.store
        .set_target_encryption(
            sealed_target,
            &vardo_actors::encryption::Encryption::Age {
                recipients: vec![recipient],
            },
        )
        .await?;
    let mut backups = Vec::new();
    for (step, compression, level, from_host, sealed) in [
        ("gzip", Compression::Gzip, config.gzip_level, false, false),
        ("zstd", Compression::Zstd, config.zstd_level, false, false),
        (
            "gzip-age",
            Compression::Gzip,
            config.gzip_level,
            false,
            true,
        ),
        (
            "zstd-age",
            Compression::Zstd,
            config.zstd_level,
            false,
            true,
        ),
        (
            "gzip-host",
            Compression::Gzip,
            config.gzip_level,
            true,
            false,
        ),
        (
            "zstd-host",
            Compression::Zstd,
            config.zstd_level,
            true,
            false,
        ),
    ] {
        if config.wants(step) {
            let to = if sealed { sealed_target } else { target };
            let job = insert_job(bed, &org, to, &app.id, compression, level).await?;
            let (row, backup) =
                vardo_backup(bed, &binary, job, compression, from_host, &storage).await?;
            report.push(row);
            let restored = !(from_host || sealed && compression == Compression::Zstd);
            if config.wants("restore") && restored {
                backups.push((compression, backup));
            } else if let Some(key) = &backup.storage_path {
                // Not needed any more: a 10 GiB run needs the disk.
                storage.delete(key).await?;
            }
        }
    }
    if config.wants("raw") {
        report.push(raw_limit(&volume)?);
        report.push(docker_export(&volume)?);
    }
    if config.wants("restore") {
        // One baseline for both formats, as the issue sets it: `curl | tar xz` of the .tar.gz.
        for (compression, backup) in &backups {
            let key = backup.storage_path.as_deref().context("no storage path")?;
            let sealed = key.ends_with(".age");
            if *compression == Compression::Gzip && !sealed {
                report
                    .push(plain_restore(bed, &volume, &storage, key, *compression, &source).await?);
            }
            report.push(
                vardo_restore(
                    bed,
                    &binary,
                    &volume,
                    backup,
                    *compression,
                    &source,
                    identity.path(),
                )
                .await?,
            );
            if *compression == Compression::Zstd && !sealed {
                report
                    .push(plain_restore(bed, &volume, &storage, key, *compression, &source).await?);
            }
        }
    }

    if !report.is_empty() {
        report.print();
    }
    if config.wants("incremental") {
        // Last: it changes the volume day by day.
        incremental::compare(bed, &binary, &org, target, &app.id, &volume, volume_bytes).await?;
    }
    println!();
    println!("  load:    {} (1, 5, 15 min) at the end", loadavg());
    Ok(())
}

async fn insert_job(
    bed: &TestBed,
    org: &Organization,
    target: Uuid,
    app_id: &str,
    compression: Compression,
    level: Option<i32>,
) -> anyhow::Result<Uuid> {
    Ok(bed
        .store
        .insert_job(&NewJob {
            organization_id: org.id,
            name: format!("bench-{}", compression.as_str()),
            schedule: "0 2 * * *".into(),
            timezone: "UTC".into(),
            enabled: true,
            target_id: Some(target),
            retention: RetentionPolicy {
                keep_all: true,
                ..Default::default()
            },
            notify_on_success: false,
            notify_on_failure: false,
            compression,
            compression_level: level,
            drill_schedule: None,
            incremental_full_every: None,
            app_ids: vec![app_id.to_owned()],
        })
        .await?)
}

/// `tar czf` in a helper container into a temporary host folder, then `curl` uploads the file.
async fn baseline_backup(
    bed: &TestBed,
    volume: &str,
    storage: &TargetStorage,
) -> anyhow::Result<Row> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("a.tar.gz");
    let key = "baseline/a.tar.gz";
    let url = format!(
        "{}/{}/{key}",
        setting("VARDO_TEST_S3_ENDPOINT").trim_end_matches('/'),
        bed.bucket.name
    );
    let script = r#"set -e
docker run --rm -v "$1:/v:ro" -v "$2:/out" "$3" tar czf /out/a.tar.gz -C /v .
curl -sS --fail -o /dev/null --aws-sigv4 "aws:amz:$4:s3" --user "$5" \
  -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -T "$2/a.tar.gz" "$6""#;
    let (_, cost) = timed(
        "baseline-backup",
        Command::new("bash").args([
            "-c",
            script,
            "baseline",
            volume,
            &tmp.path().display().to_string(),
            &setting("VARDO_HELPER_IMAGE"),
            &setting("VARDO_TEST_S3_REGION"),
            &format!(
                "{}:{}",
                setting("VARDO_TEST_S3_ACCESS_KEY"),
                setting("VARDO_TEST_S3_SECRET_KEY")
            ),
            &url,
        ]),
    )
    .context("baseline: tar czf + curl")?;
    let archive_bytes = std::fs::metadata(&file)?.len();
    let stored = storage.stat(key).await?;
    ensure!(
        stored == Some(archive_bytes),
        "the bucket holds {stored:?} bytes under {key}, the temporary file {archive_bytes}"
    );
    Ok(Row {
        id: Id::BaselineBackup,
        cost,
        archive_bytes: Some(archive_bytes),
    })
}

/// The engine's environment, for running the binary as the tests do.
fn vardo(bed: &TestBed, binary: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .iter()
                .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
        )
        .envs(bed.env())
        // For experiments with the allocator: passed on when set.
        .envs(
            ["GLIBC_TUNABLES", "MALLOC_ARENA_MAX"]
                .iter()
                .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
        )
        .current_dir(repo_root().join("integration"));
    cmd
}

/// `vardo-backup backup --job <job>`; the archive must be in the bucket at the recorded size.
async fn vardo_backup(
    bed: &TestBed,
    binary: &Path,
    job: Uuid,
    compression: Compression,
    from_host: bool,
    storage: &TargetStorage,
) -> anyhow::Result<(Row, Backup)> {
    let how = if from_host { "-host" } else { "" };
    let label = format!("vardo-backup-{}{how}", compression.as_str());
    let (out, cost) = timed(
        &label,
        vardo(bed, binary, &["backup", "--job", &job.to_string()])
            .env("VARDO_READ_VOLUMES_FROM_HOST", from_host.to_string()),
    )
    .with_context(|| format!("vardo-backup backup ({})", compression.as_str()))?;
    let id = first_backup_id(&out)?;
    let backup = bed.store.backup(id).await?;
    ensure!(
        backup.status == Status::Success,
        "backup {id} is {:?}: {}",
        backup.status,
        backup.log
    );
    let archive_bytes = u64::try_from(backup.size_bytes.context("the row has no size")?)?;
    let key = backup.storage_path.as_deref().context("no storage path")?;
    let stored = storage.stat(key).await?;
    ensure!(
        stored == Some(archive_bytes),
        "the bucket holds {stored:?} bytes under {key}, the row says {archive_bytes}"
    );
    ensure!(
        backup.log.contains("from its folder on the Docker host") == from_host,
        "backup {id} did not read the volume the way it was asked to: {}",
        backup.log
    );
    let sealed = key.ends_with(".age");
    let id = match (compression, from_host, sealed) {
        (Compression::Gzip, false, false) => Id::GzipBackup,
        (Compression::Zstd, false, false) => Id::ZstdBackup,
        (Compression::Gzip, true, _) => Id::GzipHostBackup,
        (Compression::Zstd, true, _) => Id::ZstdHostBackup,
        (Compression::Gzip, false, true) => Id::GzipAgeBackup,
        (Compression::Zstd, false, true) => Id::ZstdAgeBackup,
    };
    Ok((
        Row {
            id,
            cost,
            archive_bytes: Some(archive_bytes),
        },
        backup,
    ))
}

/// The id of the first row `vardo-backup backup` printed.
fn first_backup_id(out: &std::process::Output) -> anyhow::Result<Uuid> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .next()
        .and_then(|s| Uuid::parse_str(s).ok())
        .with_context(|| format!("no backup id in the output:\n{stdout}"))
}

/// `tar cf - | zstd -3 -T2 > /dev/null` over the volume's folder: no Docker, no upload.
fn raw_limit(volume: &str) -> anyhow::Result<Row> {
    let dir = volume::mountpoint(volume)?;
    let (_, cost) = timed(
        "raw-tar-zstd",
        Command::new("bash").args([
            "-o",
            "pipefail",
            "-c",
            r#"tar cf - -C "$1" . | zstd -q -3 -T2 > /dev/null"#,
            "raw",
            &dir,
        ]),
    )
    .context("tar | zstd")?;
    Ok(Row {
        id: Id::RawZstd,
        cost,
        archive_bytes: None,
    })
}

/// Docker's archive API alone — what vardo-backup reads a volume through — into /dev/null: no
/// compression, no upload.
fn docker_export(volume: &str) -> anyhow::Result<Row> {
    let id = text(&[
        "docker",
        "create",
        "-v",
        &format!("{volume}:/volume:ro"),
        &setting("VARDO_HELPER_IMAGE"),
        "true",
    ])?;
    let socket = std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
    let result = timed(
        "docker-export",
        Command::new("curl")
            .args(["-sS", "--fail", "-o", "/dev/null", "--unix-socket", &socket])
            .arg(format!(
                "http://localhost/containers/{id}/archive?path=/volume/."
            )),
    );
    if let Err(e) = run(Command::new("docker").args(["rm", "-f", &id])) {
        eprintln!("could not remove the export container {id}: {e:#}");
    }
    let (_, cost) = result.context("curl GET archive")?;
    Ok(Row {
        id: Id::DockerExport,
        cost,
        archive_bytes: None,
    })
}

/// `curl <presigned URL> | tar x` of the archive into a new, empty volume's folder.
async fn plain_restore(
    bed: &TestBed,
    volume: &str,
    storage: &TargetStorage,
    key: &str,
    compression: Compression,
    source: &str,
) -> anyhow::Result<Row> {
    let plain = bed.track_volume(&format!("{volume}-plain"));
    bed.docker.create_volume(&plain).await?;
    let dir = volume::mountpoint(&plain)?;
    let url = storage
        .presign_read(key, Duration::from_secs(3600))
        .await?
        .context("an S3 target presigns")?;
    let flag = match compression {
        Compression::Gzip => "-z",
        Compression::Zstd => "--zstd",
    };
    let label = format!("curl-tar-{}", compression.as_str());
    let (_, cost) = timed(
        &label,
        Command::new("bash").args([
            "-o",
            "pipefail",
            "-c",
            r#"curl -sS --fail "$1" | tar -x "$2" -f - -C "$3""#,
            "restore",
            &url,
            flag,
            &dir,
        ]),
    )
    .context("curl | tar x")?;
    ensure!(
        volume::fingerprint(&dir)? == source,
        "curl | tar x of {key} does not give back the original files"
    );
    volumes::remove(&bed.docker, &plain).await;
    Ok(Row {
        id: match compression {
            Compression::Gzip => Id::BaselineRestoreGz,
            Compression::Zstd => Id::PlainRestoreZst,
        },
        cost,
        archive_bytes: None,
    })
}

/// `vardo-backup restore --backup <id>` into the backup's volume, removed first so that the
/// restore creates it empty; the result must match the original's fingerprint.
async fn vardo_restore(
    bed: &TestBed,
    binary: &Path,
    volume: &str,
    backup: &Backup,
    compression: Compression,
    source: &str,
    identity: &Path,
) -> anyhow::Result<Row> {
    volumes::remove(&bed.docker, volume).await;
    let sealed = backup
        .storage_path
        .as_deref()
        .is_some_and(|k| k.ends_with(".age"));
    let label = format!("vardo-restore-{}", compression.as_str());
    let (out, cost) = timed(
        &label,
        vardo(
            bed,
            binary,
            &["restore", "--backup", &backup.id.to_string()],
        )
        .env("VARDO_AGE_IDENTITY_FILE", identity),
    )
    .with_context(|| format!("vardo-backup restore ({})", compression.as_str()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.trim_end().ends_with("success"),
        "the restore did not succeed:\n{stdout}"
    );
    ensure!(
        volume::fingerprint(&volume::mountpoint(volume)?)? == source,
        "the restored volume differs from the original"
    );
    Ok(Row {
        id: match (compression, sealed) {
            (Compression::Gzip, false) => Id::RestoreGz,
            (Compression::Zstd, _) => Id::RestoreZst,
            (Compression::Gzip, true) => Id::RestoreGzAge,
        },
        cost,
        archive_bytes: None,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

//! Benchmark (not a test): back up one generated volume three ways, side by side, on the same
//! volume and the same S3 server, and print a table.
//!
//! 1. baseline — the seed's pipeline: `tar czf` in a helper container into a temporary file, then
//!    an ordinary S3 client (`curl --aws-sigv4`) uploads that file;
//! 2. `vardo-backup backup --job` (the release build next to this bench) with a gzip job;
//! 3. the same with a zstd job.
//!
//! The volume (`VARDO_BENCH_MIB`, default 1024 MiB) is generated afresh on every run from fixed
//! seeds: about 75 % text-like HTML files of many sizes (slices of one seeded 8 MiB text block,
//! each with its own header line) and 25 % incompressible files from /dev/urandom. Everything —
//! volume, bucket, database — is removed at the end. Run it with `scripts/bench`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use uuid::Uuid;
use vardo_actors::model::{Compression, Status, TargetConfig, TargetKind, VolumeKind};
use vardo_actors::storage::TargetStorage;
use vardo_integration::{process, repo_root, setting, volumes, TestBed};

const MIB: f64 = 1024.0 * 1024.0;

/// Fills /volume; `__MIB__` is replaced by the volume size. Prints `<files> <bytes>` last.
const GENERATE: &str = r#"set -eo pipefail
total=$((__MIB__ * 1048576))
text_bytes=$((total * 3 / 4))
rand_bytes=$((total - text_bytes))
blk=8388608
cd /volume
# One seeded 8 MiB block of HTML-like lines: random tags, attributes and words, about half of the
# lines repeating a recent one with a changed number. Stored twice in a row so that every slice
# [offset, offset + size) with offset < 8 MiB and size <= 8 MiB lies inside it.
awk -v seed=20240601 -v lim=$blk 'BEGIN {
  srand(seed)
  nw = split("the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will more can who out said up them some could what into its only time other about than then two may backup volume restore archive server request account invoice customer order product price", w, " ")
  nt = split("div p span li td a h2 h3 em strong", tag, " ")
  n = 0; r = 0
  while (n < lim) {
    if (r > 8 && rand() < 0.55) {
      s = ring[int(rand() * 64) % r]
      sub(/[0-9]+/, int(rand() * 1000), s)
    } else {
      t = tag[int(rand() * nt) + 1]
      k = int(rand() * 12) + 3
      s = sprintf("%s<%s class=\"c%d\" id=\"n%d\">", substr("        ", 1, int(rand() * 4) * 2), t, int(rand() * 40), int(rand() * 100000))
      for (i = 0; i < k; i++) s = s " " w[int(rand() * nw) + 1]
      s = s " </" t ">"
      ring[r % 64] = s; r++
    }
    print s
    n += length(s) + 1
  }
}' > /tmp/half
cat /tmp/half /tmp/half > /tmp/block
rm /tmp/half
for a in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
  for b in 0 1 2 3 4 5 6; do mkdir -p text/d$a/e$b; done
done
mkdir -p bin
# Text files: 95 % of them 256 B .. 128 KiB, 5 % 128 KiB .. 8 MiB (roughly log-uniform; busybox
# awk has no exponentiation), each a header line plus a slice of the block at a seeded offset.
awk -v seed=7 -v bytes=$text_bytes -v blk=$blk '
function pow2(e,  p, j) { p = 1; for (j = 1; j <= e; j++) p *= 2; return int(p * (1 + e - int(e))) }
BEGIN {
  srand(seed); n = 0; i = 0
  while (n < bytes) {
    if (rand() < 0.95) sz = pow2(8 + rand() * 9); else sz = pow2(17 + rand() * 6)
    if (sz > blk) sz = blk
    if (sz > bytes - n) sz = bytes - n
    printf "%d %d %d\n", i, sz, int(rand() * blk)
    n += sz; i++
  }
}' | while read i sz off; do
  { echo "<!-- page $i: $sz bytes from offset $off -->"
    dd if=/tmp/block bs=65536 iflag=skip_bytes,count_bytes skip=$off count=$sz 2>/dev/null
  } > text/d$((i % 16))/e$((i % 7))/page$i.html
done
rm /tmp/block
# Incompressible files: 64 KiB .. 32 MiB.
awk -v seed=11 -v bytes=$rand_bytes '
function pow2(e,  p, j) { p = 1; for (j = 1; j <= e; j++) p *= 2; return int(p * (1 + e - int(e))) }
BEGIN {
  srand(seed); n = 0; i = 0
  while (n < bytes) {
    sz = pow2(16 + rand() * 9)
    if (sz > bytes - n) sz = bytes - n
    printf "%d %d\n", i, sz
    n += sz; i++
  }
}' | while read i sz; do head -c $sz /dev/urandom > bin/blob$i.bin; done
echo "$(find . -type f | wc -l) $(find . -type f -exec stat -c %s {} + | awk '{ s += $1 } END { printf "%d", s }')"
"#;

struct Measured {
    pipeline: &'static str,
    wall_s: f64,
    archive_bytes: u64,
    /// Peak RSS of the measured host process, when it is the one doing the work.
    peak_rss_kib: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mib: u64 = match std::env::var("VARDO_BENCH_MIB") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("VARDO_BENCH_MIB={v:?} is not a whole number of MiB"))?,
        _ => 1024,
    };
    ensure!(mib > 0, "VARDO_BENCH_MIB must be positive");
    let bed = TestBed::new().await;
    let result = bench(&bed, mib).await;
    bed.cleanup().await;
    result
}

async fn bench(bed: &TestBed, mib: u64) -> anyhow::Result<()> {
    let binary = process::binary();
    println!("backup_volume benchmark");
    println!(
        "  machine: {} CPUs (nproc), {}",
        text(&["nproc"])?,
        cpu_model()
    );
    println!(
        "  date:    {}",
        text(&["date", "-u", "+%Y-%m-%d %H:%M:%S UTC"])?
    );
    println!("  binary:  {}", binary.display());

    let org = bed.organization().await;
    let app = bed
        .app(&org, "bench", &[("data", VolumeKind::Generic)])
        .await;
    let volume = bed.blue(&app, "data");
    bed.docker.create_volume(&volume).await?;

    let started = Instant::now();
    let out = volumes::sh(
        &bed.docker,
        &volume,
        &GENERATE.replace("__MIB__", &mib.to_string()),
    )
    .await
    .context("generate the volume")?;
    let (files, volume_bytes) = parse_generated(&out)?;
    println!(
        "  volume:  {volume}: {files} files, {:.1} MiB (75 % text, 25 % random), generated in {:.1} s",
        volume_bytes as f64 / MIB,
        started.elapsed().as_secs_f64()
    );

    let target = bed
        .target(
            Some(org.id),
            TargetKind::S3,
            bed.bucket.target_json(Some("vardo")),
        )
        .await;
    let storage = TargetStorage::open(&TargetConfig::S3(bed.bucket.config()), false)?;

    let mut rows = vec![baseline(bed, &volume, &storage).await?];
    for (pipeline, compression) in [
        ("vardo-backup gzip", Compression::Gzip),
        ("vardo-backup zstd", Compression::Zstd),
    ] {
        let job = bed.job(&org, Some(target), &[&app], compression).await;
        rows.push(vardo(bed, &binary, pipeline, job, &storage).await?);
    }

    print_table(&rows, volume_bytes);
    Ok(())
}

/// `tar czf` in a helper container into a temporary host folder, then `curl` uploads the file.
async fn baseline(
    bed: &TestBed,
    volume: &str,
    storage: &TargetStorage,
) -> anyhow::Result<Measured> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("a.tar.gz");
    let key = "baseline/a.tar.gz";
    let url = format!(
        "{}/{}/{key}",
        setting("VARDO_TEST_S3_ENDPOINT").trim_end_matches('/'),
        bed.bucket.name
    );
    let started = Instant::now();
    run(Command::new("docker").args([
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/v:ro"),
        "-v",
        &format!("{}:/out", tmp.path().display()),
        &setting("VARDO_HELPER_IMAGE"),
        "tar",
        "czf",
        "/out/a.tar.gz",
        "-C",
        "/v",
        ".",
    ]))
    .context("baseline tar czf")?;
    run(Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null"])
        .args([
            "--aws-sigv4",
            &format!("aws:amz:{}:s3", setting("VARDO_TEST_S3_REGION")),
        ])
        .args([
            "--user",
            &format!(
                "{}:{}",
                setting("VARDO_TEST_S3_ACCESS_KEY"),
                setting("VARDO_TEST_S3_SECRET_KEY")
            ),
        ])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-T"])
        .arg(&file)
        .arg(&url))
    .context("baseline upload with curl")?;
    let wall_s = started.elapsed().as_secs_f64();
    let archive_bytes = std::fs::metadata(&file)?.len();
    let stored = storage.stat(key).await?;
    ensure!(
        stored == Some(archive_bytes),
        "the bucket holds {stored:?} bytes under {key}, the temporary file {archive_bytes}"
    );
    Ok(Measured {
        pipeline: "baseline tar czf + curl",
        wall_s,
        archive_bytes,
        peak_rss_kib: None,
    })
}

/// `vardo-backup backup --job <job>` under `/usr/bin/time -f '%e %M'`.
async fn vardo(
    bed: &TestBed,
    binary: &Path,
    pipeline: &'static str,
    job: Uuid,
    storage: &TargetStorage,
) -> anyhow::Result<Measured> {
    let times = tempfile::NamedTempFile::new()?;
    let mut cmd = Command::new("/usr/bin/time");
    cmd.args(["-f", "%e %M", "-o"])
        .arg(times.path())
        .arg(binary)
        .args(["backup", "--job", &job.to_string()])
        .env_clear()
        .envs(
            ["PATH", "HOME"]
                .iter()
                .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
        )
        .envs(bed.env())
        .current_dir(repo_root().join("integration"));
    let out = run(&mut cmd).with_context(|| format!("{pipeline}: vardo-backup backup"))?;
    let report = std::fs::read_to_string(times.path())?;
    let (wall_s, peak_rss_kib) = parse_time(&report)?;

    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .split_whitespace()
        .next()
        .and_then(|s| Uuid::parse_str(s).ok())
        .with_context(|| format!("no backup id in the output:\n{stdout}"))?;
    let row = bed.store.backup(id).await?;
    ensure!(
        row.status == Status::Success,
        "{pipeline}: backup {id} is {:?}: {}",
        row.status,
        row.log
    );
    let archive_bytes = u64::try_from(row.size_bytes.context("the row has no size")?)?;
    let key = row.storage_path.context("the row has no storage path")?;
    let stored = storage.stat(&key).await?;
    ensure!(
        stored == Some(archive_bytes),
        "the bucket holds {stored:?} bytes under {key}, the row says {archive_bytes}"
    );
    Ok(Measured {
        pipeline,
        wall_s,
        archive_bytes,
        peak_rss_kib: Some(peak_rss_kib),
    })
}

fn print_table(rows: &[Measured], volume_bytes: u64) {
    let mib_s = |r: &Measured| volume_bytes as f64 / MIB / r.wall_s;
    let base = rows.first().map(mib_s).unwrap_or(f64::NAN);
    println!();
    println!(
        "| {:<25} | {:>7} | {:>7} | {:>11} | {:>12} | {:>11} |",
        "pipeline", "wall s", "MiB/s", "archive MiB", "peak RSS MiB", "vs baseline"
    );
    println!(
        "|{:-<27}|{:->9}|{:->9}|{:->13}|{:->14}|{:->13}|",
        "", ":", ":", ":", ":", ":"
    );
    for r in rows {
        let rss = match r.peak_rss_kib {
            Some(k) => format!("{:.1}", k as f64 / 1024.0),
            None => "n/a (*)".to_owned(),
        };
        println!(
            "| {:<25} | {:>7.2} | {:>7.1} | {:>11.1} | {:>12} | {:>10.2}x |",
            r.pipeline,
            r.wall_s,
            mib_s(r),
            r.archive_bytes as f64 / MIB,
            rss,
            mib_s(r) / base
        );
    }
    println!();
    println!(
        "MiB/s = volume data ({:.1} MiB of file contents) / wall s. (*) the baseline's tar and gzip \
         run inside a container, not as a child of this process, so their RSS is not measured.",
        volume_bytes as f64 / MIB
    );
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn text(argv: &[&str]) -> anyhow::Result<String> {
    let (program, args) = argv.split_first().context("empty command")?;
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
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

/// The generator's last line: `<files> <bytes>`.
fn parse_generated(out: &str) -> anyhow::Result<(u64, u64)> {
    let last = out.lines().last().unwrap_or_default();
    match last.split_whitespace().collect::<Vec<_>>()[..] {
        [files, bytes] => Ok((files.parse()?, bytes.parse()?)),
        _ => bail!("unexpected generator output:\n{out}"),
    }
}

/// The last line of GNU time's `-f '%e %M'` report (earlier lines may note a non-zero exit).
fn parse_time(report: &str) -> anyhow::Result<(f64, u64)> {
    let last = report.lines().last().unwrap_or_default();
    match last.split_whitespace().collect::<Vec<_>>()[..] {
        [wall, rss] => Ok((wall.parse()?, rss.parse()?)),
        _ => bail!("unexpected /usr/bin/time report: {report:?}"),
    }
}

//! The benchmark's volume: generated from fixed seeds inside a helper container, and compared by a
//! fingerprint of its files read straight from the volume's folder on the Docker host.

use std::process::Command;

use anyhow::{bail, Context as _};
use vardo_actors::docker::DockerClient;
use vardo_integration::volumes;

use crate::measure::{run, text};

/// Fills /volume; `__MIB__` is replaced by the volume size. Prints `<files> <bytes>` last.
///
/// About 75 % text-like HTML files of many sizes (slices of one seeded 8 MiB block of HTML lines,
/// each with its own header line) and 25 % incompressible files from /dev/urandom.
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
echo "$(find . -type f | wc -l) $(find . -type f -exec stat -c %s {} + | awk '{ s += $1 } END { printf "%.0f", s }')"
"#;

/// Fills `volume` with about `mib` MiB of files; returns (files, bytes of file contents).
pub async fn generate(docker: &DockerClient, volume: &str, mib: u64) -> anyhow::Result<(u64, u64)> {
    let out = volumes::sh(
        docker,
        volume,
        &GENERATE.replace("__MIB__", &mib.to_string()),
    )
    .await
    .context("generate the volume")?;
    let last = out.lines().last().unwrap_or_default();
    match last.split_whitespace().collect::<Vec<_>>()[..] {
        [files, bytes] => Ok((files.parse()?, bytes.parse()?)),
        _ => bail!("unexpected generator output:\n{out}"),
    }
}

/// The folder of `volume` on the Docker host (the benchmark runs as root on that host).
pub fn mountpoint(volume: &str) -> anyhow::Result<String> {
    let dir = text(&[
        "docker",
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        volume,
    ])?;
    std::fs::read_dir(&dir).with_context(|| {
        format!("cannot read {dir}, the folder of volume {volume}: run the benchmark as root on the Docker host")
    })?;
    Ok(dir)
}

/// Every regular file's path, size and MD5 under `dir`, hashed into one line, with the file count:
/// two volumes with the same fingerprint hold the same files with the same contents.
pub fn fingerprint(dir: &str) -> anyhow::Result<String> {
    let out = run(Command::new("bash").args([
        "-o",
        "pipefail",
        "-c",
        r#"cd "$1" && find . -type f -printf '%s %p\0' | sort -z | tr '\0' '\n' | md5sum | cut -c1-32 \
           && find . -type f -print0 | sort -z | xargs -0 -r md5sum | md5sum | cut -c1-32 \
           && find . -type f | wc -l"#,
        "fingerprint",
        dir,
    ]))
    .with_context(|| format!("fingerprint {dir}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" "))
}

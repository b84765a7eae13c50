//! The benchmark's table and its verdict on the goals of the performance issue.

use crate::measure::Cost;

const MIB: f64 = 1024.0 * 1024.0;

/// The pipelines measured, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Id {
    BaselineBackup,
    GzipBackup,
    ZstdBackup,
    /// The same backups with `read_volumes_from_host`.
    GzipHostBackup,
    ZstdHostBackup,
    RawZstd,
    /// Not a goal: Docker's archive API alone, read into /dev/null.
    DockerExport,
    BaselineRestoreGz,
    RestoreGz,
    RestoreZst,
    /// Not a goal: what GNU tar and zstd make of the .tar.zst, for comparison.
    PlainRestoreZst,
    /// The gzip and zstd backups, and the gzip restore, on a target with age encryption.
    GzipAgeBackup,
    ZstdAgeBackup,
    RestoreGzAge,
}

impl Id {
    fn label(self) -> &'static str {
        match self {
            Id::BaselineBackup => "baseline: tar czf to file + upload",
            Id::GzipBackup => "vardo-backup .tar.gz",
            Id::ZstdBackup => "vardo-backup .tar.zst",
            Id::GzipHostBackup => "vardo-backup .tar.gz, host folder",
            Id::ZstdHostBackup => "vardo-backup .tar.zst, host folder",
            Id::RawZstd => "limit: tar cf - | zstd -3 -T2",
            Id::DockerExport => "(Docker archive API alone, curl)",
            Id::BaselineRestoreGz => "baseline: curl | tar xz",
            Id::RestoreGz => "vardo-backup restore .tar.gz",
            Id::RestoreZst => "vardo-backup restore .tar.zst",
            Id::PlainRestoreZst => "(curl | tar x --zstd)",
            Id::GzipAgeBackup => "vardo-backup .tar.gz.age",
            Id::ZstdAgeBackup => "vardo-backup .tar.zst.age",
            Id::RestoreGzAge => "vardo-backup restore .tar.gz.age",
        }
    }

    /// The row this one is compared with, and how the comparison reads.
    fn versus(self) -> Option<(Id, &'static str)> {
        match self {
            Id::GzipBackup | Id::ZstdBackup | Id::GzipHostBackup | Id::ZstdHostBackup => {
                Some((Id::BaselineBackup, "baseline"))
            }
            Id::RestoreGz | Id::RestoreZst => Some((Id::BaselineRestoreGz, "curl|tar xz")),
            Id::GzipAgeBackup => Some((Id::GzipBackup, "plain")),
            Id::ZstdAgeBackup => Some((Id::ZstdBackup, "plain")),
            Id::RestoreGzAge => Some((Id::RestoreGz, "plain")),
            _ => None,
        }
    }

    /// Whether the measured process is vardo-backup (whose peak RSS the goals bound).
    fn ours(self) -> bool {
        matches!(
            self,
            Id::GzipBackup
                | Id::ZstdBackup
                | Id::GzipHostBackup
                | Id::ZstdHostBackup
                | Id::RestoreGz
                | Id::RestoreZst
                | Id::GzipAgeBackup
                | Id::ZstdAgeBackup
                | Id::RestoreGzAge
        )
    }
}

pub struct Row {
    pub id: Id,
    pub cost: Cost,
    pub archive_bytes: Option<u64>,
}

pub struct Report {
    volume_bytes: u64,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(volume_bytes: u64) -> Self {
        Self {
            volume_bytes,
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Row) {
        println!(
            "  {:<36} {:>7.2} s  {:>6.1} MiB/s",
            row.id.label(),
            row.cost.wall_s,
            self.mib_s(&row)
        );
        self.rows.push(row);
    }

    fn get(&self, id: Id) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    fn mib_s(&self, row: &Row) -> f64 {
        self.volume_bytes as f64 / MIB / row.cost.wall_s
    }

    /// Throughput of `id` over that of `other`.
    fn speedup(&self, id: Id, other: Id) -> Option<f64> {
        Some(self.mib_s(self.get(id)?) / self.mib_s(self.get(other)?))
    }

    /// Whether any pipeline was measured (`--incremental` alone measures none of them).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn print(&self) {
        println!();
        println!(
            "| {:<36} | {:>7} | {:>7} | {:>8} | {:>8} | {:>5} | {:>6} | {:>5} | {:>5} | {:>5} | {:>16} |",
            "pipeline",
            "wall s",
            "MiB/s",
            "archive",
            "peak RSS",
            "CPU",
            "docker",
            "S3",
            "busy",
            "load",
            "ratio"
        );
        println!(
            "|{:-<38}|{:->9}|{:->9}|{:->10}|{:->10}|{:->7}|{:->8}|{:->7}|{:->7}|{:->7}|{:->18}|",
            "", ":", ":", ":", ":", ":", ":", ":", ":", ":", ":"
        );
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "-".to_owned(),
        };
        for row in &self.rows {
            let c = &row.cost;
            let rss = if row.id.ours() {
                opt(c.peak_rss_kib.map(|k| k as f64 / 1024.0), 1)
            } else {
                "-".to_owned()
            };
            let ratio = match row.id.versus() {
                Some((other, name)) => match self.speedup(row.id, other) {
                    Some(x) => format!("{x:.2}x {name}"),
                    None => "-".to_owned(),
                },
                None => String::new(),
            };
            let ratio = if row.id == Id::ZstdBackup {
                match self.speedup(Id::ZstdBackup, Id::RawZstd) {
                    Some(x) => format!("{x:.2}x limit"),
                    None => ratio,
                }
            } else {
                ratio
            };
            println!(
                "| {:<36} | {:>7.2} | {:>7.1} | {:>8} | {:>8} | {:>5} | {:>6} | {:>5} | {:>5} | {:>5.2} | {:>16} |",
                row.id.label(),
                c.wall_s,
                self.mib_s(row),
                opt(row.archive_bytes.map(|b| b as f64 / MIB), 1),
                rss,
                opt(c.cpu_s, 1),
                opt(c.docker_cpu_s, 1),
                opt(c.s3_cpu_s, 1),
                opt(c.machine_busy.map(|b| b * 100.0), 0) + "%",
                c.load_before,
                ratio
            );
        }
        println!();
        println!(
            "MiB/s: volume data ({:.1} MiB of file contents) / wall s. archive, peak RSS: MiB. CPU: user + \
             system s of the measured process and its children (the baseline's tar and gzip run in a \
             container and are not counted there); docker: dockerd and its children (Docker's tar and \
             untar); S3: the S3 server; busy: all cores, whoever used them; load: 1-minute load average \
             before the run. Peak RSS is only given for vardo-backup.",
            self.volume_bytes as f64 / MIB
        );
        self.print_goals();
    }

    fn print_goals(&self) {
        println!();
        println!("Goals:");
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        for (id, how) in [
            (Id::GzipBackup, "archive API"),
            (Id::GzipHostBackup, "host folder"),
        ] {
            if let Some(x) = self.speedup(id, Id::BaselineBackup) {
                println!(
                    "  .tar.gz ({how}) at least 3x faster than the baseline: {x:.2}x ({})",
                    verdict(x >= 3.0)
                );
            }
        }
        if let (Some(ours), Some(base)) = (
            self.get(Id::GzipBackup).and_then(|r| r.archive_bytes),
            self.get(Id::BaselineBackup).and_then(|r| r.archive_bytes),
        ) {
            let x = ours as f64 / base as f64;
            println!(
                "  .tar.gz at most 1.05x the baseline's size: {x:.3}x ({})",
                verdict(x <= 1.05)
            );
        }
        for (id, how) in [
            (Id::ZstdBackup, "archive API"),
            (Id::ZstdHostBackup, "host folder"),
        ] {
            if let Some(x) = self.speedup(id, Id::RawZstd) {
                println!(
                    "  .tar.zst ({how}) at least 0.8x the throughput of tar | zstd -3 -T2: {x:.2}x ({})",
                    verdict(x >= 0.8)
                );
            }
        }
        if let Some(x) = self.speedup(Id::DockerExport, Id::RawZstd) {
            println!(
                "    (Docker's archive API alone, no compression, no upload: {x:.2}x that limit)"
            );
        }
        let peak = self
            .rows
            .iter()
            .filter(|r| r.id.ours())
            .filter_map(|r| Some((r.cost.peak_rss_kib?, r.id)))
            .max_by_key(|(kib, _)| *kib);
        if let Some((kib, id)) = peak {
            let mib = kib as f64 / 1024.0;
            println!(
                "  peak RSS at most 64 MiB: {mib:.1} MiB at most ({}; {})",
                id.label(),
                verdict(mib <= 64.0)
            );
        }
        for ours in [Id::RestoreGz, Id::RestoreZst] {
            if let Some(x) = self.speedup(ours, Id::BaselineRestoreGz) {
                println!(
                    "  {} at least 0.8x the throughput of curl | tar xz: {x:.2}x ({})",
                    ours.label(),
                    verdict(x >= 0.8)
                );
            }
        }
        for (sealed, plain) in [
            (Id::GzipAgeBackup, Id::GzipBackup),
            (Id::ZstdAgeBackup, Id::ZstdBackup),
            (Id::RestoreGzAge, Id::RestoreGz),
        ] {
            if let (Some(x), Some(s), Some(p)) = (
                self.speedup(sealed, plain),
                self.get(sealed).and_then(|r| r.cost.peak_rss_kib),
                self.get(plain).and_then(|r| r.cost.peak_rss_kib),
            ) {
                println!(
                    "  (cost of encryption) {}: {x:.2}x the throughput of the plain one, peak RSS \
                     {:.1} vs {:.1} MiB",
                    sealed.label(),
                    s as f64 / 1024.0,
                    p as f64 / 1024.0
                );
            }
        }
        if let Some(x) = self.speedup(Id::RestoreZst, Id::PlainRestoreZst) {
            println!(
                "  (not a goal) vardo-backup restore .tar.zst vs curl | tar x --zstd: {x:.2}x"
            );
        }
    }
}

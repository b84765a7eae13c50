//! Measuring one pipeline: wall time, the peak RSS and CPU time of the measured process (GNU
//! time), the CPU time Docker's daemon and the S3 server spent meanwhile, and how busy the whole
//! machine was (other work on a shared machine shows up there).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{bail, Context as _};

/// What one run cost.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    pub wall_s: f64,
    /// Peak RSS of the measured process (for a shell pipeline: its largest process).
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU of the measured process and its children.
    pub cpu_s: Option<f64>,
    /// CPU of dockerd and its children (Docker's tar and untar run there) during the run.
    pub docker_cpu_s: Option<f64>,
    /// CPU of the S3 server during the run.
    pub s3_cpu_s: Option<f64>,
    /// Share of all cores busy during the run, whoever used them.
    pub machine_busy: Option<f64>,
    /// 1-minute load average when the run started.
    pub load_before: f64,
}

/// CPU counters read before a run, to subtract after it.
struct Counters {
    docker: Option<f64>,
    s3: Option<f64>,
    machine: Option<(u64, u64)>,
}

fn read_counters() -> Counters {
    Counters {
        docker: pid_of("dockerd").and_then(process_cpu_s),
        s3: pid_of("s3s-fs").and_then(process_cpu_s),
        machine: machine_ticks(),
    }
}

/// Runs `cmd` under `/usr/bin/time` and measures it. `cmd` must not already be wrapped.
///
/// With `VARDO_BENCH_PERF=<dir>`, the whole machine is also sampled with `perf record -a` while
/// `cmd` runs, into `<dir>/<label>.data`, and where the CPU time went (by process and library)
/// is printed: the profile behind BENCHMARKS.md.
pub fn timed(label: &str, cmd: &mut Command) -> anyhow::Result<(Output, Cost)> {
    let report = tempfile::NamedTempFile::new()?;
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let perf = std::env::var("VARDO_BENCH_PERF")
        .ok()
        .filter(|d| !d.trim().is_empty())
        .map(|dir| Path::new(&dir).join(format!("{label}.data")));
    let mut wrapped = match &perf {
        Some(data) => {
            if let Some(dir) = data.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut perf = Command::new("perf");
            perf.args(["record", "-q", "-a", "-e", "cpu-clock", "-F", "499", "-o"])
                .arg(data)
                .args(["--", "/usr/bin/time"]);
            perf
        }
        None => Command::new("/usr/bin/time"),
    };
    wrapped
        .args(["-f", "%e %M %U %S", "-o"])
        .arg(report.path())
        .arg(program)
        .args(args);
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let load_before = load_average();
    let before = read_counters();
    let started = Instant::now();
    let out = run(&mut wrapped)?;
    let wall_s = started.elapsed().as_secs_f64();
    let after = read_counters();
    if let Some(data) = &perf {
        print_profile(label, data)?;
    }
    let report = std::fs::read_to_string(report.path())?;
    let last = report.lines().last().unwrap_or_default();
    let (rss, cpu) = match last.split_whitespace().collect::<Vec<_>>()[..] {
        [_, rss, user, sys] => (
            rss.parse::<u64>()?,
            user.parse::<f64>()? + sys.parse::<f64>()?,
        ),
        _ => bail!("unexpected /usr/bin/time report: {report:?}"),
    };
    Ok((
        out,
        Cost {
            wall_s,
            peak_rss_kib: Some(rss),
            cpu_s: Some(cpu),
            docker_cpu_s: delta(before.docker, after.docker),
            s3_cpu_s: delta(before.s3, after.s3),
            machine_busy: busy(before.machine, after.machine),
            load_before,
        },
    ))
}

/// Where the sampled CPU time went: share of all samples by process and library.
fn print_profile(label: &str, data: &Path) -> anyhow::Result<()> {
    let out = run(Command::new("perf")
        .args([
            "report",
            "--stdio",
            "-q",
            "--sort",
            "comm,dso",
            "--percent-limit",
            "1",
            "-i",
        ])
        .arg(data))
    .with_context(|| format!("perf report of {}", data.display()))?;
    println!("    profile of {label} (perf, all cores; share of samples, by process and library):");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.trim().is_empty() {
            println!("      {}", line.trim());
        }
    }
    Ok(())
}

fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

fn busy(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let (b_busy, b_total) = before?;
    let (a_busy, a_total) = after?;
    let total = a_total.checked_sub(b_total)?;
    (total > 0).then(|| a_busy.saturating_sub(b_busy) as f64 / total as f64)
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
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

/// A command's trimmed standard output.
pub fn text(argv: &[&str]) -> anyhow::Result<String> {
    let (program, args) = argv.split_first().context("empty command")?;
    let out = run(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn pid_of(name: &str) -> Option<u32> {
    let out = Command::new("pidof").args(["-s", name]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// User + system CPU seconds of a process and its waited-for children.
fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..15)?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Some(ticks as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    text(&["getconf", "CLK_TCK"])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100.0)
}

/// (busy, total) jiffies of all cores from /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

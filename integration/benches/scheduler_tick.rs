//! CPU and wall time of one scheduler tick over 10 000 enabled jobs, beside the cost of evaluating
//! the same schedules alone (the tick's pure part), in one run.
//!
//! Run: `scripts/services`, then `cargo bench -p vardo-integration --bench scheduler_tick`
//! (`VARDO_BENCH_JOBS` changes the job count).

use std::time::{Duration, Instant};

use actix::Actor as _;
use chrono::{DateTime, Utc};
use vardo_actors::run::RunSupervisor;
use vardo_actors::schedule::{minute_of, Schedule};
use vardo_actors::scheduler::{Scheduler, Tick};
use vardo_integration::TestBed;

/// This process's user + system CPU time (from /proc; 10 ms resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let jobs: usize = std::env::var("VARDO_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    actix::System::new().block_on(async move {
        let bed = TestBed::new().await;
        let org = bed.organization().await;
        let client = bed.db.client().await.expect("db");
        let schedules = ["0 3 * * *", "*/15 2 * * 1-5", "30 4 1 * *", "0 5 * * 0"];
        client
            .execute(
                "INSERT INTO backup_job (organization_id, name, schedule, timezone)
                 SELECT $1, 'bench-' || g, ($2::text[])[1 + g % 4],
                        CASE WHEN g % 2 = 0 THEN 'UTC' ELSE 'Europe/Berlin' END
                 FROM generate_series(1, $3::int) g",
                &[&org.id, &schedules.to_vec(), &(jobs as i32)],
            )
            .await
            .expect("jobs");

        // Baseline: the schedules alone, parsed and evaluated for one minute each.
        let base = minute_of(Utc::now()) + chrono::Duration::days(1);
        let start = (Instant::now(), cpu_time());
        for i in 0..jobs {
            let tz = if i % 2 == 0 { "UTC" } else { "Europe/Berlin" };
            let s = Schedule::parse(schedules[(i + 1) % 4], tz).expect("valid");
            std::hint::black_box(s.latest_due_between(base - chrono::Duration::minutes(1), base));
        }
        let pure = (start.0.elapsed(), cpu_time() - start.1);

        let engine = bed.engine();
        let crew = vardo_actors::crew::Crew::start(&engine);
        let supervisor = RunSupervisor::start(engine.clone(), crew.clone());
        let scheduler = Scheduler::new(engine, crew, supervisor, "bench".into()).start();
        // Ticks for minutes in the future (no job is due then), one new minute each.
        let rounds = 10;
        let mut walls = Vec::new();
        let cpu_start = cpu_time();
        for r in 1..=rounds {
            let now: DateTime<Utc> = base + chrono::Duration::minutes(r);
            let t = Instant::now();
            let report = scheduler.send(Tick { now }).await.expect("mailbox").expect("tick");
            walls.push(t.elapsed());
            assert_eq!(report.jobs, jobs, "every job evaluated");
            assert!(report.started.is_empty());
        }
        let cpu = (cpu_time() - cpu_start) / rounds as u32;
        walls.sort();
        let median = walls[walls.len() / 2];
        println!("scheduler tick over {jobs} enabled jobs (2-core machine, {} )", Utc::now().format("%Y-%m-%d"));
        println!("{:<44} {:>10} {:>12}", "what", "wall ms", "engine CPU ms");
        println!("{:<44} {:>10.1} {:>12.1}", "baseline: evaluate the schedules alone", pure.0.as_secs_f64() * 1e3, pure.1.as_secs_f64() * 1e3);
        println!("{:<44} {:>10.1} {:>12.1}", "one tick (load jobs, evaluate, overdue check)", median.as_secs_f64() * 1e3, cpu.as_secs_f64() * 1e3);
        println!("(tick wall: median of {rounds}; min {:.1} ms, max {:.1} ms; CPU is this process's user+system time, 10 ms resolution)",
            walls[0].as_secs_f64() * 1e3, walls[walls.len() - 1].as_secs_f64() * 1e3);
        bed.cleanup().await;
        actix::System::current().stop();
    });
}

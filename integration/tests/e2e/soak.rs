//! The kill -9 soak: three scheduler engines run jobs every minute while one engine at a time is
//! killed (SIGKILL) at pseudo-random moments and started again. Afterwards: no row is left
//! `pending` or `running`, every `success` row's object is in the bucket with its recorded size
//! and SHA-256, no (job, minute) ran twice, and every (job, minute) that did not run is explained
//! — its previous run was still going, or an engine was killed within that minute's first
//! seconds, holding the minute's lock. `VARDO_SOAK_KILLS` (default 20, CI's size, over about
//! three and a half minutes) sets how many kills; `scripts/soak` runs 200 (about 15 minutes).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vardo_actors::model::Status;
use vardo_integration::process::Server;
use vardo_integration::{eventually, TestBed};

use crate::scheduler::{jobs, previous_run_overlaps, runs_per_minute, scheduler_env};

/// A small xorshift: the kill moments differ from kill to kill but are the same every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

#[tokio::test]
async fn kill_9_at_random_moments_under_three_schedulers_loses_and_doubles_nothing() {
    let kills: usize = std::env::var("VARDO_SOAK_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let bed = TestBed::new().await;
    let ids = jobs(&bed, 6, "* * * * *").await;
    let env = scheduler_env(
        &bed,
        &[
            ("VARDO_MAX_CONCURRENT_RUNS", "2"),
            ("VARDO_RUN_LEASE_SECONDS", "6"),
            ("VARDO_HEARTBEAT_SECONDS", "1"),
        ],
    );
    let spawn = || Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let mut engines: Vec<Server> = (0..3).map(|_| spawn()).collect();
    let started = Utc::now();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut killed_at: Vec<DateTime<Utc>> = Vec::new();
    // The kills spread over at least three and a half minutes (three whole minutes observed),
    // at pseudo-random gaps around the mean, so that kills land in every part of a minute.
    let span_ms = (210_000 / kills.max(1) as u64).max(2000);
    for _ in 0..kills {
        let wait = Duration::from_millis(span_ms / 2 + next(&mut rng) % span_ms);
        let until = Instant::now() + wait;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let victim = (next(&mut rng) % 3) as usize;
        engines[victim].kill();
        killed_at.push(Utc::now());
        engines[victim] = spawn();
    }
    // Let the engines settle what the killed ones left: the janitor fails rows past the lease.
    let bed_ref = &bed;
    eventually(
        Duration::from_secs(90),
        "no row pending or running",
        || async move {
            let client = bed_ref.db.client().await.ok()?;
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM backup WHERE status IN ('pending', 'running')
                 AND created_at < now() - interval '20 seconds'",
                    &[],
                )
                .await
                .ok()?
                .get(0);
            (n == 0).then_some(())
        },
    )
    .await;
    let ended = Utc::now();
    // Stopped gracefully, so that the runs they have going settle (a kill now would leave rows
    // `running` that no janitor is left to fail).
    for engine in &engines {
        engine.signal("TERM");
    }
    for engine in &mut engines {
        let status = engine.wait_exit(Duration::from_secs(120)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "a soaked engine stops on SIGTERM with exit 0: {status:?}"
        );
    }
    drop(engines);

    let counts = runs_per_minute(&bed).await;
    for ((job, minute), n) in &counts {
        assert_eq!(*n, 1, "job {job} ran {n} times for {minute}");
    }
    // Every minute wholly inside the soak: each job ran, or its absence is explained.
    let first = minute_of(started) + chrono::Duration::minutes(1);
    let last = minute_of(ended) - chrono::Duration::minutes(1);
    let mut minute = first;
    let (mut fired, mut busy, mut killed) = (0, 0, 0);
    let minutes: BTreeSet<DateTime<Utc>> = counts.keys().map(|(_, m)| *m).collect();
    while minute <= last {
        for job in &ids {
            if counts.contains_key(&(*job, minute)) {
                fired += 1;
            } else if killed_at.iter().any(|k| {
                *k >= minute - chrono::Duration::seconds(2)
                    && *k < minute + chrono::Duration::seconds(30)
            }) {
                // The engine that held this minute's lock may have died before firing it; the
                // lock (61 s, the seed's) keeps the others from firing the minute twice.
                killed += 1;
            } else {
                assert!(
                    previous_run_overlaps(&bed, *job, minute).await,
                    "job {job} missed {minute} with no engine killed then and no run of it going"
                );
                busy += 1;
            }
        }
        minute += chrono::Duration::minutes(1);
    }
    assert!(
        fired > busy + killed,
        "most minutes fired: {fired} fired, {busy} busy, {killed} lost to a kill; minutes seen {minutes:?}"
    );

    // Every success row's object is whole; no row is left unfinished.
    let client = bed.db.client().await.expect("db");
    let unfinished: i64 = client
        .query_one(
            "SELECT count(*) FROM backup WHERE status IN ('pending', 'running')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(unfinished, 0, "no row left pending or running");
    let storage = bed.bucket.storage();
    let mut verified = 0;
    for row in client
        .query("SELECT id FROM backup WHERE status = 'success'", &[])
        .await
        .expect("rows")
    {
        let row = bed.store.backup(row.get(0)).await.expect("row");
        assert_eq!(row.status, Status::Success);
        let key = row.storage_path.clone().expect("key");
        let digest = vardo_actors::codec::digest(storage.download(&key).await.expect("object"))
            .await
            .expect("digest");
        assert_eq!(Some(digest.size as i64), row.size_bytes, "{key}");
        assert_eq!(
            Some(format!("sha256:{}", digest.sha256_hex)),
            row.checksum,
            "{key}"
        );
        verified += 1;
    }
    let failed: i64 = client
        .query_one("SELECT count(*) FROM backup WHERE status = 'failed'", &[])
        .await
        .expect("count")
        .get(0);
    eprintln!(
        "soak: {kills} kills; {fired} (job, minute) fired, {busy} skipped busy, {killed} lost to a \
         kill; {verified} success objects verified, {failed} rows failed"
    );
    assert!(verified > 0, "some backups succeeded");
    bed.cleanup().await;
}

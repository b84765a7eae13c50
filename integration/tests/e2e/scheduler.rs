//! The scheduler across real engine processes sharing one Postgres and Redis: every (job, minute)
//! fires exactly once, a killed engine's rows are failed within the lease, and a Redis outage
//! neither double-fires nor loses the missed minute.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use vardo_actors::model::{Compression, TargetKind, VolumeKind};
use vardo_integration::process::Server;
use vardo_integration::redis::PrivateRedis;
use vardo_integration::{eventually, volumes, TestBed};

/// Jobs covering one tiny volume each, on `schedule`, to a bucket of the bed.
pub(crate) async fn jobs(bed: &TestBed, count: usize, schedule: &str) -> Vec<Uuid> {
    let org = bed.organization().await;
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let mut ids = Vec::new();
    for i in 0..count {
        let app = bed
            .app(&org, &format!("s{i}x"), &[("files", VolumeKind::Generic)])
            .await;
        let volume = bed.blue(&app, "files");
        bed.docker.create_volume(&volume).await.expect("volume");
        let id = bed
            .job(&org, Some(target), &[&app], Compression::Gzip)
            .await;
        set_schedule(bed, id, schedule).await;
        ids.push(id);
    }
    ids
}

pub(crate) async fn set_schedule(bed: &TestBed, job: Uuid, schedule: &str) {
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup_job SET schedule = $2 WHERE id = $1",
            &[&job, &schedule],
        )
        .await
        .expect("schedule");
}

/// Runs per (job, scheduled minute).
pub(crate) async fn runs_per_minute(bed: &TestBed) -> HashMap<(Uuid, DateTime<Utc>), i64> {
    let client = bed.db.client().await.expect("db");
    client
        .query(
            "SELECT job_id, scheduled_for, count(DISTINCT run_id) FROM backup
             WHERE reason = 'schedule' GROUP BY 1, 2",
            &[],
        )
        .await
        .expect("counts")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

/// Whether a run of `job` scheduled before `minute` was still going at some point of that minute.
pub(crate) async fn previous_run_overlaps(bed: &TestBed, job: Uuid, minute: DateTime<Utc>) -> bool {
    let client = bed.db.client().await.expect("db");
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM backup WHERE job_id = $1 AND scheduled_for < $2
               AND created_at < $2 + interval '1 minute'
               AND coalesce(finished_at, now()) >= $2)",
            &[&job, &minute],
        )
        .await
        .expect("overlap")
        .get(0)
}

pub(crate) fn scheduler_env(bed: &TestBed, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = bed.env();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

#[tokio::test]
async fn three_engines_fire_each_job_exactly_once_every_minute() {
    let bed = TestBed::new().await;
    let ids = jobs(&bed, 12, "* * * * *").await;
    let env = scheduler_env(&bed, &[("VARDO_MAX_CONCURRENT_RUNS", "2")]);
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::spawn(&["--role", "scheduler"], &env).expect("engine"))
        .collect();
    // Wait until four distinct minutes have fired: at least three whole minutes observed.
    let bed_ref = &bed;
    eventually(
        Duration::from_secs(330),
        "four scheduled minutes",
        || async move {
            let minutes: BTreeSet<DateTime<Utc>> = runs_per_minute(bed_ref)
                .await
                .keys()
                .map(|(_, m)| *m)
                .collect();
            (minutes.len() >= 4).then_some(())
        },
    )
    .await;
    drop(servers);
    let counts = runs_per_minute(&bed).await;
    let minutes: BTreeSet<DateTime<Utc>> = counts.keys().map(|(_, m)| *m).collect();
    let (first, last) = (
        *minutes.first().expect("a minute"),
        *minutes.last().expect("a minute"),
    );
    assert!(last - first >= chrono::Duration::minutes(3), "{minutes:?}");
    for ((job, minute), n) in &counts {
        assert_eq!(*n, 1, "job {job} ran {n} times for {minute}");
    }
    // The last minute may have been cut by stopping the engines; in every earlier one each job
    // fired, unless its previous run was still going then (the scheduler skips a busy job).
    let mut skipped = 0;
    for job in &ids {
        for minute in minutes.iter().filter(|m| **m < last) {
            if counts.contains_key(&(*job, *minute)) {
                continue;
            }
            assert!(
                previous_run_overlaps(&bed, *job, *minute).await,
                "job {job} missed {minute} while no run of it was going"
            );
            skipped += 1;
        }
    }
    let fired = counts.len();
    assert!(
        skipped <= fired,
        "{skipped} busy skips against {fired} runs: the engines fell far behind"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_killed_engines_rows_fail_within_the_lease_and_the_job_keeps_firing() {
    let bed = TestBed::new().await;
    let ids = jobs(&bed, 1, "* * * * *").await;
    let job = ids[0];
    let volume = format!("s0x{}-blue_files", bed.id);
    // Large enough that the run is still going when the engine is killed.
    volumes::sh(
        &bed.docker,
        &volume,
        "head -c 400000000 /dev/urandom > /volume/big",
    )
    .await
    .expect("populate");
    let env = scheduler_env(
        &bed,
        &[
            ("VARDO_RUN_LEASE_SECONDS", "8"),
            ("VARDO_HEARTBEAT_SECONDS", "2"),
        ],
    );
    let mut first = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let client = bed.db.client().await.expect("db");
    let client_ref = &client;
    let killed_run: Uuid = eventually(Duration::from_secs(90), "a running row", || async move {
        client_ref
            .query_opt(
                "SELECT run_id FROM backup WHERE job_id = $1 AND status = 'running'",
                &[&job],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0))
    })
    .await;
    let second = Server::spawn(&["--role", "scheduler"], &env).expect("second engine");
    first.kill();
    let failed: String = eventually(
        Duration::from_secs(30),
        "the killed run's row to fail",
        || async move {
            client_ref
                .query_opt(
                    "SELECT log FROM backup WHERE run_id = $1 AND status = 'failed'",
                    &[&killed_run],
                )
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0))
        },
    )
    .await;
    assert!(failed.contains("engine stopped during the run"), "{failed}");
    // The survivor keeps the job on time: a later scheduled run succeeds.
    eventually(
        Duration::from_secs(150),
        "a later run to succeed",
        || async move {
            client_ref
            .query_opt(
                "SELECT 1 FROM backup WHERE job_id = $1 AND run_id <> $2 AND status = 'success'",
                &[&job, &killed_run],
            )
            .await
            .ok()
            .flatten()
            .map(drop)
        },
    )
    .await;
    drop(second);
    bed.cleanup().await;
}

#[tokio::test]
async fn a_redis_outage_fires_nothing_twice_and_catches_the_missed_minute_up_once() {
    let bed = TestBed::new().await;
    let mut redis = PrivateRedis::start();
    let watched = jobs(&bed, 3, "* * * * *").await[0];
    let env = {
        let mut env = scheduler_env(&bed, &[]);
        env.retain(|(k, _)| k != "REDIS_URL");
        env.push(("REDIS_URL".into(), redis.url()));
        env
    };
    let servers: Vec<Server> = (0..2)
        .map(|_| Server::spawn(&["--role", "scheduler"], &env).expect("engine"))
        .collect();
    let bed_ref = &bed;
    eventually(
        Duration::from_secs(90),
        "a first scheduled run",
        || async move { (!runs_per_minute(bed_ref).await.is_empty()).then_some(()) },
    )
    .await;
    // A job due only at the next minute, which falls inside the outage.
    let next = vardo_actors::schedule::minute_of(Utc::now()) + chrono::Duration::minutes(1);
    let once = jobs(
        &bed,
        1,
        &format!("{} {} * * *", next.format("%M"), next.format("%H")),
    )
    .await[0];
    redis.stop();
    let resp = reqwest::get(format!("{}/readyz", servers[0].base_url))
        .await
        .expect("readyz");
    assert_eq!(resp.status().as_u16(), 503, "readyz while redis is down");
    // The outage itself (90 s: a minute and a half of due runs), not a wait for an effect.
    tokio::time::sleep(Duration::from_secs(90)).await;
    redis.resume();
    eventually(
        Duration::from_secs(150),
        "the missed minute caught up",
        || async move {
            runs_per_minute(bed_ref)
                .await
                .contains_key(&(once, next))
                .then_some(())
        },
    )
    .await;
    // One more minute after recovery, then count.
    let after = Utc::now();
    eventually(
        Duration::from_secs(130),
        "a run after recovery",
        || async move {
            let counts = runs_per_minute(bed_ref).await;
            counts
                .keys()
                .any(|(j, m)| *j == watched && *m > after)
                .then_some(())
        },
    )
    .await;
    drop(servers);
    let counts = runs_per_minute(&bed).await;
    for ((job, minute), n) in &counts {
        assert_eq!(*n, 1, "job {job} ran {n} times for {minute}");
    }
    assert_eq!(
        counts.keys().filter(|(j, _)| *j == once).count(),
        1,
        "the missed job ran once"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_request_claimed_by_a_dead_engine_is_handed_back_and_run() {
    let bed = TestBed::new().await;
    let job = jobs(&bed, 1, "0 3 1 1 *").await[0];
    let client = bed.db.client().await.expect("db");
    let run_id = bed
        .store
        .request_run(job, vardo_actors::model::RunReason::Manual, None)
        .await
        .expect("request");
    // Claimed an hour ago by an engine that is gone.
    client
        .execute(
            "UPDATE run_request SET claimed_at = now() - interval '1 hour', claimed_by = 'dead' WHERE id = $1",
            &[&run_id],
        )
        .await
        .expect("claim");
    let env = scheduler_env(
        &bed,
        &[
            ("VARDO_RUN_LEASE_SECONDS", "8"),
            ("VARDO_HEARTBEAT_SECONDS", "2"),
        ],
    );
    let server = Server::spawn(&["--role", "scheduler"], &env).expect("engine");
    let store = &bed.store;
    let rows = eventually(
        Duration::from_secs(60),
        "the handed-back run to finish",
        || async move {
            let rows = store.run_backups(run_id).await.ok()?;
            rows.iter()
                .all(|r| r.status == vardo_actors::model::Status::Success)
                .then_some(rows)
                .filter(|r| !r.is_empty())
        },
    )
    .await;
    assert_eq!(rows.len(), 1);
    drop(server);
    bed.cleanup().await;
}

//! restic itself is the oracle for retention: for seeded random sets of backup times (sparse and
//! dense, across year and ISO-week-year boundaries and summer-time changes, in several zones) we
//! create real snapshots with `restic backup --time`, ask `restic forget --dry-run --json` what
//! each policy keeps, and require our plan to keep the same backups for the same reasons.
//!
//! Debian ships restic 0.14, which predates one rule of restic 0.17 that our plans follow: the
//! oldest backup of a series is kept by every counted rule that still has slots left when the walk
//! reaches it. Everything else is the same walk, so the difference is confined to the oldest
//! backup and can be computed from restic's own answer: a rule has slots left at the oldest backup
//! exactly when it kept fewer backups than its count among the others (restic lists the rules that
//! kept each backup). The expected answer is restic 0.14's, with the oldest backup's reasons
//! replaced by those rules (a superset of what 0.14 gave it), and kept if there is any.
//!
//! Speed: restic spends most of a second deriving its key (scrypt, calibrated at `init`) in every
//! process. So the throwaway repository's key is replaced by one for the same master key with cheap
//! scrypt parameters, written in restic's key file format (scrypt → AES-256-CTR + Poly1305-AES);
//! all sets share that repository (each set is its own `--host`, hence its own group in `forget`);
//! snapshots are made by several processes at once; and one `forget` per policy answers for every
//! set.
//!
//! restic reads `--time` in the process's local zone and stores the offset with the snapshot; its
//! periods are the stored time's wall clock. Each snapshot is made with TZ set to the set's zone,
//! or, for a wall-clock time that occurs twice (the repeated hour at the end of summer time), to
//! the fixed `Etc/GMT±N` zone of that instant's offset.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Duration, LocalResult, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use vardo_actors::model::RetentionPolicy;
use vardo_actors::retention::{self, Candidate, Reason};

const PASSWORD: &str = "oracle-password";
const WORKERS: usize = 4;

/// splitmix64: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).expect("a non-empty range");
        lo + i64::try_from(self.next() % span).expect("fits")
    }
}

struct TimeSet {
    host: &'static str,
    zone: Tz,
    times: Vec<DateTime<Utc>>,
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a valid time")
        .with_timezone(&Utc)
}

/// `n` times going forward from `start` with gaps of `gap` seconds (inclusive range).
fn walk(rng: &mut Rng, start: &str, n: usize, gap: (i64, i64)) -> Vec<DateTime<Utc>> {
    let mut t = at(start);
    (0..n)
        .map(|_| {
            t += Duration::seconds(rng.range(gap.0, gap.1));
            t
        })
        .collect()
}

/// Bursts of 1–4 backups a few minutes apart, separated by `between` seconds.
fn bursts(rng: &mut Rng, start: &str, n: usize, between: (i64, i64)) -> Vec<DateTime<Utc>> {
    let mut t = at(start);
    let mut out = Vec::new();
    while out.len() < n {
        t += Duration::seconds(rng.range(between.0, between.1));
        for _ in 0..rng.range(1, 4) {
            t += Duration::seconds(rng.range(30, 1200));
            out.push(t);
        }
    }
    out.truncate(n);
    out
}

fn time_sets() -> Vec<TimeSet> {
    let mut rng = Rng(0x7661_7264_6f5f_7265);
    let mut ny = walk(&mut rng, "2024-11-02T22:00:00Z", 22, (600, 4_000));
    // Both halves of New York's repeated hour 01:00–02:00 on 2024-11-03 (05:00–07:00 UTC).
    ny.extend(["05:10", "05:40", "06:20", "06:50"].map(|m| at(&format!("2024-11-03T{m}:00Z"))));
    let sets = vec![
        // Dense, across Berlin's spring-forward (2024-03-31 01:00 UTC).
        TimeSet {
            host: "berlin-spring",
            zone: Tz::Europe__Berlin,
            times: walk(&mut rng, "2024-03-30T16:00:00Z", 24, (300, 5_400)),
        },
        // Dense, across New York's fall-back, with backups in the repeated hour.
        TimeSet {
            host: "ny-fall",
            zone: Tz::America__New_York,
            times: ny,
        },
        // Sparse, two year boundaries.
        TimeSet {
            host: "utc-years",
            zone: Tz::UTC,
            times: walk(&mut rng, "2019-11-20T00:00:00Z", 22, (3_600, 40 * 86_400)),
        },
        // New year in summer time, and ISO week 2020-W53.
        TimeSet {
            host: "sydney-newyear",
            zone: Tz::Australia__Sydney,
            times: walk(&mut rng, "2020-12-24T00:00:00Z", 22, (7_200, 3 * 86_400)),
        },
        // Sparse over years, across Auckland's changes and year ends.
        TimeSet {
            host: "auckland-sparse",
            zone: Tz::Pacific__Auckland,
            times: walk(&mut rng, "2021-02-01T00:00:00Z", 20, (86_400, 60 * 86_400)),
        },
        // A half-hour offset: local days are not UTC days; across a year end.
        TimeSet {
            host: "kolkata-bursts",
            zone: Tz::Asia__Kolkata,
            times: bursts(
                &mut rng,
                "2022-12-27T00:00:00Z",
                22,
                (3 * 3_600, 2 * 86_400),
            ),
        },
        // Bursts across Berlin's fall-back (2023-10-29) and the year end.
        TimeSet {
            host: "berlin-bursts",
            zone: Tz::Europe__Berlin,
            times: bursts(
                &mut rng,
                "2023-10-20T00:00:00Z",
                24,
                (6 * 3_600, 9 * 86_400),
            ),
        },
        // 2026 has 53 ISO weeks; across 2026/2027.
        TimeSet {
            host: "utc-iso53",
            zone: Tz::UTC,
            times: walk(
                &mut rng,
                "2026-12-18T00:00:00Z",
                20,
                (6 * 3_600, 3 * 86_400),
            ),
        },
    ];
    sets.into_iter()
        .map(|mut s| {
            // restic's --time has whole seconds; times in a set are distinct.
            s.times = s
                .times
                .iter()
                .map(|t| DateTime::from_timestamp(t.timestamp(), 0).expect("in range"))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            s
        })
        .collect()
}

fn policies() -> Vec<RetentionPolicy> {
    let p = |l, h, d, w, m, y| RetentionPolicy {
        keep_all: false,
        keep_last: l,
        keep_hourly: h,
        keep_daily: d,
        keep_weekly: w,
        keep_monthly: m,
        keep_yearly: y,
    };
    let mut list = vec![
        p(Some(3), None, None, None, None, None),
        p(None, Some(5), None, None, None, None),
        p(None, Some(100), None, None, None, None),
        p(None, None, Some(4), None, None, None),
        p(None, None, Some(40), None, None, None),
        p(None, None, None, Some(3), None, None),
        p(None, None, None, Some(30), None, None),
        p(None, None, None, None, Some(2), None),
        p(None, None, None, None, Some(24), None),
        p(None, None, None, None, None, Some(2)),
        p(None, None, None, None, None, Some(10)),
        p(Some(1), Some(3), Some(7), Some(4), Some(6), Some(3)),
        p(Some(0), None, Some(2), Some(0), Some(12), None),
    ];
    let mut rng = Rng(0x706f_6c69_6379);
    while list.len() < 24 {
        let mut pick = || match rng.range(0, 5) {
            0..=1 => None,
            2 => Some(0),
            _ => Some(u32::try_from(rng.range(1, 9)).expect("small")),
        };
        let candidate = p(pick(), pick(), pick(), pick(), pick(), pick());
        if candidate.prunes() {
            list.push(candidate);
        }
    }
    list
}

fn restic(tz: &str) -> Command {
    let mut cmd = Command::new("restic");
    cmd.env("RESTIC_PASSWORD", PASSWORD)
        .env_remove("RESTIC_PASSWORD_FILE")
        .env_remove("RESTIC_PASSWORD_COMMAND")
        .env_remove("RESTIC_REPOSITORY")
        .env("TZ", tz);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("restic runs (install it: apt-get install -y restic; scripts/services does)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Replaces the repository's key by one that opens the same master key with scrypt N=1024, r=8,
/// p=1 (restic's design document: 64 key bytes from scrypt — AES-256 key, then the Poly1305-AES
/// key k and r; the sealed master key is IV ‖ AES-CTR ciphertext ‖ Poly1305-AES tag of the
/// ciphertext; the key file's name is the SHA-256 of its content).
fn cheapen_key(repo: &Path) {
    use aes::cipher::generic_array::GenericArray;
    use aes::cipher::{BlockEncrypt, KeyInit, KeyIvInit, StreamCipher};
    use sha2::Digest as _;

    let master = run_ok(
        restic("UTC")
            .args(["cat", "masterkey", "--no-cache", "--repo"])
            .arg(repo),
    );
    let mut rng = Rng(0x6b65_795f_6669_6c65);
    let mut random =
        |n: usize| -> Vec<u8> { (0..n).map(|_| rng.next().to_le_bytes()[0]).collect() };
    let (salt, iv) = (random(64), random(16));
    let mut user = [0u8; 64];
    let params = scrypt::Params::new(10, 8, 1, 64).expect("scrypt parameters");
    scrypt::scrypt(PASSWORD.as_bytes(), &salt, &params, &mut user).expect("scrypt");
    let (encryption, mac_k, mac_r) = (&user[..32], &user[32..48], &user[48..]);

    let mut sealed = master.trim().as_bytes().to_vec();
    ctr::Ctr128BE::<aes::Aes256>::new(
        GenericArray::from_slice(encryption),
        GenericArray::from_slice(&iv),
    )
    .apply_keystream(&mut sealed);
    let mut s = GenericArray::clone_from_slice(&iv);
    aes::Aes128::new(GenericArray::from_slice(mac_k)).encrypt_block(&mut s);
    let poly_key = [mac_r, s.as_slice()].concat();
    let tag = <poly1305::Poly1305 as KeyInit>::new(GenericArray::from_slice(&poly_key))
        .compute_unpadded(&sealed);
    let data = [iv.as_slice(), &sealed, tag.as_slice()].concat();

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "username": "oracle",
        "hostname": "oracle",
        "kdf": "scrypt",
        "N": 1024,
        "r": 8,
        "p": 1,
        "salt": b64.encode(&salt),
        "data": b64.encode(&data),
    })
    .to_string();
    let keys = repo.join("keys");
    for old in std::fs::read_dir(&keys).expect("the keys folder") {
        std::fs::remove_file(old.expect("a key file").path()).expect("remove the slow key");
    }
    let name = hex::encode(sha2::Sha256::digest(file.as_bytes()));
    std::fs::write(keys.join(name), file).expect("write the cheap key");
}

/// The local wall-clock time restic is given and the TZ it reads it in.
fn restic_time(t: DateTime<Utc>, zone: Tz) -> (String, String) {
    let local = t.with_timezone(&zone);
    let wall = local.naive_local();
    let tz = match zone.from_local_datetime(&wall) {
        LocalResult::Single(_) => zone.name().to_owned(),
        _ => {
            let hours = local.offset().fix().local_minus_utc() / 3600;
            assert_eq!(hours * 3600, local.offset().fix().local_minus_utc());
            // POSIX sign: Etc/GMT-2 is two hours east of UTC.
            format!("Etc/GMT{:+}", -hours)
        }
    };
    (wall.format("%Y-%m-%d %H:%M:%S").to_string(), tz)
}

/// Runs `jobs` on a few threads, results in order.
fn parallel<T: Sync, R: Send>(jobs: Vec<T>, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(jobs.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { return };
                let r = f(job);
                results.lock().expect("not poisoned")[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("not poisoned")
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

fn reason_of(restic_match: &str) -> Reason {
    match restic_match {
        "last snapshot" => Reason::Last,
        "hourly snapshot" => Reason::Hourly,
        "daily snapshot" => Reason::Daily,
        "weekly snapshot" => Reason::Weekly,
        "monthly snapshot" => Reason::Monthly,
        "yearly snapshot" => Reason::Yearly,
        other => panic!("unexpected restic keep reason {other:?}"),
    }
}

fn forget_args(p: &RetentionPolicy) -> Vec<String> {
    let flags = [
        ("--keep-last", p.keep_last),
        ("--keep-hourly", p.keep_hourly),
        ("--keep-daily", p.keep_daily),
        ("--keep-weekly", p.keep_weekly),
        ("--keep-monthly", p.keep_monthly),
        ("--keep-yearly", p.keep_yearly),
    ];
    flags
        .iter()
        .filter_map(|(flag, n)| n.map(|n| [flag.to_string(), n.to_string()]))
        .flatten()
        .collect()
}

type Decision = BTreeMap<DateTime<Utc>, BTreeSet<Reason>>;

/// One group of `restic forget --json`: its host, every snapshot time, and the kept ones' reasons.
fn parse_groups(json: &str) -> BTreeMap<String, (BTreeSet<DateTime<Utc>>, Decision)> {
    let groups: serde_json::Value = serde_json::from_str(json).expect("forget --json output");
    let time = |v: &serde_json::Value| {
        DateTime::parse_from_rfc3339(v["time"].as_str().expect("a time"))
            .expect("an RFC 3339 time")
            .with_timezone(&Utc)
    };
    let mut out = BTreeMap::new();
    for g in groups.as_array().expect("a list of groups") {
        let host = g["host"].as_str().expect("grouped by host").to_owned();
        let mut all = BTreeSet::new();
        for s in ["keep", "remove"] {
            for sn in g[s].as_array().into_iter().flatten() {
                all.insert(time(sn));
            }
        }
        let mut kept = Decision::new();
        for r in g["reasons"].as_array().into_iter().flatten() {
            let reasons = r["matches"]
                .as_array()
                .expect("matches")
                .iter()
                .map(|m| reason_of(m.as_str().expect("a match")))
                .collect();
            kept.insert(time(&r["snapshot"]), reasons);
        }
        out.insert(host, (all, kept));
    }
    out
}

/// restic 0.14's decision turned into restic 0.17's (see the module comment). Returns whether it
/// changed anything.
fn add_oldest_rule(
    policy: &RetentionPolicy,
    all: &BTreeSet<DateTime<Utc>>,
    kept: &mut Decision,
) -> bool {
    let Some(oldest) = all.first().copied() else {
        return false;
    };
    let with_slots: BTreeSet<Reason> = policy
        .rules()
        .into_iter()
        .filter(|(reason, n)| {
            let used = kept
                .iter()
                .filter(|(t, why)| **t != oldest && why.contains(reason))
                .count();
            used < *n as usize
        })
        .map(|(reason, _)| reason)
        .collect();
    let before = kept.get(&oldest).cloned().unwrap_or_default();
    assert!(
        before.is_subset(&with_slots),
        "restic 0.14 kept the oldest backup for {before:?}, beyond the rules with slots left {with_slots:?}"
    );
    if with_slots.is_empty() {
        return false;
    }
    kept.insert(oldest, with_slots.clone());
    before != with_slots
}

fn ours(times: &[DateTime<Utc>], zone: Tz, policy: &RetentionPolicy) -> Decision {
    let candidates = times
        .iter()
        .enumerate()
        .map(|(id, t)| Candidate { id, time: *t })
        .collect();
    retention::plan(candidates, policy, zone)
        .keep
        .into_iter()
        .map(|k| (k.time, k.reasons.into_iter().collect()))
        .collect()
}

fn show(set: &TimeSet, expected: &Decision, got: &Decision) -> String {
    set.times
        .iter()
        .rev()
        .map(|t| {
            format!(
                "{} ({})  restic {:?}  ours {:?}\n",
                t.to_rfc3339(),
                t.with_timezone(&set.zone)
                    .format("%Y-%m-%d %H:%M %Z, ISO %G-W%V"),
                expected.get(t),
                got.get(t)
            )
        })
        .collect()
}

#[test]
fn plans_keep_what_restic_forget_keeps() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("data.txt");
    std::fs::write(&file, "retention oracle\n").expect("write the file to back up");
    // One repository per worker, each written by one process at a time: restic 0.14's lock check
    // races with concurrent writers (a lock file that vanishes while it lists them is retried
    // with a backoff of seconds). The copies share the cheap key.
    let repos: Vec<PathBuf> = (0..WORKERS)
        .map(|i| dir.path().join(format!("repo-{i}")))
        .collect();
    run_ok(
        restic("UTC")
            .args(["init", "--quiet", "--no-cache", "--repo"])
            .arg(&repos[0]),
    );
    cheapen_key(&repos[0]);
    for copy in &repos[1..] {
        let status = Command::new("cp")
            .arg("-a")
            .arg(&repos[0])
            .arg(copy)
            .status()
            .expect("cp runs");
        assert!(status.success(), "copy the repository");
    }

    let sets = time_sets();
    let count: usize = sets.iter().map(|s| s.times.len()).sum();
    let per_repo: Vec<(usize, Vec<&TimeSet>)> = (0..WORKERS)
        .map(|w| (w, sets.iter().skip(w).step_by(WORKERS).collect()))
        .collect();
    parallel(per_repo, |(w, sets)| {
        for set in sets {
            for t in &set.times {
                let (wall, tz) = restic_time(*t, set.zone);
                run_ok(
                    restic(&tz)
                        .args(["backup", "--quiet", "--no-cache", "--host", set.host])
                        .args(["--time", &wall, "--repo"])
                        .arg(&repos[*w])
                        .arg(&file),
                );
            }
        }
    });
    let made = started.elapsed();

    let policies = policies();
    let calls: Vec<(usize, usize)> = (0..policies.len())
        .flat_map(|p| (0..WORKERS).map(move |w| (p, w)))
        .collect();
    let outputs = parallel(calls.clone(), |(p, w)| {
        run_ok(
            restic("UTC")
                .args(["--no-lock", "--no-cache", "--repo"])
                .arg(&repos[*w])
                .args(["forget", "--dry-run", "--json"])
                .args(forget_args(&policies[*p])),
        )
    });
    let mut answers = vec![BTreeMap::new(); policies.len()];
    for ((p, _), output) in calls.iter().zip(&outputs) {
        answers[*p].extend(parse_groups(output));
    }

    let (mut cases, mut adjusted, mut pruned_somewhere, mut zone_mattered) = (0, 0, 0, 0);
    for (policy, groups) in policies.iter().zip(&answers) {
        assert_eq!(groups.len(), sets.len(), "one group per set");
        for set in &sets {
            let (all, mut expected) = groups[set.host].clone();
            // restic made each snapshot at the instant we meant, with the zone's offset.
            let wanted: BTreeSet<_> = set.times.iter().copied().collect();
            assert_eq!(all, wanted, "{}: restic's snapshot times", set.host);
            adjusted += usize::from(add_oldest_rule(policy, &all, &mut expected));
            let got = ours(&set.times, set.zone, policy);
            assert_eq!(
                expected,
                got,
                "{} in {} with {policy:?}:\n{}",
                set.host,
                set.zone,
                show(set, &expected, &got)
            );
            cases += 1;
            pruned_somewhere += usize::from(got.len() < set.times.len());
            zone_mattered += usize::from(got != ours(&set.times, Tz::UTC, policy));
        }
    }
    // The offsets restic stored are the zones' (a missing tzdata would silently make them UTC).
    for repo in &repos {
        let listing = run_ok(
            restic("UTC")
                .args(["--no-lock", "--no-cache", "--repo"])
                .arg(repo)
                .args(["snapshots", "--json"]),
        );
        let stored: serde_json::Value = serde_json::from_str(&listing).expect("snapshots --json");
        for sn in stored.as_array().expect("a list") {
            let host = sn["hostname"].as_str().expect("hostname");
            let time =
                DateTime::parse_from_rfc3339(sn["time"].as_str().expect("time")).expect("time");
            let set = sets.iter().find(|s| s.host == host).expect("a known host");
            assert_eq!(
                time.offset().fix(),
                time.with_timezone(&set.zone).offset().fix(),
                "{host}: restic stored {time}; is tzdata installed?"
            );
        }
    }
    assert!(
        adjusted > 0,
        "no case exercised the oldest-backup rule of restic 0.17"
    );
    assert!(pruned_somewhere > cases / 2, "most cases prune something");
    assert!(
        zone_mattered > 0,
        "no case where the time zone changed the plan"
    );
    eprintln!(
        "{cases} cases ({} sets × {} policies, {count} snapshots) agree with restic; \
         {adjusted} needed the 0.17 oldest-backup rule, {zone_mattered} differ from UTC's plan; \
         snapshots took {made:?}, all {:?}",
        sets.len(),
        policies.len(),
        started.elapsed()
    );
}

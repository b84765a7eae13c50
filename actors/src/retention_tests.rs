//! Unit tests of `retention`: worked examples of each rule, time zones and the ISO week year, and
//! property tests of the invariants. The cross-check against restic itself is the integration test
//! `retention_oracle`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn candidates(times: &[&str]) -> Vec<Candidate<usize>> {
    times
        .iter()
        .enumerate()
        .map(|(id, t)| Candidate { id, time: at(t) })
        .collect()
}

/// The kept ids, newest first.
fn kept(times: &[&str], policy: &RetentionPolicy, tz: Tz) -> Vec<usize> {
    plan(candidates(times), policy, tz)
        .keep
        .iter()
        .map(|k| k.id)
        .collect()
}

fn policy(f: impl FnOnce(&mut RetentionPolicy)) -> RetentionPolicy {
    let mut p = RetentionPolicy::default();
    f(&mut p);
    p
}

#[test]
fn keep_last_keeps_the_newest_whatever_the_input_order() {
    let times = [
        "2024-01-01T00:00:00Z",
        "2024-01-03T00:00:00Z",
        "2024-01-02T00:00:00Z",
        "2024-01-04T00:00:00Z",
    ];
    let p = policy(|p| p.keep_last = Some(2));
    let plan = plan(candidates(&times), &p, Tz::UTC);
    assert_eq!(plan.keep.iter().map(|k| k.id).collect::<Vec<_>>(), [3, 1]);
    assert_eq!(plan.prune.iter().map(|c| c.id).collect::<Vec<_>>(), [2, 0]);
    assert!(plan.keep.iter().all(|k| k.reasons == [Reason::Last]));
}

#[test]
fn daily_keeps_the_newest_of_each_day_and_skips_empty_days() {
    let times = [
        "2024-01-10T20:00:00Z", // 0: day 10, newest
        "2024-01-10T08:00:00Z", // 1: day 10 again
        "2024-01-07T23:00:00Z", // 2: day 7 (8 and 9 are empty and cost nothing)
        "2024-01-07T01:00:00Z", // 3
        "2024-01-05T12:00:00Z", // 4: day 5, but the rule is used up
        "2024-01-04T12:00:00Z", // 5: oldest, rule used up: pruned
    ];
    let p = policy(|p| p.keep_daily = Some(2));
    assert_eq!(kept(&times, &p, Tz::UTC), [0, 2]);
}

#[test]
fn the_oldest_backup_is_kept_while_a_rule_has_slots_left() {
    // Three days, five daily slots: the newest of each day, plus the oldest backup (restic 0.17).
    let times = [
        "2024-01-03T10:00:00Z",
        "2024-01-02T10:00:00Z",
        "2024-01-01T12:00:00Z",
        "2024-01-01T08:00:00Z",
    ];
    let p = policy(|p| p.keep_daily = Some(5));
    let plan = plan(candidates(&times), &p, Tz::UTC);
    assert_eq!(plan.keep.len(), 4);
    assert_eq!(plan.keep[3].reasons, [Reason::Daily]);
    // With exactly as many slots as days, the last slot goes to day 1's newest, not the oldest.
    let p = policy(|p| p.keep_daily = Some(3));
    assert_eq!(kept(&times, &p, Tz::UTC), [0, 1, 2]);
}

#[test]
fn weeks_are_iso_weeks_with_the_iso_year_and_years_are_calendar_years() {
    let times = [
        "2021-01-04T12:00:00Z", // 0: Monday, ISO 2021-W01
        "2021-01-01T12:00:00Z", // 1: Friday, ISO 2020-W53, calendar 2021
        "2020-12-31T12:00:00Z", // 2: Thursday, ISO 2020-W53, calendar 2020
        "2020-12-20T12:00:00Z", // 3: ISO 2020-W51
    ];
    let weekly = policy(|p| p.keep_weekly = Some(2));
    assert_eq!(kept(&times, &weekly, Tz::UTC), [0, 1]);
    let yearly = policy(|p| p.keep_yearly = Some(2));
    assert_eq!(kept(&times, &yearly, Tz::UTC), [0, 2]);
}

#[test]
fn periods_are_the_job_time_zone_days() {
    let times = [
        "2024-01-02T00:30:00Z", // 0: UTC Jan 2; Berlin Jan 2 01:30
        "2024-01-01T23:30:00Z", // 1: UTC Jan 1; Berlin Jan 2 00:30
        "2023-12-30T12:00:00Z", // 2
    ];
    let p = policy(|p| p.keep_daily = Some(2));
    assert_eq!(kept(&times, &p, Tz::UTC), [0, 1]);
    assert_eq!(kept(&times, &p, Tz::Europe__Berlin), [0, 2]);
}

#[test]
fn the_repeated_hour_at_the_end_of_summer_time_is_one_hour() {
    // New York, 2024-11-03: 01:30 EDT (05:30Z) and 01:30 EST (06:30Z) share the wall-clock hour.
    let times = [
        "2024-11-03T06:30:00Z",
        "2024-11-03T05:30:00Z",
        "2024-11-03T04:30:00Z",
    ];
    let p = policy(|p| p.keep_hourly = Some(2));
    assert_eq!(kept(&times, &p, Tz::America__New_York), [0, 2]);
    assert_eq!(kept(&times, &p, Tz::UTC), [0, 1]);
}

#[test]
fn rules_are_unioned_and_each_kept_backup_names_its_rules() {
    let times = [
        "2024-03-05T10:00:00Z",
        "2024-03-05T09:00:00Z",
        "2024-03-04T10:00:00Z",
        "2024-02-10T10:00:00Z",
    ];
    let p = policy(|p| {
        p.keep_last = Some(2);
        p.keep_daily = Some(2);
        p.keep_monthly = Some(2);
    });
    let plan = plan(candidates(&times), &p, Tz::UTC);
    let reasons: Vec<(usize, Vec<Reason>)> =
        plan.keep.into_iter().map(|k| (k.id, k.reasons)).collect();
    assert_eq!(
        reasons,
        [
            (0, vec![Reason::Last, Reason::Daily, Reason::Monthly]),
            (1, vec![Reason::Last]),
            (2, vec![Reason::Daily]),
            (3, vec![Reason::Monthly]),
        ]
    );
}

#[test]
fn keep_all_and_empty_policies_keep_everything() {
    let times = ["2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"];
    let all = policy(|p| {
        p.keep_all = true;
        p.keep_last = Some(1);
    });
    let plan_all = plan(candidates(&times), &all, Tz::UTC);
    assert!(plan_all.prune.is_empty());
    assert!(plan_all.keep.iter().all(|k| k.reasons == [Reason::All]));
    for empty in [
        RetentionPolicy::default(),
        policy(|p| {
            p.keep_last = Some(0);
            p.keep_daily = Some(0);
        }),
    ] {
        let plan = plan(candidates(&times), &empty, Tz::UTC);
        assert_eq!(plan.keep.len(), 2);
        assert!(plan.keep.iter().all(|k| k.reasons == [Reason::NoPolicy]));
    }
    let nothing: Vec<Candidate<usize>> = Vec::new();
    assert_eq!(
        plan(nothing, &policy(|p| p.keep_last = Some(3)), Tz::UTC),
        Plan {
            keep: vec![],
            prune: vec![]
        }
    );
}

#[test]
fn equal_times_are_ordered_by_id() {
    let t = at("2024-01-01T00:00:00Z");
    let series = vec![
        Candidate { id: "b", time: t },
        Candidate { id: "a", time: t },
        Candidate { id: "c", time: t },
    ];
    let plan = plan(series, &policy(|p| p.keep_last = Some(1)), Tz::UTC);
    assert_eq!(plan.keep[0].id, "a");
    assert_eq!(
        plan.prune.iter().map(|c| c.id).collect::<Vec<_>>(),
        ["b", "c"]
    );
}

#[test]
fn validation_refuses_only_all_zero_and_out_of_range_values() {
    assert_eq!(RetentionPolicy::default().validate(), Ok(()));
    assert_eq!(policy(|p| p.keep_last = Some(1)).validate(), Ok(()));
    let mixed = policy(|p| {
        p.keep_last = Some(0);
        p.keep_weekly = Some(4);
    });
    assert_eq!(mixed.validate(), Ok(()));
    let zeros = policy(|p| {
        p.keep_last = Some(0);
        p.keep_daily = Some(0);
    });
    let err = zeros.validate().expect_err("all zero is refused");
    assert!(err.contains("every keep value is 0"), "{err}");
    let zeros_but_all = policy(|p| {
        p.keep_all = true;
        p.keep_last = Some(0);
    });
    assert_eq!(zeros_but_all.validate(), Ok(()));
    let huge = policy(|p| p.keep_yearly = Some(u32::MAX));
    assert!(huge
        .validate()
        .expect_err("too large is refused")
        .starts_with("keepYearly"));
}

#[test]
fn time_zones_are_parsed_by_iana_name() {
    assert_eq!(parse_time_zone("Europe/Berlin"), Ok(Tz::Europe__Berlin));
    assert_eq!(parse_time_zone("UTC"), Ok(Tz::UTC));
    assert!(matches!(
        parse_time_zone("Mars/Olympus"),
        Err(RetentionError::UnknownTimeZone(_))
    ));
}

const ZONES: [Tz; 5] = [
    Tz::UTC,
    Tz::Europe__Berlin,
    Tz::America__New_York,
    Tz::Australia__Sydney,
    Tz::Asia__Kolkata,
];

fn arb_times() -> impl Strategy<Value = Vec<i64>> {
    // 2019..2026, seconds; duplicates allowed (ties are ordered by id).
    prop::collection::vec(1_546_300_800i64..1_767_225_600, 0..60)
}

fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
    let count = || prop::option::of(0u32..8);
    (
        any::<bool>(),
        count(),
        count(),
        count(),
        count(),
        count(),
        count(),
    )
        .prop_map(|(all, l, h, d, w, m, y)| RetentionPolicy {
            keep_all: all,
            keep_last: l,
            keep_hourly: h,
            keep_daily: d,
            keep_weekly: w,
            keep_monthly: m,
            keep_yearly: y,
        })
}

fn series(times: &[i64]) -> Vec<Candidate<usize>> {
    times
        .iter()
        .enumerate()
        .map(|(id, s)| Candidate {
            id,
            time: DateTime::from_timestamp(*s, 0).unwrap_or_default(),
        })
        .collect()
}

proptest! {
    #[test]
    fn keep_last_keeps_min_n_len(times in arb_times(), n in 1u32..20, zone in 0usize..5) {
        let p = policy(|p| p.keep_last = Some(n));
        let plan = plan(series(&times), &p, ZONES[zone]);
        prop_assert_eq!(plan.keep.len(), times.len().min(n as usize));
        // They are the newest.
        if let (Some(oldest_kept), Some(newest_pruned)) = (plan.keep.last(), plan.prune.first()) {
            prop_assert!(oldest_kept.time >= newest_pruned.time);
        }
    }

    #[test]
    fn keep_all_keeps_all(times in arb_times(), p in arb_policy(), zone in 0usize..5) {
        let p = RetentionPolicy { keep_all: true, ..p };
        let plan = plan(series(&times), &p, ZONES[zone]);
        prop_assert_eq!(plan.keep.len(), times.len());
        prop_assert!(plan.prune.is_empty());
    }

    #[test]
    fn plans_are_deterministic_whatever_the_input_order(
        (times, shuffled) in arb_times().prop_flat_map(|t| (Just(t.clone()), Just(t).prop_shuffle())),
        p in arb_policy(),
        zone in 0usize..5,
    ) {
        // The same backups (same ids) presented in another order.
        let mut ids: Vec<(i64, usize)> = times.iter().copied().zip(0..).collect();
        let mut again = Vec::new();
        for s in &shuffled {
            let pos = ids.iter().position(|(t, _)| t == s).unwrap_or_default();
            let (t, id) = ids.remove(pos);
            again.push(Candidate { id, time: DateTime::from_timestamp(t, 0).unwrap_or_default() });
        }
        let a = plan(series(&times), &p, ZONES[zone]);
        let b = plan(again, &p, ZONES[zone]);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a, plan(series(&times), &p, ZONES[zone]));
    }

    #[test]
    fn every_backup_is_kept_or_pruned_once_and_rules_keep_at_most_their_count(
        times in arb_times(), p in arb_policy(), zone in 0usize..5,
    ) {
        let plan = plan(series(&times), &p, ZONES[zone]);
        let mut ids: Vec<usize> = plan.keep.iter().map(|k| k.id)
            .chain(plan.prune.iter().map(|c| c.id)).collect();
        ids.sort_unstable();
        prop_assert_eq!(ids, (0..times.len()).collect::<Vec<_>>());
        prop_assert!(plan.keep.windows(2).all(|w| w[0].time >= w[1].time));
        prop_assert!(plan.prune.windows(2).all(|w| w[0].time >= w[1].time));
        prop_assert!(plan.keep.iter().all(|k| !k.reasons.is_empty()));
        if p.prunes() {
            for (reason, n) in p.rules() {
                let used = plan.keep.iter().filter(|k| k.reasons.contains(&reason)).count();
                prop_assert!(used <= n as usize, "{reason:?} kept {used} > {n}");
            }
            // The newest backup is always kept.
            if let (Some(first), Some(newest)) = (plan.keep.first(), times.iter().max()) {
                prop_assert_eq!(first.time.timestamp(), *newest);
            }
        } else {
            prop_assert!(plan.prune.is_empty());
        }
    }
}

//! Recovery of a file restore's swap when recovery itself is interrupted, when another engine
//! recovered the volume while the restore still ran (a lost lock), and with user files named
//! like the restore's reserved names. Real Docker volumes, the real scripts, hostile trees; the
//! invariant is the user's: the volume is exactly its old contents (or the archive's), with no
//! byte lost and no user file taken for a leftover.

use std::collections::BTreeMap;

use proptest::strategy::{Strategy as _, ValueTree as _};
use proptest::test_runner::TestRunner;
use uuid::Uuid;
use vardo_actors::restore::swap::{self, Recovered, Step, SwapNames};
use vardo_integration::{trees, volumes, TestBed};

type Listing = BTreeMap<Vec<u8>, String>;

/// A volume holding `old` (plus user files named like reserved names) with `new` staged for
/// restore `names`, and the swap run up to (not including) `until`.
struct Swapping {
    volume: String,
    names: SwapNames,
    before: Listing,
}

fn planted() -> trees::Tree {
    let mut tree = trees::Tree::new();
    let file = |data: &[u8]| trees::Entry {
        kind: trees::Kind::File {
            data: data.to_vec(),
            mode: 0o644,
        },
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
    };
    // Shaped like a journal (8-4-4-4-12) and saying `in`, but not a restore's name.
    tree.insert(
        b".vardo-swap-passport-scan-copy-2024-final_v2.doc".to_vec(),
        file(b"in\n"),
    );
    tree.insert(b".vardo-old-holiday".to_vec(), file(b"photos"));
    tree.insert(b".vardo-restore-notes.txt".to_vec(), file(b"notes"));
    tree
}

async fn swapping(bed: &TestBed, tag: &str, until: Step) -> Swapping {
    let mut runner = TestRunner::deterministic();
    let mut old = trees::tree(30)
        .new_tree(&mut runner)
        .expect("tree")
        .current();
    old.extend(planted());
    let new = trees::tree(30)
        .new_tree(&mut runner)
        .expect("tree")
        .current();
    let volume = bed.track_volume(&format!("rec{tag}-{}", bed.id));
    bed.docker.create_volume(&volume).await.expect("volume");
    trees::put(&bed.docker, &volume, "/volume", &old).await;
    let before = trees::read(&bed.docker, &volume).await;
    let names = SwapNames::of(Uuid::new_v4());
    let staging = format!("/volume/{}", names.staging);
    volumes::sh(&bed.docker, &volume, &format!("mkdir '{staging}'"))
        .await
        .expect("staging");
    trees::put(&bed.docker, &volume, &staging, &new).await;
    let helper = bed
        .docker
        .start_helper(&volume, false)
        .await
        .expect("helper");
    for step in Step::ALL.into_iter().take_while(|s| *s != until) {
        swap::run_step(&helper, &names, step).await.expect("step");
    }
    helper.remove().await.expect("remove helper");
    Swapping {
        volume,
        names,
        before,
    }
}

async fn recover(bed: &TestBed, s: &Swapping) -> Vec<(Uuid, Recovered)> {
    let helper = bed
        .docker
        .start_helper(&s.volume, false)
        .await
        .expect("helper");
    let done = swap::recover(&helper, &[s.names.id]).await;
    helper.remove().await.expect("remove helper");
    done.expect("recovery succeeds")
}

/// Moves one entry of `from` into `to` (both relative to /volume), as a recovery killed after its
/// first `mv` would have left them.
fn move_one(from: &str, to: &str) -> String {
    format!(
        "cd /volume && mkdir -p '{to}' && n=$(find '{to}' -mindepth 1 -maxdepth 1 | wc -l) && \
         find '{from}' -mindepth 1 -maxdepth 1 ! -name '.vardo-*' -exec mv -n -t '{to}' -- {{}} \\; -quit && \
         [ \"$(find '{to}' -mindepth 1 -maxdepth 1 | wc -l)\" -gt \"$n\" ]"
    )
}

#[tokio::test]
async fn a_rollback_interrupted_at_any_point_is_finished_without_losing_a_byte() {
    let bed = TestBed::new().await;
    // Killed while moving the staged entries back out (journal still `in`).
    let s = swapping(&bed, "a", Step::MarkClean).await;
    volumes::sh(&bed.docker, &s.volume, &move_one(".", &s.names.staging))
        .await
        .expect("partial undo");
    assert_eq!(
        recover(&bed, &s).await,
        vec![(s.names.id, Recovered::RolledBack)]
    );
    assert_eq!(
        trees::read(&bed.docker, &s.volume).await,
        s.before,
        "killed while moving the staged entries out"
    );

    // Killed while moving the old entries back (journal `back`): the root holds some old
    // entries again, which a recovery that still read `in` would have swept into the staging
    // folder and deleted.
    let s = swapping(&bed, "b", Step::MarkClean).await;
    let script = format!(
        "cd /volume && J='{j}' && mkdir -p '{st}' && find . -mindepth 1 -maxdepth 1 ! -name '.vardo-*' -exec mv -n -t '{st}' -- {{}} + \
         && printf 'back\\n' > \"$J.tmp\" && mv -f \"$J.tmp\" \"$J\" && {one}",
        j = s.names.journal,
        st = s.names.staging,
        one = move_one(&s.names.old, ".").trim_start_matches("cd /volume && ")
    );
    volumes::sh(&bed.docker, &s.volume, &script)
        .await
        .expect("partial undo");
    assert_eq!(
        recover(&bed, &s).await,
        vec![(s.names.id, Recovered::RolledBack)]
    );
    assert_eq!(
        recover(&bed, &s).await,
        vec![(s.names.id, Recovered::Nothing)]
    );
    let after = trees::read(&bed.docker, &s.volume).await;
    assert_eq!(after, s.before, "{}", trees::show(&after));
    bed.cleanup().await;
}

#[tokio::test]
async fn a_swap_whose_volume_another_engine_recovered_does_nothing_more() {
    let bed = TestBed::new().await;
    for (tag, recovered_before) in [
        ("c", Step::MarkIn),
        ("d", Step::MarkClean),
        ("e", Step::MoveIn),
    ] {
        let s = swapping(&bed, tag, recovered_before).await;
        // Another engine, holding the lock this restore lost, recovers the volume.
        assert_eq!(
            recover(&bed, &s).await,
            vec![(s.names.id, Recovered::RolledBack)]
        );
        // The restore carries on with its next steps: each refuses.
        let helper = bed
            .docker
            .start_helper(&s.volume, false)
            .await
            .expect("helper");
        for step in Step::ALL
            .into_iter()
            .skip_while(|st| *st != recovered_before)
        {
            let refused = swap::run_step(&helper, &s.names, step).await;
            let err = refused.expect_err("a step after another engine's recovery refuses");
            assert!(
                err.to_string().contains("another engine has recovered"),
                "{step:?}: {err}"
            );
        }
        helper.remove().await.expect("remove helper");
        let after = trees::read(&bed.docker, &s.volume).await;
        assert_eq!(after, s.before, "{tag}: {}", trees::show(&after));
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn user_files_named_like_leftovers_are_swapped_like_any_file_and_never_deleted() {
    let bed = TestBed::new().await;
    let s = swapping(&bed, "f", Step::Begin).await;
    // Recovery of another restore id finds nothing of it, whatever the user's names.
    let helper = bed
        .docker
        .start_helper(&s.volume, false)
        .await
        .expect("helper");
    let other = Uuid::new_v4();
    let done = swap::recover(&helper, &[other]).await.expect("recovery");
    assert_eq!(done, vec![(other, Recovered::Nothing)]);
    // The whole swap, then: the planted names are moved out and deleted as old entries, never
    // kept, never taken for this restore's own.
    swap::run(&helper, &s.names, &swap::Unfenced, None)
        .await
        .expect("swap");
    helper.remove().await.expect("remove helper");
    let after = trees::read(&bed.docker, &s.volume).await;
    for name in planted().keys() {
        assert!(
            !after.contains_key(name),
            "{:?} belongs to the old contents",
            String::from_utf8_lossy(name)
        );
    }
    assert!(
        !after.keys().any(|k| k.starts_with(b".vardo-")),
        "{}",
        trees::show(&after)
    );
    // And a rollback brings them back byte for byte.
    let s = swapping(&bed, "g", Step::MoveIn).await;
    assert_eq!(
        recover(&bed, &s).await,
        vec![(s.names.id, Recovered::RolledBack)]
    );
    assert_eq!(trees::read(&bed.docker, &s.volume).await, s.before);
    bed.cleanup().await;
}

/// A fence that holds for `n` steps, then reports the lock lost.
struct LosesLockAfter(std::sync::atomic::AtomicUsize);

impl swap::Fence for LosesLockAfter {
    async fn still_held(&self) -> Result<(), String> {
        let left = self.0.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            return Err("lock:volume:x was lost".to_owned());
        }
        self.0.store(left - 1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_swap_that_loses_its_lock_stops_before_its_next_step_and_leaves_recovery_to_the_holder() {
    let bed = TestBed::new().await;
    let s = swapping(&bed, "h", Step::Begin).await;
    let helper = bed
        .docker
        .start_helper(&s.volume, false)
        .await
        .expect("helper");
    let fence = LosesLockAfter(std::sync::atomic::AtomicUsize::new(3));
    let failure = swap::run(&helper, &s.names, &fence, None)
        .await
        .expect_err("the lost lock stops the swap");
    helper.remove().await.expect("remove helper");
    assert!(failure.lock_lost, "{failure}");
    assert_eq!(
        failure.step,
        Some(Step::MoveIn),
        "three steps ran, the fourth did not"
    );
    // The new holder's recovery brings the old contents back.
    assert_eq!(
        recover(&bed, &s).await,
        vec![(s.names.id, Recovered::RolledBack)]
    );
    assert_eq!(trees::read(&bed.docker, &s.volume).await, s.before);
    bed.cleanup().await;
}

/// Starts, detached in a helper labelled as engine instance `instance`'s, a swap step that never
/// ends: it keeps moving staged entries into the volume root, one every 10 ms, as a `MoveIn` of a
/// dead engine would go on doing in Docker.
async fn busy_helper(
    bed: &TestBed,
    s: &Swapping,
    instance: &str,
) -> vardo_actors::docker::HelperContainer {
    let helper = bed
        .docker
        .clone()
        .for_instance(instance)
        .start_helper(&s.volume, false)
        .await
        .expect("helper");
    let mover = format!(
        "cd /volume && while :; do find '{}' -mindepth 1 -maxdepth 1 -exec mv -n -t . -- {{}} \\; -quit; usleep 10000; done",
        s.names.staging
    );
    let count = format!(
        "find '/volume/{}' -mindepth 1 -maxdepth 1 | wc -l",
        s.names.staging
    );
    let staged = |out: String| out.trim().parse::<usize>().expect("a count");
    let at_start = staged(
        volumes::sh(&bed.docker, &s.volume, &count)
            .await
            .expect("count"),
    );
    assert!(at_start > 0, "the staged tree has entries to move");
    let out = std::process::Command::new("docker")
        .args(["exec", "-d", helper.id(), "sh", "-c", &mover])
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Some entries are moved in before anyone recovers.
    vardo_integration::eventually(
        std::time::Duration::from_secs(30),
        "the mover moves a staged entry in",
        || {
            let count = count.clone();
            async move {
                let now = staged(volumes::sh(&bed.docker, &s.volume, &count).await.ok()?);
                (now < at_start).then_some(())
            }
        },
    )
    .await;
    helper
}

async fn instance_row(bed: &TestBed, id: &str, heartbeat_ago_secs: f64) {
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "INSERT INTO engine_instance (id, heartbeat_at)
             VALUES ($1, now() - make_interval(secs => $2))",
            &[&id, &heartbeat_ago_secs],
        )
        .await
        .expect("instance row");
}

fn container_exists(id: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", "--format", "{{.Id}}", id])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn a_dead_engines_step_still_running_is_ended_before_recovery_and_a_live_ones_is_waited_for()
{
    let bed = TestBed::new().await;
    let lease = std::time::Duration::from_secs(30);

    // A dead engine (no heartbeat for an hour) whose `MoveIn` still runs in Docker: recovery
    // removes its helper first, then rolls back, and the volume is exactly its old contents.
    let s = swapping(&bed, "dead", Step::MoveIn).await;
    let dead = format!("dead-{}", bed.id);
    instance_row(&bed, &dead, 3600.0).await;
    let helper = busy_helper(&bed, &s, &dead).await;
    let done = vardo_actors::restore::files::recover_in_helper(
        &bed.docker,
        &bed.store,
        &s.volume,
        &[s.names.id],
        lease,
    )
    .await
    .expect("recovery after removing the dead engine's helper");
    assert_eq!(done, vec![(s.names.id, Recovered::RolledBack)]);
    assert!(
        !container_exists(helper.id()),
        "the dead engine's helper was removed"
    );

    assert_eq!(trees::read(&bed.docker, &s.volume).await, s.before);
    drop(helper);

    // A live engine's (heartbeat now) busy helper: recovery refuses and changes nothing of the
    // swap; once that engine is known as stopped, recovery ends its command and rolls back.
    let s = swapping(&bed, "live", Step::MoveIn).await;
    let live = format!("live-{}", bed.id);
    instance_row(&bed, &live, 0.0).await;
    let helper = busy_helper(&bed, &s, &live).await;
    let refused = vardo_actors::restore::files::recover_in_helper(
        &bed.docker,
        &bed.store,
        &s.volume,
        &[s.names.id],
        lease,
    )
    .await
    .expect_err("recovery waits for a live engine's command");
    assert!(
        refused
            .to_string()
            .contains("a command still runs in the helper container")
            && refused.to_string().contains(&live),
        "{refused}"
    );
    assert!(
        container_exists(helper.id()),
        "a live engine's helper is left alone"
    );
    let journal = volumes::sh(
        &bed.docker,
        &s.volume,
        &format!("cat /volume/{}", s.names.journal),
    )
    .await
    .expect("journal");
    assert_eq!(journal.trim(), "in", "recovery did not act");
    bed.db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE engine_instance SET stopped_at = now() WHERE id = $1",
            &[&live],
        )
        .await
        .expect("stop the instance");
    let done = vardo_actors::restore::files::recover_in_helper(
        &bed.docker,
        &bed.store,
        &s.volume,
        &[s.names.id],
        lease,
    )
    .await
    .expect("recovery once the engine stopped");
    assert_eq!(done, vec![(s.names.id, Recovered::RolledBack)]);
    assert!(!container_exists(helper.id()), "its helper was removed");
    assert_eq!(trees::read(&bed.docker, &s.volume).await, s.before);
    drop(helper);
    bed.cleanup().await;
}

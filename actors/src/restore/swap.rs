//! The journaled swap that replaces a volume's contents with a fully staged archive, and the
//! recovery that finishes or undoes a swap that was interrupted (engine or helper killed, Docker
//! restarted, a step failing, another engine recovering the volume after this one lost its lock).
//!
//! Everything happens inside the volume, in names reserved per restore id `R` (a hyphenated UUID):
//! `.vardo-restore-R` (the staged archive), `.vardo-old-R` (the volume's entries, moved aside),
//! `.vardo-swap-R` (the journal: one word, the phase), `.vardo-swap-R.old-root` and
//! `.vardo-swap-R.new-root` (empty files carrying the owner, mode and mtime of the volume root
//! before the swap and of the staged root).
//!
//! | journal | what is being done                         | recovery                          |
//! |---------|--------------------------------------------|-----------------------------------|
//! | none    | staging the archive                        | remove the staging folder         |
//! | `out`   | moving the volume's entries aside          | move them back (old contents)     |
//! | `in`    | moving the staged entries in               | move those out again, then `back` |
//! | `back`  | (recovery) moving the old entries back     | go on moving them back            |
//! | `clean` | removing the old entries; root attributes  | finish (the archive's contents)   |
//!
//! Every journal write is atomic (write, rename, sync) and every step of the swap first checks
//! that the journal still says what this restore last wrote (and the folders are as it left them):
//! if another engine recovered the volume meanwhile, the step refuses instead of acting on a
//! volume it no longer understands. Every phase of recovery can itself be interrupted and run
//! again: `in` is undone by moving the root's (staged) entries out *before* `back` is journaled,
//! and `back` never touches the root's entries.
//!
//! Entries are never listed through a shell: `find -exec mv -n -t DIR -- {} +` hands every name
//! to `mv` as one argument, whatever bytes it holds, and `-n` never replaces an entry that is in
//! the way (the step then fails its emptiness check, and recovery undoes it). Recovery acts only
//! on the restore ids it is given (those the database marks for the volume), never on names it
//! finds: a user's file named like a reserved name is never taken for one. The only words put
//! into the scripts are those ids' reserved names, which hold `[.a-z0-9-]` only.

use uuid::Uuid;

use crate::docker::{DockerError, HelperContainer};

/// A hyphenated UUID, as a `find -name` pattern.
fn uuid_glob() -> String {
    let hex = |n: usize| "[0-9a-f]".repeat(n);
    format!("{}-{}-{}-{}-{}", hex(8), hex(4), hex(4), hex(4), hex(12))
}

/// `find` tests that leave out every reserved name (of any restore).
fn not_reserved() -> String {
    let u = uuid_glob();
    format!(
        "! -name '.vardo-restore-{u}' ! -name '.vardo-old-{u}' \
         ! -name '.vardo-swap-{u}' ! -name '.vardo-swap-{u}.*'"
    )
}

/// Shell functions every script starts with. `$R`, `$S`, `$O`, `$J` name the restore at hand.
fn prelude() -> String {
    format!(
        r#"set -u
cd /volume || exit 1
fail() {{ echo "$*" >&2; exit 1; }}
names() {{ S=".vardo-restore-$1"; O=".vardo-old-$1"; J=".vardo-swap-$1"; }}
journal() {{ sync && printf '%s\n' "$1" > "$J.tmp" && mv -f "$J.tmp" "$J" && sync; }}
phase() {{ if [ -f "$J" ]; then cat "$J"; else echo none; fi; }}
expect() {{ [ "$(phase)" = "$1" ] || fail "the journal of $R says $(phase), not $1: another engine has recovered this volume; nothing more is done"; }}
copy_attrs() {{ chown "$(stat -c %u:%g "$1")" "$2" && chmod "$(stat -c %a "$1")" "$2" && touch -r "$1" "$2"; }}
root_entries() {{ find . -mindepth 1 -maxdepth 1 {reserved} "$@"; }}
root_is_empty() {{ [ "$(root_entries | head -c 1 | wc -c)" -eq 0 ]; }}
# Removes this restore's names, then gives the root the attributes kept in $1 (read first: the
# removals themselves change the root's mtime).
finish() {{
  own=$(stat -c %u:%g "$1") && mode=$(stat -c %a "$1") && mtime=$(stat -c %Y "$1") || return 1
  rm -rf "$O" "$S" && rm -f "$J.old-root" "$J.new-root" "$J.tmp" && rm -f "$J" || return 1
  chown "$own" . && chmod "$mode" . && touch -d "@$mtime" .
}}
"#,
        reserved = not_reserved()
    )
}

/// One step of a swap, run as one `docker exec` in the helper container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Remember both roots' attributes; journal `out`; create the folder for the old entries.
    Begin,
    /// Move every (unreserved) entry of the volume root into the old folder.
    MoveOut,
    /// Journal `in`.
    MarkIn,
    /// Move every staged entry into the volume root; remove the empty staging folder.
    MoveIn,
    /// Journal `clean`: from here on the archive's contents are the volume's.
    MarkClean,
    /// Remove the old entries and the journal; give the root the archive's attributes.
    Clean,
}

impl Step {
    pub const ALL: [Step; 6] = [
        Step::Begin,
        Step::MoveOut,
        Step::MarkIn,
        Step::MoveIn,
        Step::MarkClean,
        Step::Clean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Begin => "begin",
            Step::MoveOut => "move the volume's entries aside",
            Step::MarkIn => "journal the move in",
            Step::MoveIn => "move the staged entries in",
            Step::MarkClean => "journal the clean-up",
            Step::Clean => "remove the old entries",
        }
    }

    /// Whether a failure at this step leaves the archive's contents in place (the swap committed
    /// at `MarkClean`); before it, recovery brings the old contents back.
    pub fn committed(self) -> bool {
        matches!(self, Step::Clean)
    }

    fn body(self) -> &'static str {
        match self {
            Step::Begin => {
                r#"expect none
[ -d "$S" ] || fail "the staging folder $S is missing"
[ -e "$O" ] && fail "$O exists already"
: > "$J.old-root" && copy_attrs . "$J.old-root" || fail "could not remember the volume root's attributes"
: > "$J.new-root" && copy_attrs "$S" "$J.new-root" || fail "could not remember the staged root's attributes"
journal out || fail "could not write the journal"
mkdir "$O" || fail "could not create $O""#
            }
            Step::MoveOut => {
                r#"expect out
[ -d "$O" ] && [ -d "$S" ] || fail "the swap's folders are not as it left them"
root_entries -exec mv -n -t "$O" -- {} +
root_is_empty || fail "some entries of the volume could not be moved aside""#
            }
            Step::MarkIn => {
                r#"expect out
[ -d "$O" ] && [ -d "$S" ] && root_is_empty || fail "the volume is not as the swap left it"
journal in || fail "could not write the journal""#
            }
            Step::MoveIn => {
                r#"expect in
[ -d "$O" ] && [ -d "$S" ] || fail "the swap's folders are not as it left them"
find "$S" -mindepth 1 -maxdepth 1 -exec mv -n -t . -- {} +
rmdir "$S" || fail "some staged entries could not be moved in""#
            }
            Step::MarkClean => {
                r#"expect in
[ -d "$O" ] && [ ! -e "$S" ] || fail "the swap's folders are not as it left them"
journal clean || fail "could not write the journal""#
            }
            Step::Clean => {
                r#"expect clean
finish "$J.new-root" || fail "could not finish removing the old entries""#
            }
        }
    }
}

/// The reserved names of one restore.
#[derive(Debug, Clone)]
pub struct SwapNames {
    pub id: Uuid,
    pub staging: String,
    pub old: String,
    pub journal: String,
}

impl SwapNames {
    pub fn of(restore_id: Uuid) -> Self {
        let id = restore_id.hyphenated();
        Self {
            id: restore_id,
            staging: format!(".vardo-restore-{id}"),
            old: format!(".vardo-old-{id}"),
            journal: format!(".vardo-swap-{id}"),
        }
    }
}

/// The script of one step of the swap of `names`.
pub fn step_script(names: &SwapNames, step: Step) -> String {
    format!(
        "{}R='{}'; names \"$R\"\n{}\n",
        prelude(),
        names.id.hyphenated(),
        step.body()
    )
}

/// What recovery did for one restore id, as it reports it on stdout (`<word> <id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Nothing of that restore was in the volume.
    Nothing,
    /// A staging folder no swap began with was removed.
    StagingRemoved,
    /// The swap was undone: the volume holds its old contents.
    RolledBack,
    /// The swap was finished: the volume holds the archive's contents.
    Completed,
}

impl Recovered {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "nothing" => Self::Nothing,
            "staging-removed" => Self::StagingRemoved,
            "rolled-back" => Self::RolledBack,
            "completed" => Self::Completed,
            _ => return None,
        })
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Nothing => "nothing of it was left in the volume",
            Self::StagingRemoved => "removed its staging folder; the swap had not begun",
            Self::RolledBack => "rolled back its swap: the volume holds its old contents",
            Self::Completed => "completed its swap: the volume holds its archive",
        }
    }
}

/// Finishes or undoes the swaps of the restores named as arguments (see the module's table), and
/// prints `<outcome> <id>` per restore. Exits non-zero, leaving that restore's names as they
/// are, when they are not as a swap leaves them (an unknown journal word, an old folder without a
/// journal, an entry in the way): nothing is ever deleted that recovery does not understand.
pub fn recovery_script() -> String {
    format!(
        r#"{prelude}status=0
back() {{
  if [ -d "$O" ]; then
    find "$O" -mindepth 1 -maxdepth 1 -exec mv -n -t . -- {{}} +
    rmdir "$O" || {{ echo "$R: some old entries could not be moved back; they are in $O" >&2; return 1; }}
  fi
  if [ -f "$J.old-root" ]; then finish "$J.old-root"; else rm -rf "$S" && rm -f "$J.new-root" "$J.tmp" "$J"; fi
}}
for R in "$@"; do
  names "$R"
  case "$(phase)" in
    none)
      if [ -d "$O" ]; then status=1; echo "$R: $O has no journal; it is kept as it is for a person to look at" >&2; continue; fi
      if [ -e "$S" ]; then
        if rm -rf "$S" && rm -f "$J.old-root" "$J.new-root" "$J.tmp"; then echo "staging-removed $R"; else status=1; echo "$R: could not remove its staging folder" >&2; fi
      else rm -f "$J.old-root" "$J.new-root" "$J.tmp"; echo "nothing $R"; fi ;;
    clean)
      if finish "$J.new-root"; then echo "completed $R"
      else status=1; echo "$R: could not finish removing the old entries" >&2; fi ;;
    in)
      if [ ! -d "$O" ]; then status=1; echo "$R: the journal says in but $O is missing; left as it is" >&2; continue; fi
      mkdir -p "$S" || {{ status=1; continue; }}
      root_entries -exec mv -n -t "$S" -- {{}} +
      if ! root_is_empty; then status=1; echo "$R: the volume root holds entries that are not the staged ones; left as it is" >&2; continue; fi
      journal back || {{ status=1; continue; }}
      if back; then echo "rolled-back $R"; else status=1; fi ;;
    out|back)
      if back; then echo "rolled-back $R"; else status=1; fi ;;
    *) status=1; echo "$R: unknown journal phase; left as it is" >&2 ;;
  esac
done
exit $status
"#,
        prelude = prelude()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{what} failed (exit {code}): {stderr}")]
    Step {
        what: &'static str,
        code: i64,
        stderr: String,
    },
    #[error("recovery of the volume failed (exit {code}): {stderr}")]
    Recovery { code: i64, stderr: String },
}

/// Why a swap stopped: at which step (`None`: before the swap began, while staging), and the cause.
#[derive(Debug)]
pub struct Failure {
    pub step: Option<Step>,
    pub error: String,
    /// The volume lock was lost: another engine may be recovering the volume, so this restore
    /// must not recover it itself.
    pub lock_lost: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => write!(f, "the swap stopped at \"{}\": {}", step.name(), self.error),
            None => f.write_str(&self.error),
        }
    }
}

/// Something that says, before each step, whether this restore may still act on the volume.
pub trait Fence {
    fn still_held(&self) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// No fence (tests that drive the steps themselves).
pub struct Unfenced;

impl Fence for Unfenced {
    async fn still_held(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Fence for crate::lock::VolumeLock {
    async fn still_held(&self) -> Result<(), String> {
        self.confirm().await.map_err(|e| e.to_string())
    }
}

/// Runs the swap's steps in order, each after the fence confirmed the volume is still this
/// restore's. `fail_before` stops it with an error just before that step, as if the engine had
/// died there: the fault suite's way to reach every step.
pub async fn run(
    helper: &HelperContainer,
    names: &SwapNames,
    fence: &impl Fence,
    fail_before: Option<Step>,
) -> Result<(), Failure> {
    for step in Step::ALL {
        if fail_before == Some(step) {
            return Err(Failure {
                step: Some(step),
                error: "failure injected".to_owned(),
                lock_lost: false,
            });
        }
        if let Err(e) = fence.still_held().await {
            return Err(Failure {
                step: Some(step),
                error: format!("the volume lock was lost ({e}); nothing more was done"),
                lock_lost: true,
            });
        }
        run_step(helper, names, step).await.map_err(|e| Failure {
            step: Some(step),
            error: e.to_string(),
            lock_lost: false,
        })?;
    }
    Ok(())
}

/// Runs one step in the helper.
pub async fn run_step(
    helper: &HelperContainer,
    names: &SwapNames,
    step: Step,
) -> Result<(), SwapError> {
    let out = helper.sh(&step_script(names, step)).await?;
    if out.exit_code != 0 {
        return Err(SwapError::Step {
            what: step.name(),
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    Ok(())
}

/// Runs the recovery of `ids` in the helper; returns what it did for each.
pub async fn recover(
    helper: &HelperContainer,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Recovered)>, SwapError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let args: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
    let out = helper.sh_with_args(&recovery_script(), &args).await?;
    if out.exit_code != 0 {
        return Err(SwapError::Recovery {
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|line| {
            let (word, id) = line.split_once(' ')?;
            Some((Uuid::parse_str(id).ok()?, Recovered::parse(word)?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_hold_only_safe_characters() {
        let names = SwapNames::of(Uuid::new_v4());
        for name in [&names.staging, &names.old, &names.journal] {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
        }
    }

    #[test]
    fn only_the_clean_up_comes_after_the_commit_point() {
        let committed: Vec<Step> = Step::ALL.into_iter().filter(|s| s.committed()).collect();
        assert_eq!(committed, vec![Step::Clean]);
        assert_eq!(Step::ALL.last(), Some(&Step::Clean));
    }

    #[test]
    fn scripts_never_loop_over_names_found_in_the_volume() {
        for step in Step::ALL {
            assert!(!step.body().contains("for "), "{}", step.body());
        }
        let loops: Vec<_> = recovery_script()
            .lines()
            .filter(|l| l.trim_start().starts_with("for "))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            loops,
            vec![r#"for R in "$@"; do"#.to_owned()],
            "only over the given ids"
        );
    }

    #[test]
    fn every_step_checks_the_journal_first() {
        for step in Step::ALL {
            assert!(step.body().starts_with("expect "), "{step:?}");
        }
    }

    #[test]
    fn reserved_patterns_match_uuids_only() {
        assert_eq!(uuid_glob().matches("[0-9a-f]").count(), 32);
    }
}

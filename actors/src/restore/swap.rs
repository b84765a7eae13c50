//! The journaled swap that replaces a volume's contents with a fully staged archive, and the
//! recovery that finishes or undoes a swap that was interrupted (engine or helper killed, Docker
//! restarted, a step failing).
//!
//! Everything happens inside the volume, in names reserved per restore id `R`:
//! `.vardo-restore-R` (the staged archive), `.vardo-old-R` (the volume's entries, moved aside),
//! `.vardo-swap-R` (the journal: one word, the phase), `.vardo-swap-R.old-root` and
//! `.vardo-swap-R.new-root` (empty files carrying the owner, mode and mtime of the volume root
//! before the swap and of the staged root).
//!
//! The swap's phases, each written to the journal (atomically: write, rename, sync) before its
//! moves begin:
//!
//! | journal | what is being done                       | recovery                          |
//! |---------|------------------------------------------|-----------------------------------|
//! | none    | staging the archive                      | remove the staging folder         |
//! | `out`   | moving the volume's entries aside        | move them back (old contents)     |
//! | `in`    | moving the staged entries in, root attrs | move them out again, old back in  |
//! | `clean` | removing the old entries                 | finish removing (archive's)       |
//!
//! Entries are never listed through a shell: `find -exec mv -n -t DIR -- {} +` hands every name
//! to `mv` as one argument, whatever bytes it holds (newlines, globs, leading dashes, non-UTF-8),
//! and `-n` never replaces an entry that is in the way (the step then fails on its emptiness
//! check, and recovery undoes it). The only words interpolated into the scripts are the restore
//! id's reserved names, which hold `[.a-z0-9-]` only.
//!
//! Nothing reserved is ever moved by a swap: entries named like another restore's reserved names
//! stay where they are (they hold the only copy of something until recovery has dealt with them).

use uuid::Uuid;

use crate::docker::{DockerError, HelperContainer};

/// Glob for the UUID part of reserved names (`find -name` and `sh` patterns alike).
const UUID_GLOB: &str = "????????-????-????-????-????????????";

/// `find` tests that leave out every reserved name, in `find`'s own syntax.
fn not_reserved() -> String {
    format!(
        "! -name '.vardo-restore-{UUID_GLOB}' ! -name '.vardo-old-{UUID_GLOB}' \
         ! -name '.vardo-swap-{UUID_GLOB}' ! -name '.vardo-swap-{UUID_GLOB}.*'"
    )
}

/// Shell functions every script starts with. `$J` is the journal of the restore at hand.
fn prelude() -> String {
    format!(
        r#"set -u
cd /volume || exit 1
fail() {{ echo "$*" >&2; exit 1; }}
journal() {{ sync && printf '%s\n' "$1" > "$J.tmp" && mv -f "$J.tmp" "$J" && sync; }}
copy_attrs() {{ chown "$(stat -c %u:%g "$1")" "$2" && chmod "$(stat -c %a "$1")" "$2" && touch -r "$1" "$2"; }}
root_entries() {{ find . -mindepth 1 -maxdepth 1 {reserved} "$@"; }}
root_is_empty() {{ [ "$(root_entries | head -c 1 | wc -c)" -eq 0 ]; }}
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
    /// Give the volume root the staged root's owner, mode and mtime.
    RootAttributes,
    /// Journal `clean`: from here on the archive's contents are the volume's.
    MarkClean,
    /// Remove the old entries, then the journal.
    Clean,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Begin,
        Step::MoveOut,
        Step::MarkIn,
        Step::MoveIn,
        Step::RootAttributes,
        Step::MarkClean,
        Step::Clean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Begin => "begin",
            Step::MoveOut => "move the volume's entries aside",
            Step::MarkIn => "journal the move in",
            Step::MoveIn => "move the staged entries in",
            Step::RootAttributes => "set the volume root's owner, mode and mtime",
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
                r#"[ -d "$S" ] || fail "the staging folder $S is missing"
[ -e "$J" ] && fail "the journal $J exists already"
: > "$J.old-root" && copy_attrs . "$J.old-root" || fail "could not remember the volume root's attributes"
: > "$J.new-root" && copy_attrs "$S" "$J.new-root" || fail "could not remember the staged root's attributes"
journal out || fail "could not write the journal"
mkdir "$O" || fail "could not create $O""#
            }
            Step::MoveOut => {
                r#"root_entries -exec mv -n -t "$O" -- {} +
root_is_empty || fail "some entries of the volume could not be moved aside""#
            }
            Step::MarkIn => r#"journal in || fail "could not write the journal""#,
            Step::MoveIn => {
                r#"find "$S" -mindepth 1 -maxdepth 1 -exec mv -n -t . -- {} +
rmdir "$S" || fail "some staged entries could not be moved in""#
            }
            Step::RootAttributes => {
                r#"copy_attrs "$J.new-root" . || fail "could not give the volume root the archive's attributes""#
            }
            Step::MarkClean => r#"journal clean || fail "could not write the journal""#,
            Step::Clean => {
                r#"rm -rf "$O" || fail "could not remove the old entries in $O"
rm -f "$J.old-root" "$J.new-root" && rm -f "$J" || fail "could not remove the journal""#
            }
        }
    }
}

/// The reserved names of one restore.
#[derive(Debug, Clone)]
pub struct SwapNames {
    pub staging: String,
    pub old: String,
    pub journal: String,
}

impl SwapNames {
    pub fn of(restore_id: Uuid) -> Self {
        let id = restore_id.hyphenated();
        Self {
            staging: format!(".vardo-restore-{id}"),
            old: format!(".vardo-old-{id}"),
            journal: format!(".vardo-swap-{id}"),
        }
    }

    fn vars(&self) -> String {
        format!(
            "S='{}'; O='{}'; J='{}'\n",
            self.staging, self.old, self.journal
        )
    }
}

/// The script of one step of the swap of `names`.
pub fn step_script(names: &SwapNames, step: Step) -> String {
    format!("{}{}{}\n", prelude(), names.vars(), step.body())
}

/// Finishes or undoes every interrupted swap in the volume (see the module's table), removes
/// staging folders no swap began with, and reports one line per thing done on stdout. Exits
/// non-zero, leaving things as they are, when something is not as a swap leaves it (an unknown
/// journal word, an entry in the way): nothing is ever deleted that recovery does not understand.
pub fn recovery_script() -> String {
    format!(
        r#"{prelude}status=0
undo() {{
  if [ "$phase" = in ]; then
    mkdir -p "$S" || return 1
    root_entries -exec mv -n -t "$S" -- {{}} +
    root_is_empty || {{ echo "$R: the volume root holds entries that are not the staged ones; left as it is" >&2; return 1; }}
  fi
  if [ -d "$O" ]; then
    find "$O" -mindepth 1 -maxdepth 1 -exec mv -n -t . -- {{}} +
    rmdir "$O" || {{ echo "$R: some old entries could not be moved back; they are in $O" >&2; return 1; }}
  fi
  if [ -f "$J.old-root" ]; then copy_attrs "$J.old-root" . || return 1; fi
  rm -rf "$S" && rm -f "$J.old-root" "$J.new-root" "$J.tmp" && rm -f "$J"
}}
for J in .vardo-swap-{uuid}; do
  [ -f "$J" ] || continue
  R=${{J#.vardo-swap-}}; S=".vardo-restore-$R"; O=".vardo-old-$R"
  phase=$(cat "$J")
  case "$phase" in
    clean)
      if rm -rf "$O" "$S" && rm -f "$J.old-root" "$J.new-root" "$J.tmp" && rm -f "$J"; then
        echo "completed the interrupted restore $R: the volume holds its archive"
      else status=1; echo "$R: could not finish removing the old entries" >&2; fi ;;
    in|out)
      if undo; then echo "rolled back the interrupted restore $R (phase $phase): the volume holds its old contents"
      else status=1; fi ;;
    *) status=1; echo "$R: unknown journal phase; left as it is" >&2 ;;
  esac
done
for S in .vardo-restore-{uuid}; do
  [ -d "$S" ] || continue
  R=${{S#.vardo-restore-}}
  [ -e ".vardo-swap-$R" ] && continue
  if rm -rf "$S"; then echo "removed the staging folder of the unfinished restore $R"
  else status=1; echo "$R: could not remove its staging folder" >&2; fi
done
for f in .vardo-swap-{uuid}.*; do
  [ -e "$f" ] || continue
  [ -e "${{f%.*}}" ] || rm -f "$f" || status=1
done
for O in .vardo-old-{uuid}; do
  [ -d "$O" ] || continue
  R=${{O#.vardo-old-}}
  [ -e ".vardo-swap-$R" ] || echo "$R: $O has no journal; it is kept as it is for a person to look at" >&2
done
exit $status
"#,
        prelude = prelude(),
        uuid = UUID_GLOB
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
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => write!(f, "the swap stopped at \"{}\": {}", step.name(), self.error),
            None => f.write_str(&self.error),
        }
    }
}

/// Runs the swap's steps in order. `fail_before` stops it with an error just before that step, as
/// if the engine had died there: the fault suite's way to reach every step.
pub async fn run(
    helper: &HelperContainer,
    names: &SwapNames,
    fail_before: Option<Step>,
) -> Result<(), Failure> {
    for step in Step::ALL {
        if fail_before == Some(step) {
            return Err(Failure {
                step: Some(step),
                error: "failure injected".to_owned(),
            });
        }
        run_step(helper, names, step).await.map_err(|e| Failure {
            step: Some(step),
            error: e.to_string(),
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

/// Runs the recovery in the helper; returns the lines it reported (empty: nothing to recover).
pub async fn recover(helper: &HelperContainer) -> Result<Vec<String>, SwapError> {
    let out = helper.sh(&recovery_script()).await?;
    if out.exit_code != 0 {
        return Err(SwapError::Recovery {
            code: out.exit_code,
            stderr: out.stderr.trim().to_owned(),
        });
    }
    Ok(out.stdout.lines().map(str::to_owned).collect())
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
            assert!(!name.contains('\''));
        }
    }

    #[test]
    fn only_the_clean_up_comes_after_the_commit_point() {
        let committed: Vec<Step> = Step::ALL.into_iter().filter(|s| s.committed()).collect();
        assert_eq!(committed, vec![Step::Clean]);
        assert_eq!(Step::ALL.last(), Some(&Step::Clean));
    }

    #[test]
    fn scripts_never_expand_entry_names_through_the_shell() {
        // Every listing of entries goes through `find -exec … {} +`; no `$(…)` or `for` over
        // entry names.
        for step in Step::ALL {
            let body = step.body();
            assert!(!body.contains("for "), "{body}");
        }
        let recovery = recovery_script();
        for line in recovery
            .lines()
            .filter(|l| l.trim_start().starts_with("for "))
        {
            assert!(
                line.contains(UUID_GLOB),
                "loops only over reserved names: {line}"
            );
        }
    }
}

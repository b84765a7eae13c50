//! The CLI as a person uses it: on a terminal (a pseudo-terminal made by `script`), `backup`,
//! `restore` and `verify` draw a progress bar on stderr — what is done, the bytes, the rate, an
//! ETA where the size is known — and clear it before their summary; with stdout not a terminal,
//! or with `--json`, not one control character is printed. The exit codes are the same either way.

use std::process::{Command, Output};

use vardo_actors::model::{Compression, TargetKind};
use vardo_integration::{describe, TestBed};

/// Runs the binary under `script`, so that its stdout and stderr are a terminal; everything the
/// terminal received, and the exit status (`script -e` passes the command's on).
fn on_a_terminal(bed: &TestBed, args: &[&str]) -> Output {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = quote(&vardo_integration::process::binary().display().to_string());
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .envs(bed.env())
        .output()
        .expect("script runs")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_terminal_gets_progress_bars_and_a_pipe_gets_plain_lines() {
    let bed = TestBed::new().await;
    let org = bed.organization().await;
    // Large enough that reading it takes several of the bar's 100 ms ticks.
    let (app, _volume) = bed
        .app_with_files(&org, "bar", "head -c 48000000 /dev/urandom > /volume/big")
        .await;
    let target = bed
        .target(Some(org.id), TargetKind::S3, bed.bucket.target_json(None))
        .await;
    let job = bed
        .job(&org, Some(target), &[&app], Compression::Gzip)
        .await;
    let job = job.to_string();

    let shown = on_a_terminal(&bed, &["backup", "--job", &job]);
    let screen = text(&shown);
    assert!(shown.status.success(), "{}", describe(&shown));
    let label = format!("backing up {}/files (volume read)", app.name);
    assert!(screen.contains(&label), "{screen}");
    assert!(
        screen.contains("MiB/s") || screen.contains("KiB/s"),
        "{screen}"
    );
    // The bar is cleared, then the one summary line of the volume.
    let summary = screen
        .rsplit("\u{1b}[2K")
        .next()
        .expect("the last clear")
        .trim()
        .to_owned();
    let backup = summary
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        summary.contains(&format!("{}/files success", app.name)),
        "the last thing on the screen is the summary: {summary:?}"
    );

    // Where the size is known (a stored object's), the bar has a total and an ETA.
    let verified = on_a_terminal(&bed, &["verify", "--backup", &backup]);
    assert!(verified.status.success(), "{}", describe(&verified));
    let screen = text(&verified);
    assert!(
        screen.contains(&format!("verifying {}/files", app.name)),
        "{screen}"
    );
    assert!(screen.contains("ETA"), "{screen}");
    let restored = on_a_terminal(&bed, &["restore", "--backup", &backup]);
    assert!(restored.status.success(), "{}", describe(&restored));
    let screen = text(&restored);
    assert!(screen.contains(&label), "the safety backup's bar: {screen}");
    assert!(
        screen.contains(&format!("restoring {}/files", app.name)),
        "{screen}"
    );

    // Not a terminal: the same commands print plain lines; and --json on a terminal, only JSON.
    for args in [
        &["backup", "--job", &job][..],
        &["verify", "--backup", &backup],
    ] {
        let plain = bed.cli(args);
        assert!(plain.status.success(), "{}", describe(&plain));
        let all = format!("{}{}", text(&plain), String::from_utf8_lossy(&plain.stderr));
        assert!(!all.contains('\u{1b}') && !all.contains('\r'), "{all:?}");
        assert!(!all.contains("B/s"), "{all}");
    }
    let json = on_a_terminal(&bed, &["verify", "--backup", &backup, "--json"]);
    assert!(json.status.success(), "{}", describe(&json));
    let body: serde_json::Value = serde_json::from_str(text(&json).trim()).expect("only JSON");
    assert_eq!(body["status"], "success", "{body}");

    // A failure's exit code is the same on a terminal: 1 for an unknown backup.
    let unknown = on_a_terminal(
        &bed,
        &["verify", "--backup", &uuid::Uuid::new_v4().to_string()],
    );
    assert_eq!(unknown.status.code(), Some(1), "{}", describe(&unknown));
    bed.cleanup().await;
}

#[test]
fn help_documents_the_exit_codes() {
    let out = vardo_integration::process::run(&["--help"], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let help = text(&out);
    for code in ["Exit codes:", "  0  ", "  1  ", "  2  ", "progress bar"] {
        assert!(help.contains(code), "{code:?} in {help}");
    }
}

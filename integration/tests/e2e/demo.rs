//! `scripts/demo` as a person runs it: green end to end, the engine left serving, and
//! `scripts/demo --stop` leaving no container, volume, database or backup behind.

use std::process::Command;

use vardo_integration::env::{repo_root, setting};

fn docker_ids(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What of the demo Docker and Postgres still hold.
async fn leftovers() -> Vec<String> {
    let mut left = docker_ids(&["ps", "-aq", "--filter", "label=vardo-demo=1"]);
    left.extend(docker_ids(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=vardo-demo=1",
    ]));
    for volume in ["vardodemo-blue_uploads", "vardodemo-blue_db"] {
        left.extend(docker_ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("volume={volume}"),
        ]));
    }
    let (client, conn) =
        tokio_postgres::connect(&setting("VARDO_TEST_PG_URL"), tokio_postgres::NoTls)
            .await
            .expect("postgres");
    tokio::spawn(conn);
    let dbs = client
        .query(
            "SELECT datname FROM pg_database WHERE datname = 'vardo_demo'",
            &[],
        )
        .await
        .expect("query");
    left.extend(
        dbs.iter()
            .map(|r| format!("database {}", r.get::<_, String>(0))),
    );
    if repo_root().join(".vardo-dev/demo").exists() {
        left.push(".vardo-dev/demo".to_owned());
    }
    left
}

#[tokio::test]
async fn the_demo_runs_green_and_its_stop_leaves_nothing_behind() {
    let demo = repo_root().join("scripts/demo");
    let out = Command::new(&demo)
        .current_dir(repo_root())
        .env("VARDO_DEMO_LISTEN", "127.0.0.1:0")
        .env("VARDO_DEMO_BINARY", vardo_integration::process::binary())
        .output()
        .expect("scripts/demo runs");
    let text = vardo_integration::describe(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stop = || {
        Command::new(&demo)
            .current_dir(repo_root())
            .arg("--stop")
            .output()
            .expect("scripts/demo --stop runs")
    };
    if !out.status.success() {
        stop();
        panic!("the demo failed: {text}");
    }
    assert!(
        stdout.contains("everything is back, exactly as it was backed up"),
        "{text}"
    );
    assert!(stdout.contains("uploads: 300 files"), "{text}");
    assert!(stdout.contains("200 customers, 5000 orders"), "{text}");
    // The engine it left running answers at the URL it printed, with the token it printed.
    let page = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backups page:  "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the page's URL is printed")
        .to_owned();
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:         "))
        .expect("the token is printed")
        .trim()
        .to_owned();
    vardo_integration::http::stored_secret(&token);
    let ready = reqwest::get(format!("{page}readyz")).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let history = stdout
        .lines()
        .find_map(|l| l.strip_prefix("API:"))
        .and_then(|l| l.split_whitespace().last())
        .expect("the API's URL is printed")
        .to_owned();
    let rows: serde_json::Value = reqwest::Client::new()
        .get(&history)
        .bearer_auth(&token)
        .send()
        .await
        .expect("the API answers")
        .json()
        .await
        .expect("json");
    // The two backups and the two safety backups the restores took.
    let items = rows["items"].as_array().expect("items");
    assert_eq!(items.len(), 4, "{rows}");
    assert!(items.iter().all(|i| i["status"] == "success"), "{rows}");
    assert!(
        !leftovers().await.is_empty(),
        "the demo's data exists while it runs"
    );

    let stopped = stop();
    assert!(
        stopped.status.success(),
        "{}",
        vardo_integration::describe(&stopped)
    );
    assert_eq!(
        leftovers().await,
        Vec::<String>::new(),
        "nothing of the demo is left"
    );
    assert!(
        reqwest::get(format!("{page}readyz")).await.is_err(),
        "the demo's engine is stopped"
    );
}

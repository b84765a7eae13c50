//! The Backups page in a real browser: Debian's chromium, headless, driven through chromedriver
//! (started by `scripts/services`). Sign in, see a failing and a healthy job under the right
//! banner, filter history to failures, open a log, run the failing job again once its volume
//! exists and watch it turn healthy, restore a volume with the typed confirmation and find its
//! files back, sign out. A missing browser or driver fails the test.

use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use vardo_actors::model::Status;
use vardo_integration::env::setting;
use vardo_integration::http::ApiBed;
use vardo_integration::volumes;

async fn browser() -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": setting("VARDO_TEST_CHROMIUM"),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&setting("VARDO_TEST_WEBDRIVER"))
        .await
        .expect("chromedriver starts a chromium session (scripts/services starts chromedriver)")
}

async fn text(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Reloads `url` until `done` holds for the page's source, at most `limit`.
async fn until(c: &Client, url: &str, limit: Duration, what: &str, done: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        c.goto(url).await.expect("goto");
        let source = c.source().await.unwrap_or_default();
        if done(&source) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; the page:\n{source}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_person_signs_in_sees_health_reads_a_log_runs_a_job_restores_and_signs_out() {
    let t = ApiBed::start("all").await;
    let org = t.org("browse").await;
    let good = t.backed_up(&org, "good", "local").await;
    // A job whose volume does not exist yet: it fails.
    let app_id = format!("late-{}", t.bed.id);
    let app_name = format!("late{}", t.bed.id);
    org.api
        .put(&org.path(&format!("/apps/{app_id}")), &json!({"name": app_name, "volumes": [{"name": "files", "persistent": true, "kind": "generic"}]}))
        .await
        .expect(201);
    let bad_job = org
        .api
        .post(&org.path("/backups/jobs"), &json!({"name": "late job", "schedule": "0 4 * * *", "targetId": good.target, "appIds": [app_id], "keepAll": true}))
        .await
        .expect(201)
        .id();
    let (_, rows) = t.bed.run_job(bad_job).await;
    assert!(rows.iter().all(|r| r.status == Status::Failed));

    let base = t.server.base_url.clone();
    let c = browser().await;
    c.goto(&format!("{base}/")).await.expect("goto");
    assert!(
        c.current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/signin"),
        "sent to sign in"
    );
    c.find(Locator::Css("#token"))
        .await
        .expect("token field")
        .send_keys(&org.token)
        .await
        .expect("type");
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    let banner = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(".banner"))
        .await
        .expect("banner");
    assert_eq!(
        banner.attr("class").await.expect("class").as_deref(),
        Some("banner failing")
    );
    assert!(banner.text().await.expect("text").contains("late job"));
    let rows = c
        .find_all(Locator::Css("tr[data-job]"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2);
    assert!(text(&c, &format!("tr[data-job=\"{}\"]", good.job))
        .await
        .contains("healthy"));

    // History filtered to failures through the form; a log opens.
    c.goto(&format!("{base}/history")).await.expect("goto");
    c.find(Locator::Css("select[name=status]"))
        .await
        .expect("status")
        .select_by_value("failed")
        .await
        .expect("select");
    c.find(Locator::Css("form.filters button[type=submit]"))
        .await
        .expect("filter")
        .click()
        .await
        .expect("click");
    wait_url(&c, "status=failed", "filtered url").await;
    let statuses = c
        .find_all(Locator::Css("tr[data-status]"))
        .await
        .expect("rows");
    assert!(!statuses.is_empty());
    for row in &statuses {
        assert_eq!(
            row.attr("data-status").await.expect("attr").as_deref(),
            Some("failed")
        );
    }
    c.find(Locator::LinkText("Log"))
        .await
        .expect("log link")
        .click()
        .await
        .expect("click");
    let log = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#log"))
        .await
        .expect("log");
    assert!(!log.text().await.expect("text").trim().is_empty());

    // The volume appears; "Run now" from the overview; the job turns healthy.
    let late_volume = t.bed.track_volume(&format!("{app_name}-blue_files"));
    t.bed
        .docker
        .create_volume(&late_volume)
        .await
        .expect("volume");
    volumes::sh(&t.bed.docker, &late_volume, "echo hello > /volume/greeting")
        .await
        .expect("fill");
    c.goto(&format!("{base}/")).await.expect("goto");
    c.find(Locator::Css("button[aria-label=\"Run late job now\"]"))
        .await
        .expect("run now")
        .click()
        .await
        .expect("click");
    wait_url(&c, "/history?run=", "sent to the run's rows").await;
    until(
        &c,
        &format!("{base}/"),
        Duration::from_secs(120),
        "the job turns healthy",
        |page| page.contains("class=\"banner healthy\""),
    )
    .await;
    assert!(text(&c, &format!("tr[data-job=\"{bad_job}\"]"))
        .await
        .contains("healthy"));

    // Restore with the typed confirmation: the files come back.
    let volume = format!("{}-blue_files", good.app_name);
    let sum = || async {
        volumes::sh(
            &t.bed.docker,
            &volume,
            "sha256sum /volume/r 2>/dev/null || true",
        )
        .await
        .expect("sum")
    };
    let before = sum().await;
    assert!(before.contains("/volume/r"));
    volumes::sh(
        &t.bed.docker,
        &volume,
        "rm -f /volume/r && echo oops > /volume/oops",
    )
    .await
    .expect("damage");
    c.goto(&format!("{base}/history?job={}", good.job))
        .await
        .expect("goto");
    c.find(Locator::Css(&format!(
        "tr[data-backup=\"{}\"] a[href$=\"/restore\"]",
        good.rows[0].id
    )))
    .await
    .expect("restore link")
    .click()
    .await
    .expect("click");
    c.find(Locator::Css("#confirm"))
        .await
        .expect("confirm field")
        .send_keys("files")
        .await
        .expect("type");
    c.find(Locator::Css("form button.danger"))
        .await
        .expect("submit")
        .click()
        .await
        .expect("click");
    wait_url(&c, "/restores/", "the restore's page").await;
    let restore_url = c.current_url().await.expect("url").to_string();
    until(
        &c,
        &restore_url,
        Duration::from_secs(120),
        "the restore ends",
        |page| page.contains("class=\"badge success\"") || page.contains("class=\"badge failed\""),
    )
    .await;
    assert!(
        text(&c, "#status").await.starts_with("success"),
        "{}",
        text(&c, "#log").await
    );
    assert_eq!(sum().await, before, "the file is back, byte for byte");
    let oops = volumes::sh(&t.bed.docker, &volume, "ls /volume")
        .await
        .expect("ls");
    assert!(
        !oops.contains("oops"),
        "the volume is exactly the archive: {oops}"
    );

    // Sign out.
    c.find(Locator::Css("header form button"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("click");
    wait_url(&c, "/signin", "signed out").await;
    c.goto(&format!("{base}/history")).await.expect("goto");
    assert!(c
        .current_url()
        .await
        .expect("url")
        .path()
        .ends_with("/signin"));
    c.close().await.expect("close the browser");
    t.cleanup().await;
}

/// Waits until the browser's URL contains `part`.
async fn wait_url(c: &Client, part: &str, what: &str) {
    let start = Instant::now();
    loop {
        let url = c.current_url().await.expect("url").to_string();
        if url.contains(part) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what}: the browser is at {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! Control plane: organization isolation. Organization A's token on every route of organization
//! B — B's paths, and A's paths naming B's resources — answers 404 (403 on admin routes) and
//! changes nothing; without a token every route answers 401.

use reqwest::Method;
use serde_json::{json, Value};
use vardo_integration::http::{Api, ApiBed, Org};

/// Every table's content, to prove that nothing changed (token use times left out).
async fn snapshot(t: &ApiBed) -> Vec<String> {
    let db = t.bed.db.client().await.expect("db");
    let mut out = Vec::new();
    for q in [
        "SELECT id::text || slug || name FROM organization",
        "SELECT id::text || organization_id::text || token_hash FROM api_token",
        "SELECT t::text FROM app t",
        "SELECT t::text FROM volume t",
        "SELECT t::text FROM backup_target t",
        "SELECT t::text FROM backup_job t",
        "SELECT t::text FROM backup_job_app t",
        "SELECT t::text FROM backup t",
        "SELECT t::text FROM restore t",
        "SELECT t::text FROM notification_channel t",
        "SELECT t::text FROM run_request t",
        "SELECT t::text FROM run t",
    ] {
        let mut rows: Vec<String> = db
            .query(q, &[])
            .await
            .expect(q)
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        out.push(format!("{q}: {}", rows.join("\n")));
    }
    out
}

struct Resources {
    target: String,
    job: String,
    backup: String,
    restore: String,
    app: String,
    channel: String,
}

/// Every organization route, with B's resource ids, and a valid body for writes.
fn routes(base: &str, r: &Resources, t: &ApiBed) -> Vec<(Method, String, Option<Value>)> {
    let target = json!({"name": "x", "type": "s3", "config": t.bed.bucket.target_json(None)});
    let job = json!({"name": "x", "schedule": "0 2 * * *"});
    vec![
        (Method::GET, format!("{base}/backups/targets"), None),
        (
            Method::POST,
            format!("{base}/backups/targets"),
            Some(target.clone()),
        ),
        (
            Method::GET,
            format!("{base}/backups/targets/{}", r.target),
            None,
        ),
        (
            Method::PUT,
            format!("{base}/backups/targets/{}", r.target),
            Some(target),
        ),
        (
            Method::DELETE,
            format!("{base}/backups/targets/{}", r.target),
            None,
        ),
        (Method::GET, format!("{base}/backups/jobs"), None),
        (
            Method::POST,
            format!("{base}/backups/jobs"),
            Some(job.clone()),
        ),
        (Method::GET, format!("{base}/backups/jobs/{}", r.job), None),
        (
            Method::PUT,
            format!("{base}/backups/jobs/{}", r.job),
            Some(job),
        ),
        (
            Method::DELETE,
            format!("{base}/backups/jobs/{}?purge=true", r.job),
            None,
        ),
        (
            Method::POST,
            format!("{base}/backups/jobs/{}/run", r.job),
            None,
        ),
        (Method::GET, format!("{base}/backups/history"), None),
        (Method::GET, format!("{base}/backups/runs"), None),
        (
            Method::GET,
            format!("{base}/backups/history/{}", r.backup),
            None,
        ),
        (
            Method::GET,
            format!("{base}/backups/history/{}/download", r.backup),
            None,
        ),
        (
            Method::POST,
            format!("{base}/backups/history/{}/restore", r.backup),
            None,
        ),
        (
            Method::GET,
            format!("{base}/backups/restores/{}", r.restore),
            None,
        ),
        (Method::GET, format!("{base}/apps"), None),
        (Method::GET, format!("{base}/apps/{}", r.app), None),
        (
            Method::PUT,
            format!("{base}/apps/{}", r.app),
            Some(json!({"name": "stolen"})),
        ),
        (Method::DELETE, format!("{base}/apps/{}", r.app), None),
        (Method::GET, format!("{base}/notifications/channels"), None),
        (
            Method::POST,
            format!("{base}/notifications/channels"),
            Some(json!({"kind": "email", "config": {"to": ["a@example.com"]}})),
        ),
        (
            Method::DELETE,
            format!("{base}/notifications/channels/{}", r.channel),
            None,
        ),
    ]
}

async fn call(api: &Api, method: &Method, path: &str, body: &Option<Value>) -> u16 {
    api.raw(
        method.clone(),
        path,
        body.as_ref().map(|b| b.to_string().into_bytes()),
    )
    .await
    .status
}

async fn resources_of(t: &ApiBed, b: &Org) -> Resources {
    let done = t.backed_up(b, "iso", "s3").await;
    let backup = done.rows[0].id.to_string();
    let restore = b
        .api
        .post_empty(&b.path(&format!("/backups/history/{backup}/restore")))
        .await
        .expect(202)
        .id()
        .to_string();
    let channel = b
        .api
        .post(
            &b.path("/notifications/channels"),
            &json!({"kind": "email", "config": {"to": ["b@example.com"]}}),
        )
        .await
        .expect(201)
        .id()
        .to_string();
    Resources {
        target: done.target.to_string(),
        job: done.job.to_string(),
        backup,
        restore,
        app: done.app_id,
        channel,
    }
}

#[tokio::test]
async fn another_organizations_token_sees_nothing_and_changes_nothing() {
    let t = ApiBed::start("web").await;
    let a = t.org("a").await;
    let b = t.org("b").await;
    let r = resources_of(&t, &b).await;
    // A's own route works, to show the token is good.
    a.api.get(&a.path("/backups/jobs")).await.expect(200);
    let before = snapshot(&t).await;
    let mut checked = 0;
    // A's token on B's paths.
    for (method, path, body) in routes(&b.path(""), &r, &t) {
        let status = call(&a.api, &method, &path, &body).await;
        assert_eq!(status, 404, "{method} {path} with A's token");
        checked += 1;
    }
    // A's token on A's paths naming B's resources (the lists are A's own, so skip them).
    for (method, path, body) in routes(&a.path(""), &r, &t) {
        let names_b = [&r.target, &r.job, &r.backup, &r.restore, &r.app, &r.channel]
            .iter()
            .any(|id| path.contains(id.as_str()));
        if !names_b {
            continue;
        }
        let status = call(&a.api, &method, &path, &body).await;
        assert_eq!(status, 404, "{method} {path}: A's path naming B's resource");
        checked += 1;
    }
    // Admin routes with an organization token: 403.
    for (method, path, body) in [
        (Method::GET, "/api/v1/organizations".to_owned(), None),
        (
            Method::POST,
            "/api/v1/organizations".to_owned(),
            Some(json!({"slug": format!("z-{}", t.bed.id), "name": "z"})),
        ),
        (Method::POST, b.path("/tokens"), None),
        (Method::POST, a.path("/tokens"), None),
        (
            Method::GET,
            "/api/v1/system/backups/targets".to_owned(),
            None,
        ),
        (
            Method::POST,
            "/api/v1/system/backups/targets".to_owned(),
            Some(json!({"name": "s", "type": "s3", "config": t.bed.bucket.target_json(None)})),
        ),
        (
            Method::GET,
            format!("/api/v1/system/backups/targets/{}", r.target),
            None,
        ),
        (
            Method::DELETE,
            format!("/api/v1/system/backups/targets/{}", r.target),
            None,
        ),
    ] {
        let status = call(&a.api, &method, &path, &body).await;
        assert_eq!(status, 403, "{method} {path} with an org token");
        checked += 1;
    }
    assert_eq!(snapshot(&t).await, before, "something changed");
    assert!(checked > 40, "{checked}");
    // B still sees everything of its own.
    b.api
        .get(&b.path(&format!("/backups/jobs/{}", r.job)))
        .await
        .expect(200);
    t.cleanup().await;
}

#[tokio::test]
async fn without_a_token_every_route_is_401() {
    let t = ApiBed::start("web").await;
    let b = t.org("b").await;
    let r = resources_of(&t, &b).await;
    let anonymous = Api::new(&t.server.base_url, None);
    let before = snapshot(&t).await;
    let mut all = routes(&b.path(""), &r, &t);
    all.push((Method::GET, "/api/v1/organizations".to_owned(), None));
    all.push((Method::POST, b.path("/tokens"), None));
    all.push((
        Method::GET,
        "/api/v1/system/backups/targets".to_owned(),
        None,
    ));
    for (method, path, body) in all {
        let status = call(&anonymous, &method, &path, &body).await;
        assert_eq!(status, 401, "{method} {path} without a token");
    }
    assert_eq!(snapshot(&t).await, before);
    t.cleanup().await;
}

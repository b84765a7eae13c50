//! Control plane: a table of bad inputs for every write route — malformed JSON, wrong types, bad
//! cron and time zone, negative and all-zero keeps, foreign target and app ids, unknown fields,
//! a 2 MiB body. Each is a 4xx naming the field (never a 5xx: the client asserts that on every
//! response) and writes nothing.

use reqwest::Method;
use serde_json::{json, Value};
use vardo_integration::http::ApiBed;

/// (what, body, expected status, expected field)
type Case = (&'static str, Vec<u8>, u16, Option<&'static str>);

fn j(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn common() -> Vec<Case> {
    let mut huge = b"{\"name\":\"".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    huge.extend(b"\"}");
    vec![
        ("malformed JSON", b"{\"name\": ".to_vec(), 400, None),
        ("not JSON", b"name=x".to_vec(), 400, None),
        ("empty body", Vec::new(), 400, None),
        ("an array", b"[]".to_vec(), 422, None),
        ("2 MiB body", huge, 413, None),
    ]
}

fn job_cases(foreign_target: &str, own_target: &str) -> Vec<Case> {
    let base = json!({"name": "j", "schedule": "0 2 * * *", "targetId": own_target});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        j(b)
    };
    let mut cases = common();
    cases.extend([
        (
            "bad cron",
            with("schedule", json!("61 * * * *")),
            422,
            Some("schedule"),
        ),
        (
            "cron with 6 fields",
            with("schedule", json!("0 0 2 * * *")),
            422,
            Some("schedule"),
        ),
        (
            "cron as a number",
            with("schedule", json!(5)),
            422,
            Some("schedule"),
        ),
        (
            "bad time zone",
            with("timezone", json!("Mars/Olympus")),
            422,
            Some("timezone"),
        ),
        (
            "negative keepLast",
            with("keepLast", json!(-1)),
            422,
            Some("keepLast"),
        ),
        (
            "negative keepDaily",
            with("keepDaily", json!(-5)),
            422,
            Some("keepDaily"),
        ),
        (
            "fractional keepWeekly",
            with("keepWeekly", json!(1.5)),
            422,
            Some("keepWeekly"),
        ),
        (
            "huge keepYearly",
            with("keepYearly", json!(1u64 << 40)),
            422,
            Some("keepYearly"),
        ),
        (
            "string keepMonthly",
            with("keepMonthly", json!("3")),
            422,
            Some("keepMonthly"),
        ),
        (
            "all-zero keeps",
            j(json!({"name": "j", "schedule": "0 2 * * *", "keepLast": 0, "keepDaily": 0})),
            422,
            Some("keepLast"),
        ),
        (
            "foreign targetId",
            with("targetId", json!(foreign_target)),
            422,
            Some("targetId"),
        ),
        (
            "unknown targetId",
            with("targetId", json!(uuid::Uuid::new_v4())),
            422,
            Some("targetId"),
        ),
        (
            "targetId not a uuid",
            with("targetId", json!("abc")),
            422,
            Some("targetId"),
        ),
        (
            "foreign appIds",
            with("appIds", json!(["app-of-b"])),
            422,
            Some("appIds"),
        ),
        (
            "appIds not a list",
            with("appIds", json!("a")),
            422,
            Some("appIds"),
        ),
        (
            "enabled as a string",
            with("enabled", json!("yes")),
            422,
            Some("enabled"),
        ),
        (
            "bad compression",
            with("compression", json!("lz4")),
            422,
            Some("compression"),
        ),
        (
            "unknown field",
            with("keepForever", json!(true)),
            422,
            Some("keepForever"),
        ),
        (
            "missing schedule",
            j(json!({"name": "j"})),
            422,
            Some("schedule"),
        ),
        ("empty name", with("name", json!("")), 422, Some("name")),
        (
            "NUL in name",
            with("name", json!("a\u{0}b")),
            422,
            Some("name"),
        ),
    ]);
    cases
}

fn target_cases(t: &ApiBed) -> Vec<Case> {
    let cfg = t.bed.bucket.target_json(None);
    let base = json!({"name": "t", "type": "s3", "config": cfg});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        j(b)
    };
    let with_cfg = |k: &str, v: Value| {
        let mut b = base.clone();
        b["config"][k] = v;
        j(b)
    };
    let mut cases = common();
    cases.extend([
        ("unknown type", with("type", json!("ftp")), 422, Some("type")),
        ("config missing bucket", j(json!({"name": "t", "type": "s3", "config": {"region": "r"}})), 422, Some("config.bucket")),
        ("config bucket a number", with_cfg("bucket", json!(1)), 422, Some("config.bucket")),
        ("config unknown field", with_cfg("bogus", json!(1)), 422, Some("config.bogus")),
        ("r2 without endpoint", j(json!({"name": "t", "type": "r2", "config": {"bucket": "b", "region": "auto", "accessKeyId": "a", "secretAccessKey": "s"}})), 422, Some("config.endpoint")),
        ("ssh port out of range", j(json!({"name": "t", "type": "ssh", "config": {"host": "h", "username": "u", "path": "/p", "port": 70000}})), 422, Some("config.port")),
        ("ssh relative path", j(json!({"name": "t", "type": "ssh", "config": {"host": "h", "username": "u", "path": "p"}})), 422, Some("config.path")),
        ("config not an object", with("config", json!("x")), 422, Some("config")),
        ("isDefault a string", with("isDefault", json!("true")), 422, Some("isDefault")),
        ("unknown field", with("owner", json!("me")), 422, Some("owner")),
        ("empty name", with("name", json!("  ")), 422, Some("name")),
    ]);
    cases
}

fn app_cases() -> Vec<Case> {
    let mut cases = common();
    cases.extend([
        ("name a number", j(json!({"name": 5})), 422, Some("name")),
        (
            "bad volume kind",
            j(json!({"name": "a", "volumes": [{"name": "v", "kind": "mysql"}]})),
            422,
            Some("volumes[0].kind"),
        ),
        (
            "volumes not a list",
            j(json!({"name": "a", "volumes": {}})),
            422,
            Some("volumes"),
        ),
        (
            "unknown volume field",
            j(json!({"name": "a", "volumes": [{"name": "v", "size": 1}]})),
            422,
            Some("volumes[0].size"),
        ),
        (
            "unknown field",
            j(json!({"name": "a", "image": "x"})),
            422,
            Some("image"),
        ),
    ]);
    cases
}

fn channel_cases() -> Vec<Case> {
    let mut cases = common();
    cases.extend([
        (
            "unknown kind",
            j(json!({"kind": "sms", "config": {}})),
            422,
            Some("kind"),
        ),
        (
            "email without to",
            j(json!({"kind": "email", "config": {}})),
            422,
            Some("config.to"),
        ),
        (
            "webhook url not a URL",
            j(json!({"kind": "webhook", "config": {"url": "nope"}})),
            422,
            Some("config.url"),
        ),
        (
            "unknown field",
            j(json!({"kind": "email", "config": {"to": ["a@b.co"]}, "name": "x"})),
            422,
            Some("name"),
        ),
    ]);
    cases
}

async fn check(
    t: &ApiBed,
    api: &vardo_integration::http::Api,
    method: Method,
    path: &str,
    cases: Vec<Case>,
) -> usize {
    let n = cases.len();
    for (what, body, status, field) in cases {
        let r = api.raw(method.clone(), path, Some(body)).await;
        assert_eq!(r.status, status, "{method} {path}, {what}: {}", r.text);
        assert!(r.body["error"]["code"].is_string(), "{what}: {}", r.text);
        assert!(r.body["error"]["message"].is_string(), "{what}: {}", r.text);
        assert_eq!(r.field(), field, "{method} {path}, {what}: {}", r.text);
    }
    let _ = t;
    n
}

#[tokio::test]
async fn bad_inputs_are_4xx_naming_the_field_and_write_nothing() {
    let t = ApiBed::start("web").await;
    let a = t.org("a").await;
    let b = t.org("b").await;
    let own = a
        .api
        .post(
            &a.path("/backups/targets"),
            &json!({"name": "own", "type": "s3", "config": t.bed.bucket.target_json(None)}),
        )
        .await
        .expect(201)
        .id()
        .to_string();
    let foreign = b
        .api
        .post(
            &b.path("/backups/targets"),
            &json!({"name": "theirs", "type": "s3", "config": t.bed.bucket.target_json(None)}),
        )
        .await
        .expect(201)
        .id()
        .to_string();
    b.api
        .put(&b.path("/apps/app-of-b"), &json!({"name": "appb"}))
        .await
        .expect(201);
    let job = a
        .api
        .post(
            &a.path("/backups/jobs"),
            &json!({"name": "j", "schedule": "0 2 * * *"}),
        )
        .await
        .expect(201)
        .id();
    let db = t.bed.db.client().await.expect("db");
    let count = |q: &'static str| {
        let db = &db;
        async move { db.query_one(q, &[]).await.expect(q).get::<_, i64>(0) }
    };
    let jobs_before = count("SELECT count(*) FROM backup_job").await;
    let targets_before = count("SELECT count(*) FROM backup_target").await;

    let mut n = 0;
    n += check(
        &t,
        &a.api,
        Method::POST,
        &a.path("/backups/jobs"),
        job_cases(&foreign, &own),
    )
    .await;
    n += check(
        &t,
        &a.api,
        Method::PUT,
        &a.path(&format!("/backups/jobs/{job}")),
        job_cases(&foreign, &own),
    )
    .await;
    n += check(
        &t,
        &a.api,
        Method::POST,
        &a.path("/backups/targets"),
        target_cases(&t),
    )
    .await;
    n += check(
        &t,
        &a.api,
        Method::PUT,
        &a.path(&format!("/backups/targets/{own}")),
        target_cases(&t),
    )
    .await;
    n += check(
        &t,
        &t.admin,
        Method::POST,
        "/api/v1/system/backups/targets",
        target_cases(&t),
    )
    .await;
    n += check(
        &t,
        &a.api,
        Method::PUT,
        &a.path("/apps/new-app"),
        app_cases(),
    )
    .await;
    n += check(
        &t,
        &a.api,
        Method::POST,
        &a.path("/notifications/channels"),
        channel_cases(),
    )
    .await;
    n += check(
        &t,
        &t.admin,
        Method::POST,
        "/api/v1/organizations",
        common(),
    )
    .await;

    assert_eq!(count("SELECT count(*) FROM backup_job").await, jobs_before);
    assert_eq!(
        count("SELECT count(*) FROM backup_target").await,
        targets_before
    );
    assert_eq!(count("SELECT count(*) FROM app").await, 1);
    assert_eq!(count("SELECT count(*) FROM notification_channel").await, 0);
    let stored = t.bed.store.job(job).await.expect("job");
    assert_eq!(
        (stored.name.as_str(), stored.schedule.as_str()),
        ("j", "0 2 * * *"),
        "the PUTs changed nothing"
    );
    assert!(n > 100, "{n} cases");
    t.cleanup().await;
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let t = ApiBed::start("web").await;
    let a = t.org("p").await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("cursor=%%%", "cursor"),
        ("jobId=nope", "jobId"),
        ("status=done", "status"),
        ("appId=%00", "appId"),
    ] {
        let r = a
            .api
            .get(&a.path(&format!("/backups/history?{query}")))
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert_eq!(r.field(), Some(field), "{query}: {}", r.text);
    }
    a.api
        .get(&a.path("/backups/jobs?limit=-1"))
        .await
        .expect(400);
    a.api
        .delete(&a.path(&format!(
            "/backups/jobs/{}?purge=maybe",
            uuid::Uuid::new_v4()
        )))
        .await
        .expect(400);
    a.api
        .get("/api/v1/organizations/not-a-uuid/backups/jobs")
        .await
        .expect(404);
    a.api.get(&a.path("/no/such/route")).await.expect(404);
    t.cleanup().await;
}

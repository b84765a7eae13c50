//! The Backups page over HTTP, parsed as HTML: sign-in and its cookie, CSRF refusals, the overview's
//! banner and rows, history filters and logs, the restore confirmation, secrets never shown, and
//! another organization's ids answered 404. A real server, database and Docker.

use serde_json::json;
use vardo_actors::model::Status;
use vardo_integration::http::{ApiBed, Org};
use vardo_integration::web::PageClient;

/// A job whose app's Docker volume does not exist: its runs fail.
async fn failing_job(t: &ApiBed, org: &Org, name: &str) -> uuid::Uuid {
    let app_id = format!("{name}-{}", t.bed.id);
    org.api
        .put(
            &org.path(&format!("/apps/{app_id}")),
            &json!({"name": format!("{name}{}", t.bed.id), "volumes": [{"name": "files", "persistent": true, "kind": "generic"}]}),
        )
        .await
        .expect(201);
    let target = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": format!("{name}-local"), "type": "local", "config": t.bed.local_config()}),
        )
        .await
        .expect(201)
        .id();
    let job = org
        .api
        .post(
            &org.path("/backups/jobs"),
            &json!({"name": format!("{name} job"), "schedule": "30 3 * * *", "timezone": "Europe/Berlin",
                "targetId": target, "appIds": [app_id], "keepAll": true}),
        )
        .await
        .expect(201)
        .id();
    let (_, rows) = t.bed.run_job(job).await;
    assert!(
        rows.iter().all(|r| r.status == Status::Failed),
        "the job fails"
    );
    job
}

#[tokio::test]
async fn pages_sign_in_show_health_filter_history_refuse_forgeries_and_other_tenants() {
    let t = ApiBed::start("web").await;
    let org = t.org("page").await;
    let good = t.backed_up(&org, "good", "s3").await;
    let bad_job = failing_job(&t, &org, "bad").await;
    // An app no enabled job covers.
    org.api
        .put(
            &org.path(&format!("/apps/lonely-{}", t.bed.id)),
            &json!({"name": "lonely", "volumes": [{"name": "uploads", "persistent": true, "kind": "generic"}]}),
        )
        .await
        .expect(201);
    let other = t.org("other").await;
    let theirs = t.backed_up(&other, "theirs", "local").await;

    // Without a session every page sends to the sign-in form.
    let mut anon = PageClient::new(&t.server.base_url);
    for path in [
        "/",
        "/history",
        &format!("/backups/{}", good.rows[0].id),
        "/targets",
    ] {
        let p = anon.get(path).await;
        assert_eq!(
            (p.status, p.location.as_deref()),
            (303, Some("/signin")),
            "{path}"
        );
    }
    // The sign-in form's one-time value must come back with its cookie.
    let form = anon.get("/signin").await;
    assert!(form
        .set_cookies
        .iter()
        .any(|c| c.starts_with("vardo_signin=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")));
    let forged = PageClient::new(&t.server.base_url)
        .post("/signin", &[("token", &org.token), ("csrf", &form.csrf())])
        .await;
    assert_eq!(
        forged.status, 403,
        "a sign-in without the form's cookie is refused"
    );
    let wrong = anon
        .post(
            "/signin",
            &[("token", "vardo_nope"), ("csrf", &form.csrf())],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.texts("[role=alert]"),
        vec!["That token is not valid."]
    );

    let mut me = PageClient::new(&t.server.base_url);
    let form = me.get("/signin").await;
    let signed = me
        .post("/signin", &[("token", &org.token), ("csrf", &form.csrf())])
        .await;
    assert_eq!(
        (signed.status, signed.location.as_deref()),
        (303, Some("/"))
    );
    let session = signed
        .set_cookies
        .iter()
        .find(|c| c.starts_with("vardo_session="))
        .expect("a session cookie");
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
            && session.contains("Path=/"),
        "{session}"
    );

    // Overview: the worst state wins the banner; a row per job; the uncovered volume.
    let home = me.get("/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    let banner = home.attrs(".banner", "class");
    assert_eq!(banner, vec!["banner failing"], "{}", home.body);
    assert!(
        home.texts(".banner")[0].contains("bad job"),
        "{:?}",
        home.texts(".banner")
    );
    let rows = home.attrs("tr[data-job]", "data-job");
    assert_eq!(rows.len(), 2);
    assert!(rows.contains(&good.job.to_string()) && rows.contains(&bad_job.to_string()));
    let row_text = |job: uuid::Uuid| home.texts(&format!("tr[data-job=\"{job}\"]")).join(" ");
    assert!(
        row_text(good.job).contains("healthy") && row_text(good.job).contains("At 2:00 AM"),
        "{}",
        row_text(good.job)
    );
    assert!(
        row_text(bad_job).contains("failing") && row_text(bad_job).contains("Europe/Berlin"),
        "{}",
        row_text(bad_job)
    );
    assert_eq!(home.texts("#unprotected").len(), 1);
    assert!(home.body.contains("lonely / uploads"));
    assert!(
        !home.body.contains(&theirs.app_name),
        "nothing of the other organization"
    );

    // History: filters are query parameters; each row opens its log.
    let failed = me
        .get(&format!("/history?status=failed&job={bad_job}"))
        .await;
    let statuses = failed.attrs("tr[data-status]", "data-status");
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| s == "failed"),
        "{statuses:?}"
    );
    let all = me.get("/history").await;
    assert_eq!(
        all.attrs("tr[data-backup]", "data-backup").len(),
        2,
        "only this organization's rows"
    );
    let sum = good.rows[0].checksum.clone().expect("checksum");
    assert!(
        all.attrs("td code[title]", "title").contains(&sum),
        "the list shows each row's checksum"
    );
    let none = me.get("/history?from=2999-01-01").await;
    assert!(none.attrs("tr[data-backup]", "data-backup").is_empty());
    let bad_filter = me.get("/history?status=exploded").await;
    assert_eq!(bad_filter.status, 400);
    assert!(
        bad_filter.body.contains("status must be"),
        "{}",
        bad_filter.body
    );
    let log_link = failed.attrs("tr[data-status] a", "href")[0].clone();
    let log = me.get(&log_link).await;
    assert_eq!(log.status, 200);
    assert!(!log.texts("#log")[0].trim().is_empty(), "the log is shown");
    let good_row = me.get(&format!("/backups/{}", good.rows[0].id)).await;
    assert!(good_row
        .body
        .contains(good.rows[0].checksum.as_deref().expect("checksum")));

    // Another organization's ids are not found, whatever the page.
    for path in [
        format!("/backups/{}", theirs.rows[0].id),
        format!("/backups/{}/download", theirs.rows[0].id),
        format!("/backups/{}/restore", theirs.rows[0].id),
        format!("/jobs/{}", theirs.job),
    ] {
        assert_eq!(me.get(&path).await.status, 404, "{path}");
    }
    let csrf = home.csrf();
    let forged_restore = me
        .post(
            &format!("/backups/{}/restore", theirs.rows[0].id),
            &[("csrf", &csrf), ("confirm", "files")],
        )
        .await;
    assert_eq!(forged_restore.status, 404);
    assert_eq!(
        me.post(&format!("/jobs/{}/run", theirs.job), &[("csrf", &csrf)])
            .await
            .status,
        404
    );

    // Forms without this session's CSRF token change nothing.
    let requests = || async {
        let db = t.bed.db.client().await.expect("db");
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM run_request WHERE job_id = $1",
                &[&good.job],
            )
            .await
            .expect("count")
            .get(0);
        n
    };
    let before = requests().await;
    let refused = me
        .post(&format!("/jobs/{}/run", good.job), &[("csrf", "forged")])
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(requests().await, before, "no run was requested");
    let run = me
        .post(&format!("/jobs/{}/run", good.job), &[("csrf", &csrf)])
        .await;
    assert_eq!(run.status, 303);
    assert!(run
        .location
        .as_deref()
        .is_some_and(|l| l.starts_with("/history?run=")));
    assert_eq!(requests().await, before + 1);

    // Restore: the typed name must be the volume's.
    let confirm = me
        .get(&format!("/backups/{}/restore", good.rows[0].id))
        .await;
    assert!(confirm.body.contains("The app is not restarted"));
    let mistyped = me
        .post(
            &format!("/backups/{}/restore", good.rows[0].id),
            &[("csrf", &csrf), ("confirm", "file")],
        )
        .await;
    assert_eq!(mistyped.status, 422);
    let db = t.bed.db.client().await.expect("db");
    let restores: i64 = db
        .query_one(
            "SELECT count(*) FROM restore WHERE backup_id = $1",
            &[&good.rows[0].id],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(restores, 0, "nothing was queued");

    // No page shows a secret: the S3 secret key, the tokens.
    let secret = vardo_integration::env::setting("VARDO_TEST_S3_SECRET_KEY");
    for path in [
        "/",
        "/history",
        "/targets",
        "/channels",
        &format!("/jobs/{}", good.job),
        &format!("/backups/{}", good.rows[0].id),
    ] {
        let p = me.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(
            !p.body.contains(&secret)
                && !p.body.contains(&org.token)
                && !p.body.contains(&t.admin_token),
            "{path} shows a secret"
        );
    }
    assert!(me.get("/targets").await.body.contains("good-s3"));

    // Enable/disable, then sign out: the session is gone.
    let off = me
        .post(
            &format!("/jobs/{}/enabled", good.job),
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await;
    assert_eq!(off.status, 303);
    assert!(me
        .get(&format!("/jobs/{}", good.job))
        .await
        .body
        .contains("disabled"));
    let old = me.clone();
    let out = me.post("/signout", &[("csrf", &csrf)]).await;
    assert_eq!(
        (out.status, out.location.as_deref()),
        (303, Some("/signin"))
    );
    let mut old = old;
    assert_eq!(
        old.get("/").await.status,
        303,
        "the old cookie no longer works"
    );

    // The admin picks an organization.
    let mut admin = PageClient::sign_in(&t.server.base_url, &t.admin_token).await;
    let pick = admin.get("/").await;
    let options = pick.attrs("select[name=organization] option", "value");
    assert!(options.contains(&org.id.to_string()) && options.contains(&other.id.to_string()));
    let shown = admin
        .post(
            "/organization",
            &[
                ("csrf", &pick.csrf()),
                ("organization", &other.id.to_string()),
            ],
        )
        .await;
    assert_eq!(shown.status, 303);
    let theirs_home = admin.get("/").await;
    assert_eq!(
        theirs_home.attrs("tr[data-job]", "data-job"),
        vec![theirs.job.to_string()]
    );

    // Signing in again ends the browser's previous session.
    let before = admin.clone();
    let form = admin.get("/signin").await;
    let again = admin
        .post(
            "/signin",
            &[("token", &t.admin_token), ("csrf", &form.csrf())],
        )
        .await;
    assert_eq!(again.status, 303);
    let mut before = before;
    assert_eq!(
        before.get("/").await.status,
        303,
        "the earlier session is gone"
    );
    assert_eq!(admin.get("/organizations").await.status, 200);

    // An engine whose admin token changed does not honour admin sessions of the old one.
    let mut env = t.bed.env();
    env.push((
        "VARDO_ADMIN_TOKEN".into(),
        format!("changed-{}", uuid::Uuid::new_v4()),
    ));
    let changed =
        vardo_integration::process::Server::spawn(&["--role", "web"], &env).expect("server");
    let ready = format!("{}/readyz", changed.base_url);
    vardo_integration::eventually(
        std::time::Duration::from_secs(30),
        "the second server answers",
        || {
            let ready = ready.clone();
            async move {
                reqwest::get(&ready)
                    .await
                    .ok()?
                    .status()
                    .is_success()
                    .then_some(())
            }
        },
    )
    .await;
    let mut stale = admin.clone();
    stale.base = changed.base_url.clone();
    let refused = stale.get("/").await;
    assert_eq!(
        (refused.status, refused.location.as_deref()),
        (303, Some("/signin"))
    );
    drop(changed);
    t.cleanup().await;
}

#[tokio::test]
async fn jobs_targets_and_channels_are_edited_with_the_apis_checks_and_other_tenants_are_not_found()
{
    let t = ApiBed::start("web").await;
    let org = t.org("forms").await;
    let good = t.backed_up(&org, "kept", "local").await;
    let other = t.org("stranger").await;
    let theirs = other
        .api
        .post(
            &other.path("/backups/targets"),
            &json!({"name": "theirs", "type": "local", "config": t.bed.local_config()}),
        )
        .await
        .expect(201)
        .id();
    let mut me = PageClient::sign_in(&t.server.base_url, &org.token).await;
    let page = me.get(&format!("/jobs/{}", good.job)).await;
    let csrf = page.csrf();
    let job_path = format!("/jobs/{}/edit", good.job);
    let edit = |schedule: &str, keep_daily: &str| {
        vec![
            ("csrf".to_owned(), csrf.clone()),
            ("name".to_owned(), "renamed job".to_owned()),
            ("schedule".to_owned(), schedule.to_owned()),
            ("timezone".to_owned(), "Europe/Paris".to_owned()),
            ("target".to_owned(), good.target.to_string()),
            ("app".to_owned(), good.app_id.clone()),
            ("keepDaily".to_owned(), keep_daily.to_owned()),
            ("compression".to_owned(), "zstd".to_owned()),
            ("notifyOnFailure".to_owned(), "on".to_owned()),
        ]
    };
    let pairs = |v: &[(String, String)]| {
        v.iter()
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect::<Vec<_>>()
    };
    let post = |me: &mut PageClient, path: String, v: Vec<(String, String)>| {
        let mut me = me.clone();
        async move {
            let refs: Vec<(&str, &str)> = v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let page = me.post(&path, &refs).await;
            (me, page)
        }
    };
    // The API's messages, field named.
    let (_, bad) = post(&mut me, job_path.clone(), pairs(&edit("61 * * * *", "7"))).await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.texts("[role=alert]")[0].starts_with("schedule:"),
        "{:?}",
        bad.texts("[role=alert]")
    );
    let (_, bad) = post(
        &mut me,
        job_path.clone(),
        pairs(&edit("0 3 * * *", "seven")),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.texts("[role=alert]")[0].starts_with("keepDaily"),
        "{:?}",
        bad.texts("[role=alert]")
    );
    let unchanged = org
        .api
        .get(&org.path(&format!("/backups/jobs/{}", good.job)))
        .await
        .expect(200);
    assert_eq!(
        unchanged.body["schedule"], "0 2 * * *",
        "a refused edit changes nothing"
    );
    let (_, ok) = post(&mut me, job_path.clone(), pairs(&edit("0 3 * * *", "7"))).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let job = org
        .api
        .get(&org.path(&format!("/backups/jobs/{}", good.job)))
        .await
        .expect(200);
    assert_eq!(
        (
            job.body["name"].as_str(),
            job.body["schedule"].as_str(),
            job.body["timezone"].as_str()
        ),
        (Some("renamed job"), Some("0 3 * * *"), Some("Europe/Paris"))
    );
    assert_eq!(
        (
            job.body["keepDaily"].as_i64(),
            job.body["compression"].as_str()
        ),
        (Some(7), Some("zstd"))
    );

    // Targets: the API's checks; another organization's target is not found.
    let targets = me.get("/targets").await;
    assert!(targets.body.contains("kept-local"));
    let (_, bad) = post(
        &mut me,
        "/targets".to_owned(),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("name".into(), "new".into()),
            ("type".into(), "s3".into()),
            ("config".into(), "{\"bucket\": 1}".into()),
        ]),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.texts("[role=alert]")[0].contains("config"),
        "{:?}",
        bad.texts("[role=alert]")
    );
    let (_, bad) = post(
        &mut me,
        "/targets".to_owned(),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("name".into(), "new".into()),
            ("type".into(), "local".into()),
            ("config".into(), "not json".into()),
        ]),
    )
    .await;
    assert!(bad.texts("[role=alert]")[0].starts_with("config is not JSON"));
    let local = t.bed.local_config().to_string();
    let (_, ok) = post(
        &mut me,
        "/targets".to_owned(),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("name".into(), "second".into()),
            ("type".into(), "local".into()),
            ("config".into(), local.clone()),
        ]),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let listed = org.api.get(&org.path("/backups/targets")).await.expect(200);
    let second = listed.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["name"] == "second")
        .expect("created")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (_, ok) = post(
        &mut me,
        format!("/targets/{second}/edit"),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("name".into(), "second renamed".into()),
            ("type".into(), "local".into()),
            ("config".into(), local.clone()),
        ]),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(me.get("/targets").await.body.contains("second renamed"));
    let (_, in_use) = post(
        &mut me,
        format!("/targets/{}/delete", good.target),
        pairs(&[("csrf".into(), csrf.clone())]),
    )
    .await;
    assert!(
        in_use.texts("[role=alert]")[0].contains("used by jobs"),
        "{:?}",
        in_use.texts("[role=alert]")
    );
    for path in [
        format!("/targets/{theirs}/edit"),
        format!("/targets/{theirs}/delete"),
    ] {
        let (_, p) = post(
            &mut me,
            path.clone(),
            pairs(&[
                ("csrf".into(), csrf.clone()),
                ("name".into(), "x".into()),
                ("type".into(), "local".into()),
                ("config".into(), local.clone()),
            ]),
        )
        .await;
        assert_eq!(p.status, 404, "{path}");
    }
    let (_, ok) = post(
        &mut me,
        format!("/targets/{second}/delete"),
        pairs(&[("csrf".into(), csrf.clone())]),
    )
    .await;
    assert_eq!(ok.status, 303);
    assert!(!me.get("/targets").await.body.contains("second renamed"));

    // Channels: the API's checks; the secret is masked; delete.
    let (_, bad) = post(
        &mut me,
        "/channels".to_owned(),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("kind".into(), "webhook".into()),
            ("config".into(), "{\"url\": \"ftp://x\"}".into()),
        ]),
    )
    .await;
    assert_eq!(bad.status, 422);
    assert!(
        bad.texts("[role=alert]")[0].starts_with("config.url"),
        "{:?}",
        bad.texts("[role=alert]")
    );
    let (_, ok) = post(
        &mut me,
        "/channels".to_owned(),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("kind".into(), "email".into()),
            ("config".into(), "{\"to\": [\"ops@example.com\"]}".into()),
        ]),
    )
    .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let channels = me.get("/channels").await;
    let ids = channels.attrs("tr[data-channel]", "data-channel");
    assert_eq!(ids.len(), 1);
    let (_, ok) = post(
        &mut me,
        format!("/channels/{}/delete", ids[0]),
        pairs(&[("csrf".into(), csrf.clone())]),
    )
    .await;
    assert_eq!(ok.status, 303);
    assert!(me
        .get("/channels")
        .await
        .attrs("tr[data-channel]", "data-channel")
        .is_empty());

    // Delete the job: the typed name first; history and archives stay.
    let (_, wrong) = post(
        &mut me,
        format!("/jobs/{}/delete", good.job),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("confirm".into(), "kept job".into()),
        ]),
    )
    .await;
    assert_eq!(wrong.status, 400);
    let (_, gone) = post(
        &mut me,
        format!("/jobs/{}/delete", good.job),
        pairs(&[
            ("csrf".into(), csrf.clone()),
            ("confirm".into(), "renamed job".into()),
        ]),
    )
    .await;
    assert_eq!((gone.status, gone.location.as_deref()), (303, Some("/")));
    assert_eq!(me.get(&format!("/jobs/{}", good.job)).await.status, 404);
    assert_eq!(
        me.get(&format!("/backups/{}", good.rows[0].id))
            .await
            .status,
        200,
        "its history stays"
    );
    t.cleanup().await;
}

#[tokio::test]
async fn a_test_notice_reaches_the_channels_mailbox_and_another_tenants_channel_is_not_found() {
    let smtp = vardo_integration::env::setting("VARDO_TEST_SMTP_URL");
    let t = ApiBed::start_with(
        "all",
        &[
            ("VARDO_SMTP_URL", smtp.as_str()),
            ("VARDO_SMTP_FROM", "Vardo Backups <vardo@example.com>"),
        ],
    )
    .await;
    let org = t.org("bell").await;
    let other = t.org("quiet").await;
    let recipient = format!("ops-{}@example.com", t.bed.id);
    let channel = org
        .api
        .post(
            &org.path("/notifications/channels"),
            &json!({"kind": "email", "config": {"to": [recipient]}}),
        )
        .await
        .expect(201)
        .id();
    let theirs = other
        .api
        .post(
            &other.path("/notifications/channels"),
            &json!({"kind": "email", "config": {"to": ["x@example.com"]}}),
        )
        .await
        .expect(201)
        .id();
    let mut me = PageClient::sign_in(&t.server.base_url, &org.token).await;
    let csrf = me.get("/channels").await.csrf();
    assert_eq!(
        me.post(&format!("/channels/{theirs}/test"), &[("csrf", &csrf)])
            .await
            .status,
        404
    );
    assert_eq!(
        me.post(&format!("/channels/{channel}/test"), &[("csrf", "forged")])
            .await
            .status,
        403
    );
    let sent = me
        .post(&format!("/channels/{channel}/test"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (sent.status, sent.location.as_deref()),
        (303, Some("/channels?sent=1"))
    );
    assert!(me.get("/channels?sent=1").await.texts("[role=status]")[0]
        .contains("test notice is queued"));
    vardo_integration::eventually(
        std::time::Duration::from_secs(60),
        "the test notice is delivered",
        || {
            let recipient = recipient.clone();
            async move {
                let mails = crate::notifications::support::mails_to(&recipient);
                (mails.len() == 1 && mails[0].subject.contains("Test notice from vardo-backup"))
                    .then_some(())
            }
        },
    )
    .await;
    t.cleanup().await;
}

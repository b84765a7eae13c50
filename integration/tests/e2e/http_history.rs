//! Control plane: history (filters, newest first, cursor pages, one row with its log), downloads
//! (307 to a pre-signed URL for S3, the bytes streamed for local targets) and restores (queued,
//! then performed by a scheduler-role instance; status and log readable).

use std::time::Duration;

use serde_json::json;
use sha2::Digest as _;
use vardo_integration::eventually;
use vardo_integration::http::ApiBed;

#[tokio::test]
async fn history_filters_pages_and_shows_the_log() {
    let t = ApiBed::start("web").await;
    let org = t.org("hist").await;
    let done = t.backed_up(&org, "h", "s3").await;
    // A second run of the same job, and a failed row for another volume name.
    let (out, more) = t.bed.run_job(done.job).await;
    assert!(out.status.success());
    let newest = more[0].id;

    let all = org.api.get(&org.path("/backups/history")).await.expect(200);
    let items = all.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], newest.to_string().as_str(), "newest first");
    let first = &items[1];
    let row = &done.rows[0];
    assert_eq!(first["id"], row.id.to_string().as_str());
    assert_eq!(first["jobId"], done.job.to_string().as_str());
    assert_eq!(first["appId"], done.app_id.as_str());
    assert_eq!(first["targetId"], done.target.to_string().as_str());
    assert_eq!(first["volumeName"], "files");
    assert_eq!(first["status"], "success");
    assert_eq!(first["sizeBytes"], row.size_bytes.expect("size"));
    assert_eq!(
        first["storagePath"],
        row.storage_path.clone().expect("path").as_str()
    );
    assert_eq!(
        first["checksum"],
        row.checksum.clone().expect("sum").as_str()
    );
    assert!(first["startedAt"]
        .as_str()
        .is_some_and(|s| s.ends_with('Z')));
    assert!(first["finishedAt"].as_str().is_some());
    assert!(first.get("log").is_none(), "lists leave the log out");

    let page = org
        .api
        .get(&org.path("/backups/history?limit=1"))
        .await
        .expect(200);
    let cursor = page.body["nextCursor"].as_str().expect("cursor").to_owned();
    let next = org
        .api
        .get(&org.path(&format!("/backups/history?limit=1&cursor={cursor}")))
        .await
        .expect(200);
    assert_eq!(next.body["items"][0]["id"], row.id.to_string().as_str());

    for (query, n) in [
        (format!("jobId={}", done.job), 2),
        (format!("jobId={}", uuid::Uuid::new_v4()), 0),
        (format!("appId={}", done.app_id), 2),
        ("appId=nope".to_owned(), 0),
        ("status=success".to_owned(), 2),
        ("status=failed".to_owned(), 0),
        ("volumeName=files".to_owned(), 2),
        ("volumeName=other".to_owned(), 0),
        (format!("runId={}", more[0].run_id), 1),
        ("from=2999-01-01T00:00:00Z".to_owned(), 0),
        ("to=2999-01-01T00:00:00Z".to_owned(), 2),
        (
            "from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z".to_owned(),
            0,
        ),
    ] {
        let r = org
            .api
            .get(&org.path(&format!("/backups/history?{query}")))
            .await
            .expect(200);
        assert_eq!(r.body["items"].as_array().map(Vec::len), Some(n), "{query}");
    }
    let bad = org
        .api
        .get(&org.path("/backups/history?status=lost"))
        .await
        .expect(400);
    assert_eq!(bad.field(), Some("status"));
    let bad = org
        .api
        .get(&org.path("/backups/history?limit=501"))
        .await
        .expect(400);
    assert_eq!(bad.field(), Some("limit"));
    let bad = org
        .api
        .get(&org.path("/backups/history?cursor=zzz"))
        .await
        .expect(400);
    assert_eq!(bad.field(), Some("cursor"));

    let one = org
        .api
        .get(&org.path(&format!("/backups/history/{}", row.id)))
        .await
        .expect(200);
    let log = one.body["log"].as_str().expect("log");
    assert_eq!(log, row.log);
    assert!(log.lines().count() >= 3, "{log}");
    t.cleanup().await;
}

#[tokio::test]
async fn downloads_redirect_for_s3_and_stream_for_local_targets() {
    let t = ApiBed::start("web").await;
    let org = t.org("dl").await;
    let s3 = t.backed_up(&org, "s3dl", "s3").await;
    let r = org
        .api
        .get(&org.path(&format!("/backups/history/{}/download", s3.rows[0].id)))
        .await
        .expect(307);
    let url = r.headers["location"].to_str().expect("location").to_owned();
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");
    let bytes = reqwest::get(&url)
        .await
        .expect("GET")
        .bytes()
        .await
        .expect("body");
    let sum = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(Some(sum), s3.rows[0].checksum);

    let local = t.backed_up(&org, "ldl", "local").await;
    let url = format!(
        "{}{}",
        t.server.base_url,
        org.path(&format!("/backups/history/{}/download", local.rows[0].id))
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&org.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status().as_u16(), 200);
    let disposition = resp.headers()["content-disposition"]
        .to_str()
        .expect("header")
        .to_owned();
    assert!(
        disposition.contains("attachment") && disposition.contains(".tar.gz"),
        "{disposition}"
    );
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(Some(bytes.len() as i64), local.rows[0].size_bytes);
    let sum = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(Some(sum), local.rows[0].checksum);
    t.cleanup().await;
}

#[tokio::test]
async fn a_restore_is_queued_performed_and_reported() {
    let t = ApiBed::start("all").await;
    let org = t.org("rst").await;
    let done = t.backed_up(&org, "rst", "s3").await;
    let volume = format!("{}-blue_files", done.app_name);
    let before = vardo_integration::volumes::sh(&t.bed.docker, &volume, "sha256sum /volume/r")
        .await
        .expect("sum");
    vardo_integration::volumes::sh(&t.bed.docker, &volume, "echo changed > /volume/r")
        .await
        .expect("change");
    let r = org
        .api
        .post_empty(&org.path(&format!("/backups/history/{}/restore", done.rows[0].id)))
        .await
        .expect(202);
    let restore = r.id();
    let path = org.path(&format!("/backups/restores/{restore}"));
    let finished = eventually(Duration::from_secs(60), "the restore to finish", || {
        let api = org.api.clone();
        let path = path.clone();
        async move {
            let r = api.get(&path).await;
            matches!(r.body["status"].as_str(), Some("success" | "failed")).then_some(r.body)
        }
    })
    .await;
    assert_eq!(finished["status"], "success", "{finished}");
    assert_eq!(finished["backupId"], done.rows[0].id.to_string().as_str());
    assert!(finished["log"].as_str().is_some_and(|l| !l.is_empty()));
    assert!(finished["finishedAt"].as_str().is_some());
    let after = vardo_integration::volumes::sh(&t.bed.docker, &volume, "sha256sum /volume/r")
        .await
        .expect("sum");
    assert_eq!(before, after, "the volume holds the backed-up bytes again");
    // A non-success row cannot be restored.
    t.bed
        .db
        .client()
        .await
        .expect("db")
        .execute(
            "UPDATE backup SET status = 'failed' WHERE id = $1",
            &[&done.rows[0].id],
        )
        .await
        .expect("update");
    org.api
        .post(
            &org.path(&format!("/backups/history/{}/restore", done.rows[0].id)),
            &json!({}),
        )
        .await
        .expect(409);
    t.cleanup().await;
}

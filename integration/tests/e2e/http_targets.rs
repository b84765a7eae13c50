//! Control plane: backup targets — secrets sealed at rest and masked in responses (a PUT of the
//! mask keeps the stored secret), system targets read-only for organizations, `isDefault` moving
//! in one transaction, and deletes refused while jobs use the target.

use secrecy::ExposeSecret as _;
use serde_json::json;
use vardo_actors::model::TargetConfig;
use vardo_integration::http::{stored_secret, ApiBed};
use vardo_integration::setting;

fn s3_secret(config: &TargetConfig) -> String {
    match config {
        TargetConfig::S3(c) => c.secret_access_key.expose_secret().to_owned(),
        other => panic!("not s3: {other:?}"),
    }
}

#[tokio::test]
async fn targets_are_sealed_at_rest_masked_in_responses_and_kept_by_the_mask() {
    let t = ApiBed::start("web").await;
    let org = t.org("tg").await;
    let secret = setting("VARDO_TEST_S3_SECRET_KEY");
    stored_secret(&secret);
    let config = t.bed.bucket.target_json(Some("p"));
    let created = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "main", "type": "s3", "config": config, "isDefault": true}),
        )
        .await
        .expect(201);
    let id = created.id();
    assert_eq!(created.body["config"]["secretAccessKey"], "********");
    assert_eq!(created.body["config"]["bucket"], t.bed.bucket.name.as_str());
    assert_eq!(created.body["isDefault"], true);
    assert_eq!(created.body["organizationId"], org.id.to_string().as_str());

    // At rest: sealed, not the secret; the engine opens it back.
    let raw: serde_json::Value = t
        .bed
        .db
        .client()
        .await
        .expect("db")
        .query_one("SELECT config FROM backup_target WHERE id = $1", &[&id])
        .await
        .expect("row")
        .get(0);
    assert!(raw["secretAccessKey"]
        .as_str()
        .is_some_and(|s| s.starts_with("v1:")));
    assert!(!raw.to_string().contains(&secret));
    let opened = t.bed.store.target(id).await.expect("target");
    assert_eq!(s3_secret(&opened.config), secret);

    // PUT with the mask: the secret stays; the other fields change.
    let mut masked = created.body["config"].clone();
    masked["prefix"] = json!("q");
    let updated = org
        .api
        .put(
            &org.path(&format!("/backups/targets/{id}")),
            &json!({"name": "renamed", "type": "s3", "config": masked, "isDefault": true}),
        )
        .await
        .expect(200);
    assert_eq!(updated.body["name"], "renamed");
    assert_eq!(updated.body["config"]["prefix"], "q");
    let opened = t.bed.store.target(id).await.expect("target");
    assert_eq!(s3_secret(&opened.config), secret);
    assert_eq!(opened.name, "renamed");

    // PUT with a new secret replaces it.
    let rotated = format!("rotated-{}", t.bed.id);
    stored_secret(&rotated);
    let mut fresh = config.clone();
    fresh["secretAccessKey"] = json!(rotated);
    org.api
        .put(
            &org.path(&format!("/backups/targets/{id}")),
            &json!({"name": "renamed", "type": "s3", "config": fresh}),
        )
        .await
        .expect(200);
    let opened = t.bed.store.target(id).await.expect("target");
    assert_eq!(s3_secret(&opened.config), rotated);

    // GET and list mask too.
    let got = org
        .api
        .get(&org.path(&format!("/backups/targets/{id}")))
        .await
        .expect(200);
    assert_eq!(got.body["config"]["secretAccessKey"], "********");
    // The mask on create is refused (there is nothing to keep).
    let r = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "m", "type": "s3", "config": masked}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), Some("config.secretAccessKey"));
    t.cleanup().await;
}

#[tokio::test]
async fn system_targets_are_listed_for_organizations_but_read_only() {
    let t = ApiBed::start("web").await;
    let org = t.org("sys").await;
    let ssh = t.bed.ssh_config();
    let key = ssh["privateKey"].as_str().expect("key").to_owned();
    stored_secret(&key);
    let system = t
        .admin
        .post(
            "/api/v1/system/backups/targets",
            &json!({"name": format!("sys-{}", t.bed.id), "type": "ssh", "config": ssh}),
        )
        .await
        .expect(201);
    let sys_id = system.id();
    assert!(system.body["organizationId"].is_null());
    assert_eq!(system.body["config"]["privateKey"], "********");
    let own = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "own", "type": "s3", "config": t.bed.bucket.target_json(None)}),
        )
        .await
        .expect(201)
        .id();

    let list = org.api.get(&org.path("/backups/targets")).await.expect(200);
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert!(ids.contains(&sys_id.to_string().as_str()) && ids.contains(&own.to_string().as_str()));
    org.api
        .get(&org.path(&format!("/backups/targets/{sys_id}")))
        .await
        .expect(200);

    // Writes to a system target with an org token: 403, nothing changes.
    let r = org
        .api
        .put(
            &org.path(&format!("/backups/targets/{sys_id}")),
            &json!({"name": "hijacked", "type": "ssh", "config": system.body["config"]}),
        )
        .await
        .expect(403);
    assert_eq!(r.code(), Some("forbidden"));
    org.api
        .delete(&org.path(&format!("/backups/targets/{sys_id}")))
        .await
        .expect(403);
    org.api
        .get("/api/v1/system/backups/targets")
        .await
        .expect(403);
    org.api
        .post(
            "/api/v1/system/backups/targets",
            &json!({"name": "x", "type": "ssh", "config": t.bed.ssh_config()}),
        )
        .await
        .expect(403);
    let still = t.bed.store.target(sys_id).await.expect("still there");
    assert_eq!(still.name, format!("sys-{}", t.bed.id));

    // The admin manages it on the system path; an org target is not found there.
    let listed = t
        .admin
        .get("/api/v1/system/backups/targets")
        .await
        .expect(200);
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    t.admin
        .get(&format!("/api/v1/system/backups/targets/{own}"))
        .await
        .expect(404);
    t.admin
        .put(
            &format!("/api/v1/system/backups/targets/{sys_id}"),
            &json!({"name": "sys2", "type": "ssh", "config": system.body["config"]}),
        )
        .await
        .expect(200);
    let kept = t.bed.store.target(sys_id).await.expect("target");
    match kept.config {
        TargetConfig::Ssh(c) => assert_eq!(
            c.private_key.map(|k| k.expose_secret().to_owned()),
            Some(key)
        ),
        other => panic!("not ssh: {other:?}"),
    }
    t.admin
        .delete(&format!("/api/v1/system/backups/targets/{sys_id}"))
        .await
        .expect(204);
    assert!(t.bed.store.target(sys_id).await.is_err());
    t.cleanup().await;
}

#[tokio::test]
async fn the_default_moves_and_used_targets_cannot_be_deleted() {
    let t = ApiBed::start("web").await;
    let org = t.org("def").await;
    let mk = |name: &str, default: bool| json!({"name": name, "type": "s3", "config": t.bed.bucket.target_json(None), "isDefault": default});
    let a = org
        .api
        .post(&org.path("/backups/targets"), &mk("a", true))
        .await
        .expect(201)
        .id();
    let b = org
        .api
        .post(&org.path("/backups/targets"), &mk("b", true))
        .await
        .expect(201)
        .id();
    let defaults = |rows: Vec<tokio_postgres::Row>| -> Vec<uuid::Uuid> {
        rows.iter().map(|r| r.get(0)).collect()
    };
    let db = t.bed.db.client().await.expect("db");
    let q = "SELECT id FROM backup_target WHERE organization_id = $1 AND is_default";
    assert_eq!(defaults(db.query(q, &[&org.id]).await.expect("q")), vec![b]);
    org.api
        .put(&org.path(&format!("/backups/targets/{a}")), &mk("a", true))
        .await
        .expect(200);
    assert_eq!(defaults(db.query(q, &[&org.id]).await.expect("q")), vec![a]);
    // A duplicate name is a 409 on the name.
    let dup = org
        .api
        .post(&org.path("/backups/targets"), &mk("a", false))
        .await
        .expect(409);
    assert_eq!(dup.field(), Some("name"));

    let job = org
        .api
        .post(
            &org.path("/backups/jobs"),
            &json!({"name": "nightly", "schedule": "0 2 * * *", "targetId": a}),
        )
        .await
        .expect(201)
        .id();
    let r = org
        .api
        .delete(&org.path(&format!("/backups/targets/{a}")))
        .await
        .expect(409);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nightly") && m.contains(&job.to_string())),
        "{}",
        r.text
    );
    assert!(t.bed.store.target(a).await.is_ok());
    org.api
        .delete(&org.path(&format!("/backups/targets/{b}")))
        .await
        .expect(204);
    assert!(t.bed.store.target(b).await.is_err());
    org.api
        .delete(&org.path(&format!("/backups/targets/{b}")))
        .await
        .expect(404);
    t.cleanup().await;
}

#[tokio::test]
async fn local_targets_are_refused_unless_allowed() {
    let t = ApiBed::start_with("web", &[("ALLOW_LOCAL_BACKUPS", "false")]).await;
    let org = t.org("loc").await;
    let r = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "l", "type": "local", "config": t.bed.local_config()}),
        )
        .await
        .expect(422);
    assert_eq!(r.field(), Some("type"));
    let n: i64 = t
        .bed
        .db
        .client()
        .await
        .expect("db")
        .query_one("SELECT count(*) FROM backup_target", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    t.cleanup().await;
}

/// A target's age encryption through the API: recipients stored in their canonical form and
/// shown with fingerprints (never an identity), bad recipients refused naming the field, a PUT
/// without `encryption` keeping it, `{"type": "none"}` turning it off.
#[tokio::test]
async fn target_encryption_round_trips_is_validated_and_kept_by_a_put_without_it() {
    let t = ApiBed::start("web").await;
    let org = t.org("enc").await;
    let recipient = vardo_actors::encryption::Keyring::generate().1;
    let ssh =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB/VHtZlwD+C ops@host";
    let config = t.bed.bucket.target_json(None);
    let created = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "sealed", "type": "s3", "config": config,
                    "encryption": {"type": "age", "recipients": [format!(" {recipient} "), ssh]}}),
        )
        .await
        .expect(201);
    let id = created.id();
    let enc = &created.body["encryption"];
    assert_eq!(enc["type"], "age");
    assert_eq!(enc["recipients"][0]["recipient"], recipient.as_str());
    assert_eq!(
        enc["recipients"][0]["fingerprint"],
        vardo_actors::encryption::fingerprint(&recipient).as_str()
    );
    assert!(
        !enc["recipients"][1]["recipient"]
            .as_str()
            .unwrap_or("ops@host")
            .contains("ops@host"),
        "{enc}"
    );
    let stored = t.bed.store.target(id).await.expect("target");
    assert!(stored.sealing.is_some());

    for (bad, field) in [
        (json!({"type": "age", "recipients": []}), "encryption"),
        (
            json!({"type": "age", "recipients": ["age1notakey"]}),
            "encryption",
        ),
        (
            json!({"type": "age", "recipients": [recipient, recipient]}),
            "encryption",
        ),
    ] {
        let r = org
            .api
            .post(
                &org.path("/backups/targets"),
                &json!({"name": "bad", "type": "s3", "config": config, "encryption": bad}),
            )
            .await
            .expect(422);
        assert_eq!(r.field(), Some(field), "{bad}");
    }
    let r = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "bad", "type": "s3", "config": config,
                    "encryption": {"type": "gpg", "recipients": []}}),
        )
        .await;
    assert!(
        r.status >= 400 && r.status < 500,
        "an unknown type is refused"
    );

    // A PUT without `encryption` keeps it; `none` turns it off.
    let mut masked = created.body["config"].clone();
    masked["prefix"] = json!("p2");
    let put = org
        .api
        .put(
            &org.path(&format!("/backups/targets/{id}")),
            &json!({"name": "sealed", "type": "s3", "config": masked}),
        )
        .await
        .expect(200);
    assert_eq!(put.body["encryption"]["type"], "age");
    let put = org
        .api
        .put(
            &org.path(&format!("/backups/targets/{id}")),
            &json!({"name": "sealed", "type": "s3", "config": masked, "encryption": {"type": "none"}}),
        )
        .await
        .expect(200);
    assert_eq!(put.body["encryption"]["type"], "none");
    assert!(t
        .bed
        .store
        .target(id)
        .await
        .expect("target")
        .sealing
        .is_none());
    t.cleanup().await;
}

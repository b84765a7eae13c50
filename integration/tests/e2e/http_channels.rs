//! Control plane: notification channels — created with their config checked, secrets (webhook
//! secret, URLs with tokens) sealed at rest and masked in responses, listed, deleted.

use serde_json::json;
use vardo_integration::http::{stored_secret, ApiBed};

#[tokio::test]
async fn channels_are_created_masked_listed_and_deleted() {
    let t = ApiBed::start("web").await;
    let org = t.org("ch").await;
    let token_path = format!("T000/B000/tok{}", t.bed.id);
    let secret = format!("whsec-{}", t.bed.id);
    stored_secret(&token_path);
    stored_secret(&secret);
    let hook = org
        .api
        .post(
            &org.path("/notifications/channels"),
            &json!({"kind": "webhook", "config": {"url": format!("https://hooks.example.com/{token_path}"), "secret": secret}}),
        )
        .await
        .expect(201);
    assert_eq!(hook.body["kind"], "webhook");
    assert_eq!(hook.body["config"]["secret"], "********");
    assert_eq!(
        hook.body["config"]["url"],
        "https://hooks.example.com/********"
    );
    let email = org
        .api
        .post(
            &org.path("/notifications/channels"),
            &json!({"kind": "email", "config": {"to": ["ops@example.com"]}}),
        )
        .await
        .expect(201);
    assert_eq!(email.body["config"]["to"], json!(["ops@example.com"]));

    let raw: serde_json::Value = t
        .bed
        .db
        .client()
        .await
        .expect("db")
        .query_one(
            "SELECT config FROM notification_channel WHERE id = $1",
            &[&hook.id()],
        )
        .await
        .expect("row")
        .get(0);
    assert!(!raw.to_string().contains(&secret) && !raw.to_string().contains(&token_path));

    let list = org
        .api
        .get(&org.path("/notifications/channels"))
        .await
        .expect(200);
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(2));

    for (bad, field) in [
        (
            json!({"kind": "email", "config": {"to": ["not an address"]}}),
            "config.to[0]",
        ),
        (json!({"kind": "email", "config": {"to": []}}), "config.to"),
        (
            json!({"kind": "webhook", "config": {"url": "ftp://x"}}),
            "config.url",
        ),
        (
            json!({"kind": "webhook", "config": {"url": "http://127.0.0.1/x"}}),
            "config.url",
        ),
        (json!({"kind": "sms", "config": {}}), "kind"),
        (
            json!({"kind": "slack", "config": {"url": "https://hooks.slack.com/x", "channel": "#a"}}),
            "config.channel",
        ),
    ] {
        let r = org
            .api
            .post(&org.path("/notifications/channels"), &bad)
            .await
            .expect(422);
        assert_eq!(r.field(), Some(field), "{bad}: {}", r.text);
    }

    org.api
        .delete(&org.path(&format!("/notifications/channels/{}", hook.id())))
        .await
        .expect(204);
    org.api
        .delete(&org.path(&format!("/notifications/channels/{}", hook.id())))
        .await
        .expect(404);
    let list = org
        .api
        .get(&org.path("/notifications/channels"))
        .await
        .expect(200);
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    t.cleanup().await;
}

//! Control plane: organizations and tokens (admin token), and authentication — no or a bad token
//! is a 401, an organization token on an admin route a 403.

use serde_json::json;
use sha2::Digest as _;
use vardo_integration::http::{Api, ApiBed};

#[tokio::test]
async fn admin_creates_and_lists_organizations_a_page_at_a_time() {
    let t = ApiBed::start("web").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let slug = format!("o{i}-{}", t.bed.id);
        let r = t
            .admin
            .post(
                "/api/v1/organizations",
                &json!({"slug": slug, "name": format!("Org {i}")}),
            )
            .await
            .expect(201);
        assert_eq!(r.body["slug"], slug.as_str());
        assert_eq!(r.body["name"], format!("Org {i}").as_str());
        assert!(
            r.body["createdAt"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z')),
            "{}",
            r.text
        );
        let id = r.id();
        let stored = t.bed.store.organization(id).await.expect("the row exists");
        assert_eq!(stored.slug, slug);
        ids.push(id);
    }
    // A taken slug is a 409 naming the field.
    let dup = t
        .admin
        .post(
            "/api/v1/organizations",
            &json!({"slug": format!("o0-{}", t.bed.id), "name": "x"}),
        )
        .await
        .expect(409);
    assert_eq!(dup.field(), Some("slug"));

    let first = t
        .admin
        .get("/api/v1/organizations?limit=2")
        .await
        .expect(200);
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(2));
    let cursor = first.body["nextCursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = t
        .admin
        .get(&format!("/api/v1/organizations?limit=2&cursor={cursor}"))
        .await
        .expect(200);
    assert_eq!(second.body["items"].as_array().map(Vec::len), Some(1));
    assert!(second.body["nextCursor"].is_null());
    let seen: Vec<String> = first.body["items"]
        .as_array()
        .into_iter()
        .chain(second.body["items"].as_array())
        .flatten()
        .map(|o| o["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(seen, ids.iter().map(|i| i.to_string()).collect::<Vec<_>>());
    t.cleanup().await;
}

#[tokio::test]
async fn an_organization_token_is_shown_once_and_stored_as_its_hash() {
    let t = ApiBed::start("web").await;
    let org = t.org("tok").await;
    let client = t.bed.db.client().await.expect("db");
    let rows = client
        .query(
            "SELECT token_hash FROM api_token WHERE organization_id = $1",
            &[&org.id],
        )
        .await
        .expect("query");
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    assert_eq!(
        stored,
        hex::encode(sha2::Sha256::digest(org.token.as_bytes()))
    );
    assert_ne!(stored, org.token);
    // The token works on its organization's routes.
    org.api.get(&org.path("/backups/targets")).await.expect(200);
    t.cleanup().await;
}

#[tokio::test]
async fn missing_or_bad_tokens_are_401_and_org_tokens_cannot_administer() {
    let t = ApiBed::start("web").await;
    let org = t.org("auth").await;
    let anonymous = Api::new(&t.server.base_url, None);
    let bad = Api::new(&t.server.base_url, Some("vardo_not-a-real-token"));
    let paths = [
        "/api/v1/organizations".to_owned(),
        org.path("/backups/targets"),
        org.path("/backups/jobs"),
        "/api/v1/system/backups/targets".to_owned(),
    ];
    for path in &paths {
        for client in [&anonymous, &bad] {
            let r = client.get(path).await.expect(401);
            assert_eq!(r.code(), Some("unauthorized"));
        }
    }
    // Wrong scheme.
    let r = reqwest::Client::new()
        .get(format!(
            "{}{}",
            t.server.base_url,
            org.path("/backups/jobs")
        ))
        .header("authorization", format!("Basic {}", org.token))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 401);

    // Organization tokens on admin routes: 403, and nothing created.
    org.api
        .post(
            "/api/v1/organizations",
            &json!({"slug": format!("x-{}", t.bed.id), "name": "x"}),
        )
        .await
        .expect(403);
    org.api.get("/api/v1/organizations").await.expect(403);
    org.api.post_empty(&org.path("/tokens")).await.expect(403);
    let n: i64 = t
        .bed
        .db
        .client()
        .await
        .expect("db")
        .query_one("SELECT count(*) FROM organization", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);
    // The OpenAPI document and health are public.
    anonymous.get("/api/v1/openapi.json").await.expect(200);
    anonymous.get("/healthz").await.expect(200);
    t.cleanup().await;
}

#[tokio::test]
async fn bad_organization_input_names_the_field() {
    let t = ApiBed::start("web").await;
    let cases = [
        (json!({"slug": "Has Caps", "name": "x"}), "slug"),
        (json!({"slug": "", "name": "x"}), "slug"),
        (
            json!({"slug": format!("ok-{}", t.bed.id), "name": " "}),
            "name",
        ),
        (json!({"slug": 5, "name": "x"}), "slug"),
        (json!({"name": "x"}), "slug"),
        (
            json!({"slug": format!("ok-{}", t.bed.id), "name": "x", "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let r = t.admin.post("/api/v1/organizations", &body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.field(), Some(field), "{body}: {}", r.text);
    }
    let r = t
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/organizations",
            Some(b"{\"slug\":".to_vec()),
        )
        .await
        .expect(400);
    assert_eq!(r.code(), Some("malformed_json"));
    t.cleanup().await;
}

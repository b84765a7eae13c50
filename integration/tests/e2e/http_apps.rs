//! Control plane: the app registry — PUT creates (201) or replaces (200) an app and its volumes,
//! GET reads it, DELETE removes it; an app id of another organization is never touched.

use serde_json::json;
use vardo_actors::model::VolumeKind;
use vardo_integration::http::ApiBed;

#[tokio::test]
async fn apps_are_put_read_listed_and_deleted() {
    let t = ApiBed::start("web").await;
    let org = t.org("apps").await;
    let id = format!("web-{}", t.bed.id);
    let body = json!({"name": format!("web{}", t.bed.id), "volumes": [
        {"name": "data", "persistent": true, "kind": "postgres"},
        {"name": "cache", "persistent": false, "kind": "generic"},
    ]});
    let created = org
        .api
        .put(&org.path(&format!("/apps/{id}")), &body)
        .await
        .expect(201);
    assert_eq!(created.body["id"], id.as_str());
    let app = t.bed.store.app(&id).await.expect("row");
    assert_eq!(app.organization_id, org.id);
    assert_eq!(app.volumes.len(), 2);
    let data = app.volumes.iter().find(|v| v.name == "data").expect("data");
    assert!(data.persistent && data.kind == VolumeKind::Postgres);

    let replaced = org
        .api
        .put(
            &org.path(&format!("/apps/{id}")),
            &json!({"name": "renamed", "volumes": [{"name": "files"}]}),
        )
        .await
        .expect(200);
    assert_eq!(
        replaced.body["volumes"],
        json!([{"name": "files", "persistent": true, "kind": "generic"}])
    );
    let app = t.bed.store.app(&id).await.expect("row");
    assert_eq!(app.name, "renamed");
    assert_eq!(app.volumes.len(), 1);

    let got = org
        .api
        .get(&org.path(&format!("/apps/{id}")))
        .await
        .expect(200);
    assert_eq!(got.body["name"], "renamed");
    let list = org.api.get(&org.path("/apps")).await.expect(200);
    assert_eq!(list.body["items"][0]["id"], id.as_str());

    for (bad, field) in [
        (json!({"name": "has space"}), "name"),
        (
            json!({"name": "ok", "volumes": [{"name": "a"}, {"name": "a"}]}),
            "volumes[1].name",
        ),
        (
            json!({"name": "ok", "volumes": [{"name": "a", "kind": "mysql"}]}),
            "volumes[0].kind",
        ),
        (
            json!({"name": "ok", "volumes": [{"name": "a", "persistent": "yes"}]}),
            "volumes[0].persistent",
        ),
    ] {
        let r = org
            .api
            .put(&org.path(&format!("/apps/{id}")), &bad)
            .await
            .expect(422);
        assert_eq!(r.field(), Some(field), "{bad}");
    }

    // Another organization cannot take or change this id.
    let other = t.org("other").await;
    other
        .api
        .put(
            &other.path(&format!("/apps/{id}")),
            &json!({"name": "stolen"}),
        )
        .await
        .expect(404);
    other
        .api
        .delete(&other.path(&format!("/apps/{id}")))
        .await
        .expect(404);
    assert_eq!(t.bed.store.app(&id).await.expect("row").name, "renamed");

    org.api
        .delete(&org.path(&format!("/apps/{id}")))
        .await
        .expect(204);
    assert!(t.bed.store.app(&id).await.is_err());
    org.api
        .get(&org.path(&format!("/apps/{id}")))
        .await
        .expect(404);
    t.cleanup().await;
}

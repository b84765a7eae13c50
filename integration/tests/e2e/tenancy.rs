//! Names are authority: organization B tries every way it has to reach organization A's Docker
//! volume — the same app name, names crafted to form the same Docker volume name, A's app id, a
//! job naming A's app, and rows that point at A's names (as registrations from before claims
//! existed could) — and nothing of A's is read or written. Each attempt is refused with a 4xx
//! naming why, or a failed row or restore naming why.

use serde_json::json;
use vardo_actors::model::Status;
use vardo_integration::http::ApiBed;
use vardo_integration::{describe, eventually, trees, volumes};

#[tokio::test]
async fn another_organization_never_reaches_a_volume_by_any_name() {
    let api = ApiBed::start("all").await;
    let bed = &api.bed;
    let a = api.org("a").await;
    let b = api.org("b").await;
    let theirs = api.backed_up(&a, "blog", "local").await;
    let a_volume = format!("{}-blue_files", theirs.app_name);
    let a_before = trees::read(&bed.docker, &a_volume).await;
    let a_rows_before = bed
        .store
        .run_backups(theirs.rows[0].run_id)
        .await
        .expect("rows");

    // The same app name and volume: the Docker volume is A's.
    let same = b
        .api
        .put(
            &b.path(&format!("/apps/mine-{}", bed.id)),
            &json!({"name": theirs.app_name, "volumes": [{"name": "files", "persistent": true}]}),
        )
        .await
        .expect(409);
    assert_eq!(same.field(), Some("volumes[0].name"), "{:?}", same.body);
    let message = same.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&a_volume) && message.contains("another organization"),
        "{message}"
    );
    assert!(
        !message.contains(&theirs.app_id),
        "A's app id is not revealed: {message}"
    );

    // Crafted names that form one Docker volume name: x + `y-blue_z` and `x-blue_y` + z.
    let x = format!("x{}", bed.id);
    a.api
        .put(
            &a.path(&format!("/apps/x-{}", bed.id)),
            &json!({"name": x, "volumes": [{"name": "y-blue_z", "persistent": true}]}),
        )
        .await
        .expect(201);
    let crafted = b
        .api
        .put(
            &b.path(&format!("/apps/crafted-{}", bed.id)),
            &json!({"name": format!("{x}-blue_y"), "volumes": [{"name": "z", "persistent": true}]}),
        )
        .await
        .expect(409);
    assert!(
        crafted.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{x}-blue_y-blue_z"))),
        "{:?}",
        crafted.body
    );

    // A's app id: answered as an unknown app; a job naming A's app: refused.
    b.api
        .put(
            &b.path(&format!("/apps/{}", theirs.app_id)),
            &json!({"name": format!("other{}", bed.id), "volumes": []}),
        )
        .await
        .expect(404);
    b.api
        .post(
            &b.path("/backups/jobs"),
            &json!({"name": "steal", "schedule": "0 2 * * *", "appIds": [theirs.app_id], "keepAll": true}),
        )
        .await
        .expect(422);

    // A registration from before names were claimed: B's app row names A's Docker volume.
    let db = bed.db.client().await.expect("db");
    let legacy = format!("legacy-{}", bed.id);
    db.execute(
        "INSERT INTO app (id, organization_id, name) VALUES ($1, $2, $3)",
        &[&legacy, &b.id, &theirs.app_name],
    )
    .await
    .expect("legacy app");
    db.execute(
        "INSERT INTO volume (app_id, name, persistent, kind) VALUES ($1, 'files', true, 'generic')",
        &[&legacy],
    )
    .await
    .expect("legacy volume");
    let mine = api.backed_up(&b, "own", "local").await;
    let job = b
        .api
        .post(
            &b.path("/backups/jobs"),
            &json!({"name": "legacy", "schedule": "0 2 * * *", "targetId": mine.target,
                "appIds": [legacy], "keepAll": true}),
        )
        .await
        .expect(201)
        .id();
    let (out, rows) = bed.run_job(job).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, Status::Failed);
    assert!(
        rows[0].log.contains(&a_volume) && rows[0].log.contains("another app holds that name"),
        "{}",
        rows[0].log
    );
    assert!(rows[0].storage_path.is_none(), "nothing was stored");

    // A restore of B's own backup whose row names A's volume (B's row, rewritten as an old row
    // of the legacy app would read): refused, A's volume untouched.
    let forged = mine.rows[0].id;
    db.execute(
        "UPDATE backup SET app_id = $2, app_name = $3 WHERE id = $1",
        &[&forged, &legacy, &theirs.app_name],
    )
    .await
    .expect("forge");
    let restore = b
        .api
        .post_empty(&b.path(&format!("/backups/history/{forged}/restore")))
        .await
        .expect(202)
        .id();
    let ended = eventually(
        std::time::Duration::from_secs(60),
        "the restore ends",
        || {
            let api = b.api.clone();
            let path = b.path(&format!("/backups/restores/{restore}"));
            async move {
                let r = api.get(&path).await;
                let status = r.body["status"].as_str()?.to_owned();
                (status == "failed" || status == "success").then_some(r.body)
            }
        },
    )
    .await;
    assert_eq!(ended["status"], "failed", "{ended}");
    assert!(
        ended["log"]
            .as_str()
            .is_some_and(|l| l.contains("another app holds that name")),
        "{ended}"
    );

    // Nothing of A's changed: the volume, and A's rows.
    assert_eq!(trees::read(&bed.docker, &a_volume).await, a_before);
    let a_rows_after = bed
        .store
        .run_backups(theirs.rows[0].run_id)
        .await
        .expect("rows");
    assert_eq!(
        a_rows_after
            .iter()
            .map(|r| (&r.id, r.status, &r.storage_path))
            .collect::<Vec<_>>(),
        a_rows_before
            .iter()
            .map(|r| (&r.id, r.status, &r.storage_path))
            .collect::<Vec<_>>()
    );
    api.cleanup().await;
}

#[tokio::test]
async fn a_volume_labelled_for_another_app_is_never_read() {
    let api = ApiBed::start("web").await;
    let bed = &api.bed;
    let a = api.org("a").await;
    let app_id = format!("lab-{}", bed.id);
    let app_name = format!("lab{}", bed.id);
    a.api
        .put(
            &a.path(&format!("/apps/{app_id}")),
            &json!({"name": app_name, "volumes": [{"name": "files", "persistent": true}]}),
        )
        .await
        .expect(201);
    // The deploy pipeline labelled this volume for another app.
    let volume = bed.track_volume(&format!("{app_name}-blue_files"));
    bed.docker
        .create_labelled_volume(
            &volume,
            std::collections::HashMap::from([(
                vardo_actors::ownership::APP_LABEL.to_owned(),
                "someone-else".to_owned(),
            )]),
        )
        .await
        .expect("volume");
    volumes::sh(&bed.docker, &volume, "echo private > /volume/p")
        .await
        .expect("populate");
    let target = a
        .api
        .post(
            &a.path("/backups/targets"),
            &json!({"name": "t", "type": "local", "config": bed.local_config()}),
        )
        .await
        .expect(201)
        .id();
    let job = a
        .api
        .post(
            &a.path("/backups/jobs"),
            &json!({"name": "j", "schedule": "0 2 * * *", "targetId": target, "appIds": [app_id], "keepAll": true}),
        )
        .await
        .expect(201)
        .id();
    let (out, rows) = bed.run_job(job).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(rows[0].status, Status::Failed);
    assert!(
        rows[0]
            .log
            .contains("labelled vardo-backup.app=someone-else"),
        "{}",
        rows[0].log
    );
    assert!(rows[0].storage_path.is_none());
    api.cleanup().await;
}

#[tokio::test]
async fn a_stored_object_is_reserved_for_one_row() {
    let bed = vardo_integration::TestBed::new().await;
    let first = uuid::Uuid::new_v4();
    let location = format!("fs:local:/backups/{}", first);
    assert!(bed
        .store
        .reserve_object(&location, first)
        .await
        .expect("reserve"));
    assert!(
        !bed.store
            .reserve_object(&location, uuid::Uuid::new_v4())
            .await
            .expect("reserve"),
        "a second row cannot take the same object"
    );
    bed.cleanup().await;
}

//! Names are authority: organization B tries every way it has to reach organization A's Docker
//! volume — the same app name, names crafted to form the same Docker volume name, A's app id, a
//! job naming A's app, and rows that point at A's names (as registrations from before claims
//! existed could) — and nothing of A's is read or written. Each attempt is refused with a 4xx
//! naming why, or a failed row or restore naming why.

use serde_json::{json, Value};
use uuid::Uuid;
use vardo_actors::model::Status;
use vardo_actors::ownership::{Owner, APP_LABEL, ORGANIZATION_LABEL};
use vardo_integration::http::{ApiBed, Org};
use vardo_integration::{describe, eventually, trees, volumes};

/// Restores `backup` as `org` and waits for the restore to end; its body.
async fn restored(org: &Org, backup: Uuid) -> Value {
    let restore = org
        .api
        .post_empty(&org.path(&format!("/backups/history/{backup}/restore")))
        .await
        .expect(202)
        .id();
    eventually(
        std::time::Duration::from_secs(60),
        "the restore ends",
        || {
            let api = org.api.clone();
            let path = org.path(&format!("/backups/restores/{restore}"));
            async move {
                let r = api.get(&path).await;
                let status = r.body["status"].as_str()?.to_owned();
                (status == "failed" || status == "success").then_some(r.body)
            }
        },
    )
    .await
}

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
    let ended = restored(&b, forged).await;
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
    let job = local_job(bed, &a, &app_id).await;
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

/// B's registration, refused with 409 as a name held by another organization; nothing of A's is
/// named and B's app is not recorded.
async fn refused(api: &ApiBed, b: &Org, a: &Org, id: &str, body: Value, docker_volume: &str) {
    let a_apps = [
        format!("web-{}", api.bed.id),
        format!("again-{}", api.bed.id),
    ];
    let reply = b
        .api
        .put(&b.path(&format!("/apps/{id}")), &body)
        .await
        .expect(409);
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(docker_volume) && message.contains("another organization"),
        "{message}"
    );
    let a_names = [a.id.to_string(), a.slug.clone()];
    for secret in a_names.iter().chain(&a_apps) {
        assert!(
            !message.contains(secret.as_str()),
            "A is not revealed: {message}"
        );
    }
    b.api.get(&b.path(&format!("/apps/{id}"))).await.expect(404);
    assert!(
        api.bed.store.app(id).await.is_err(),
        "{id} was not recorded"
    );
}

#[tokio::test]
async fn a_deleted_or_renamed_apps_names_stay_with_its_organization() {
    let api = ApiBed::start("all").await;
    let bed = &api.bed;
    let a = api.org("a").await;
    let b = api.org("b").await;
    let theirs = api.backed_up(&a, "web", "local").await;
    let name = theirs.app_name.clone();
    let a_volume = format!("{name}-blue_files");
    // A second volume whose Docker name a crafted app name forms too.
    let volumes =
        json!([{"name": "files", "persistent": true}, {"name": "y-blue_z", "persistent": true}]);
    a.api
        .put(
            &a.path(&format!("/apps/{}", theirs.app_id)),
            &json!({"name": name, "volumes": volumes}),
        )
        .await
        .expect(200);
    let a_before = trees::read(&bed.docker, &a_volume).await;
    a.api
        .delete(&a.path(&format!("/apps/{}", theirs.app_id)))
        .await
        .expect(204);

    // After the delete (the Docker volume stays): A's name, A's free app id, a crafted name.
    let same_name = json!({"name": name, "volumes": [{"name": "files", "persistent": true}]});
    let mine = format!("mine-{}", bed.id);
    refused(&api, &b, &a, &mine, same_name.clone(), &a_volume).await;
    refused(&api, &b, &a, &theirs.app_id, same_name.clone(), &a_volume).await;
    let crafted =
        json!({"name": format!("{name}-blue_y"), "volumes": [{"name": "z", "persistent": true}]});
    let crafted_volume = format!("{name}-blue_y-blue_z");
    refused(&api, &b, &a, &mine, crafted.clone(), &crafted_volume).await;

    // A takes its names again under another id, then renames that app: still A's.
    let again = format!("again-{}", bed.id);
    a.api
        .put(&a.path(&format!("/apps/{again}")), &same_name)
        .await
        .expect(201);
    a.api
        .put(
            &a.path(&format!("/apps/{again}")),
            &json!({"name": format!("renamed{}", bed.id), "volumes": [{"name": "files", "persistent": true}]}),
        )
        .await
        .expect(200);
    refused(&api, &b, &a, &mine, same_name.clone(), &a_volume).await;
    refused(&api, &b, &a, &theirs.app_id, same_name.clone(), &a_volume).await;
    refused(&api, &b, &a, &mine, crafted, &crafted_volume).await;
    assert_eq!(trees::read(&bed.docker, &a_volume).await, a_before);

    // A registers its app under its old id again and restores its old backup into its volume.
    a.api
        .put(&a.path(&format!("/apps/{}", theirs.app_id)), &same_name)
        .await
        .expect(201);
    volumes::sh(&bed.docker, &a_volume, "echo changed > /volume/r")
        .await
        .expect("change");
    let ended = restored(&a, theirs.rows[0].id).await;
    assert_eq!(ended["status"], "success", "{ended}");
    assert_eq!(trees::read(&bed.docker, &a_volume).await, a_before);
    api.cleanup().await;
}

#[tokio::test]
async fn a_volume_labelled_for_another_organization_is_never_read() {
    let api = ApiBed::start("web").await;
    let bed = &api.bed;
    let a = api.org("a").await;
    let b = api.org("b").await;
    let app_id = format!("olab-{}", bed.id);
    let app_name = format!("olab{}", bed.id);
    a.api
        .put(
            &a.path(&format!("/apps/{app_id}")),
            &json!({"name": app_name, "volumes": [{"name": "files", "persistent": true}]}),
        )
        .await
        .expect(201);
    // Labelled for this app id, but for organization B.
    let volume = bed.track_volume(&format!("{app_name}-blue_files"));
    bed.docker
        .create_labelled_volume(
            &volume,
            std::collections::HashMap::from([
                (APP_LABEL.to_owned(), app_id.clone()),
                (ORGANIZATION_LABEL.to_owned(), b.id.to_string()),
            ]),
        )
        .await
        .expect("volume");
    volumes::sh(&bed.docker, &volume, "echo private > /volume/p")
        .await
        .expect("populate");
    let job = local_job(bed, &a, &app_id).await;
    let (out, rows) = bed.run_job(job).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(rows[0].status, Status::Failed);
    assert!(
        rows[0].log.contains(&format!(
            "labelled {ORGANIZATION_LABEL} for another organization"
        )),
        "{}",
        rows[0].log
    );
    assert!(!rows[0].log.contains(&b.id.to_string()), "{}", rows[0].log);
    assert!(rows[0].storage_path.is_none());
    api.cleanup().await;
}

#[tokio::test]
async fn the_legacy_backfill_runs_once_and_a_lost_name_is_never_handed_over() {
    let bed = vardo_integration::TestBed::new().await;
    let db = bed.db.client().await.expect("db");
    let a = bed
        .store
        .upsert_organization(&format!("a-{}", bed.id), None)
        .await
        .expect("org");
    let b = bed
        .store
        .upsert_organization(&format!("b-{}", bed.id), None)
        .await
        .expect("org");
    // A database from before claims named their organization, or were kept after a delete (and
    // from before the schema's digest was recorded).
    db.batch_execute(
        "DROP TABLE docker_volume_claim; DROP TABLE schema_marker; DROP TABLE schema_digest;
         CREATE TABLE docker_volume_claim (
             name text PRIMARY KEY,
             app_id text NOT NULL REFERENCES app (id) ON DELETE CASCADE,
             volume_name text NOT NULL)",
    )
    .await
    .expect("the old shape");
    let name = format!("old{}", bed.id);
    let docker_volume = format!("{name}-blue_files");
    // A registered the name first; B's app loses it in the backfill.
    let a_app = format!("a-old-{}", bed.id);
    let b_app = format!("b-old-{}", bed.id);
    legacy_app(&db, &a_app, a.id, &name, "2 days").await;
    legacy_app(&db, &b_app, b.id, &name, "1 day").await;
    bed.store.migrate().await.expect("the upgrade");
    let claim = bed.store.volume_claim(&docker_volume).await.expect("claim");
    assert_eq!(
        claim.map(|c| (c.app_id, c.organization_id)),
        Some((Some(a_app.clone()), a.id))
    );

    // A deletes its app; then the schema is applied twice more (two restarts).
    assert!(bed.store.delete_app(a.id, &a_app).await.expect("delete"));
    let late = format!("late-{}", bed.id);
    legacy_app(&db, &late, b.id, &format!("late{}", bed.id), "0 days").await;
    bed.store.migrate().await.expect("migrate");
    bed.store.migrate().await.expect("migrate");

    let claim = bed.store.volume_claim(&docker_volume).await.expect("claim");
    assert_eq!(
        claim.map(|c| (c.app_id, c.organization_id)),
        Some((None, a.id)),
        "the name stays A's"
    );
    let owner = Owner {
        organization_id: b.id,
        app_id: &b_app,
        app_name: &name,
        volume_name: "files",
    };
    let refused = owner.candidates(&bed.store).await.expect_err("not B's");
    assert!(
        refused.to_string().contains("another app holds that name"),
        "{refused}"
    );
    // The backfill ran once: an app without claims written since gets none at a restart.
    assert_eq!(
        bed.store
            .volume_claim(&format!("late{}-blue_files", bed.id))
            .await
            .expect("claim"),
        None
    );
    bed.cleanup().await;
}

/// An app with a volume `files`, written as a registration from before claims existed was.
async fn legacy_app(db: &tokio_postgres::Client, id: &str, org: Uuid, name: &str, age: &str) {
    db.execute(
        "INSERT INTO app (id, organization_id, name, created_at)
         VALUES ($1, $2, $3, now() - $4::text::interval)",
        &[&id, &org, &name, &age],
    )
    .await
    .expect("legacy app");
    db.execute(
        "INSERT INTO volume (app_id, name) VALUES ($1, 'files')",
        &[&id],
    )
    .await
    .expect("legacy volume");
}

/// Through the API: a local target of `org` and a job on it covering `app_id`.
async fn local_job(
    bed: &vardo_integration::TestBed,
    org: &vardo_integration::http::Org,
    app_id: &str,
) -> uuid::Uuid {
    let target = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "t", "type": "local", "config": bed.local_config()}),
        )
        .await
        .expect(201)
        .id();
    org.api
        .post(
            &org.path("/backups/jobs"),
            &json!({"name": "j", "schedule": "0 2 * * *", "targetId": target, "appIds": [app_id], "keepAll": true}),
        )
        .await
        .expect(201)
        .id()
}

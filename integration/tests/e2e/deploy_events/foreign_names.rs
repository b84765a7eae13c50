//! `app.deployed` naming Docker volumes another organization's app holds: refused (dead-lettered
//! with the reason), nothing recorded, the other app and its volume untouched — also after the
//! other app was deleted with `app.deleted`, while its Docker volume stays.

use serde_json::json;
use vardo_actors::model::{TargetKind, VolumeKind};
use vardo_integration::process::Server;
use vardo_integration::TestBed;

use super::support::*;

#[tokio::test]
async fn app_deployed_with_another_organizations_docker_names_is_refused() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    bed.target(None, TargetKind::Local, bed.local_config())
        .await;
    let theirs_org = bed
        .store
        .upsert_organization(&format!("theirs-{}", bed.id), None)
        .await
        .expect("org");
    let theirs = bed
        .app(&theirs_org, "blog", &[("uploads", VolumeKind::Generic)])
        .await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let slug = format!("org-{}", bed.id);
    // Same name and volume; then `x` + `y-blue_z` against their `x-blue_y` + `z`.
    let x = format!("x{}", bed.id);
    bed.store
        .upsert_app(&vardo_actors::model::App {
            id: format!("xy-{}", bed.id),
            organization_id: theirs_org.id,
            name: format!("{x}-blue_y"),
            volumes: vec![vardo_actors::model::Volume {
                name: "z".into(),
                persistent: true,
                kind: VolumeKind::Generic,
            }],
        })
        .await
        .expect("their crafted app");
    let attempts = [
        deployed(
            &slug,
            &format!("mine-{}", bed.id),
            &theirs.name,
            json!([{"name": "uploads", "persistent": true, "kind": "generic"}]),
        ),
        deployed(
            &slug,
            &format!("crafted-{}", bed.id),
            &x,
            json!([{"name": "y-blue_z", "persistent": true, "kind": "generic"}]),
        ),
    ];
    let mut ids = Vec::new();
    for event in &attempts {
        ids.push(streams.send("app.deployed", event).await);
    }
    for id in &ids {
        streams.settled(id).await;
    }
    let dead = streams.range(&streams.dead).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    for ((_, fields), taken) in dead.iter().zip([
        format!("{}-blue_uploads", theirs.name),
        format!("{x}-blue_y-blue_z"),
    ]) {
        let error = fields.get("error").cloned().unwrap_or_default();
        assert!(
            error.contains(&taken) && error.contains("another organization"),
            "{error}"
        );
    }
    for id in [format!("mine-{}", bed.id), format!("crafted-{}", bed.id)] {
        assert!(bed.store.app(&id).await.is_err(), "{id} was not recorded");
    }
    assert_eq!(
        bed.store
            .app(&theirs.id)
            .await
            .expect("theirs")
            .volumes
            .len(),
        1,
        "their app is untouched"
    );
    assert_eq!(jobs_in_org(&bed, &slug).await, 0, "no auto job");
    streams.cleanup(vec![engine]).await;
}

#[tokio::test]
async fn app_deleted_keeps_the_organizations_names_from_another_organization() {
    let bed = TestBed::new().await;
    let streams = Streams::new(&bed).await;
    let engine = Server::spawn(&["--role", "scheduler"], &streams.env(&bed, &[])).expect("engine");
    let a = format!("a-{}", bed.id);
    let b = format!("b-{}", bed.id);
    let app_id = format!("gone-{}", bed.id);
    let name = format!("gone{}", bed.id);
    let data = json!([{"name": "data", "persistent": true, "kind": "generic"}]);
    let volume = bed.track_volume(&format!("{name}-blue_data"));
    bed.docker.create_volume(&volume).await.expect("volume");
    vardo_integration::volumes::sh(&bed.docker, &volume, "echo private > /volume/p")
        .await
        .expect("populate");
    let before = vardo_integration::trees::read(&bed.docker, &volume).await;
    let id = streams
        .send("app.deployed", &deployed(&a, &app_id, &name, data.clone()))
        .await;
    streams.settled(&id).await;
    let id = streams
        .send("app.deleted", &json!({"orgSlug": a, "appId": app_id}))
        .await;
    streams.settled(&id).await;
    assert!(bed.store.app(&app_id).await.is_err(), "the app is gone");

    // B: A's name under a new id, and under A's (now free) app id.
    let mine = format!("mine-{}", bed.id);
    streams
        .send("app.deployed", &deployed(&b, &mine, &name, data.clone()))
        .await;
    let id = streams
        .send("app.deployed", &deployed(&b, &app_id, &name, data.clone()))
        .await;
    streams.settled(&id).await;
    let dead = streams.range(&streams.dead).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (_, fields) in &dead {
        let error = fields.get("error").cloned().unwrap_or_default();
        assert!(
            error.contains(&format!("{name}-blue_data")) && error.contains("another organization"),
            "{error}"
        );
        assert!(!error.contains(&a), "A is not named: {error}");
    }
    for id in [&mine, &app_id] {
        assert!(bed.store.app(id).await.is_err(), "{id} was not recorded");
    }

    // A deploys the app again under another id: its names, still.
    let back = format!("back-{}", bed.id);
    let id = streams
        .send("app.deployed", &deployed(&a, &back, &name, data))
        .await;
    streams.settled(&id).await;
    assert_eq!(streams.range(&streams.dead).await.len(), 2, "accepted");
    let claim = bed
        .store
        .volume_claim(&volume)
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(claim.app_id.as_deref(), Some(back.as_str()));
    assert_eq!(
        bed.store
            .app(&back)
            .await
            .expect("recorded")
            .organization_id,
        claim.organization_id
    );
    assert_eq!(
        vardo_integration::trees::read(&bed.docker, &volume).await,
        before
    );
    streams.cleanup(vec![engine]).await;
    bed.cleanup().await;
}

//! `app.deployed` naming Docker volumes another organization's app holds: refused (dead-lettered
//! with the reason), nothing recorded, the other app and its volume untouched.

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

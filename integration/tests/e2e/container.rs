//! The image and compose.yaml as a user runs them: the stack up with `docker-compose`, a volume
//! backed up and restored through the containerised engine's API, its healthcheck, a graceful
//! stop, and nothing of the stack left once it is taken down.

use std::time::Duration;

use serde_json::json;
use vardo_integration::compose::{self, Stack};
use vardo_integration::eventually;
use vardo_integration::http::Api;
use vardo_integration::volumes;

/// Polls `path` until its `status` is final; returns the body.
async fn finished(api: &Api, path: &str, what: &str) -> serde_json::Value {
    eventually(Duration::from_secs(90), what, || {
        let (api, path) = (api.clone(), path.to_owned());
        async move {
            let r = api.get(&path).await;
            matches!(r.body["status"].as_str(), Some("success" | "failed")).then_some(r.body)
        }
    })
    .await
}

#[tokio::test]
async fn the_compose_stack_backs_up_and_restores_a_volume_through_its_api() {
    compose::build_image();
    let stack = Stack::up();
    stack.ready(Duration::from_secs(120)).await;
    let suffix = &stack.project["vardo-e2e-".len()..];
    let admin = Api::new(&stack.base, Some(&stack.admin_token));
    let org = admin
        .post(
            "/api/v1/organizations",
            &json!({"slug": format!("ship-{suffix}"), "name": "Ship"}),
        )
        .await
        .expect(201)
        .id();
    let token = admin
        .post_empty(&format!("/api/v1/organizations/{org}/tokens"))
        .await
        .expect(201);
    let api = admin.with_token(token.body["token"].as_str());
    let at = |rest: &str| format!("/api/v1/organizations/{org}{rest}");

    // An app whose volume holds a small tree, names with spaces and quotes among it.
    let app = format!("shop{suffix}");
    api.put(
        &at(&format!("/apps/{app}")),
        &json!({"name": app, "volumes": [{"name": "files", "persistent": true, "kind": "generic"}]}),
    )
    .await
    .expect(201);
    let docker = volumes::docker().await.expect("docker");
    let volume = format!("{app}-blue_files");
    docker.create_volume(&volume).await.expect("volume");
    volumes::sh(
        &docker,
        &volume,
        r#"cd /volume && mkdir -p 'up loads/2026' && for i in $(seq 1 40); do
             head -c $((i * 997)) /dev/urandom > "up loads/2026/photo $i.jpg"; done
           printf 'it'"'"'s "quoted"' > "quote's.txt" && ln -s 'up loads' latest"#,
    )
    .await
    .expect("populate");
    let before = volumes::listing(&docker, &volume).await.expect("listing");

    let target = api
        .post(
            &at("/backups/targets"),
            &json!({"name": "here", "type": "local",
                    "config": {"path": format!("/var/lib/vardo/backups/{suffix}")}}),
        )
        .await
        .expect(201)
        .id();
    let job = api
        .post(
            &at("/backups/jobs"),
            &json!({"name": "nightly", "schedule": "0 2 * * *", "targetId": target,
                    "appIds": [app], "keepAll": true}),
        )
        .await
        .expect(201)
        .id();
    let run = api
        .post_empty(&at(&format!("/backups/jobs/{job}/run")))
        .await
        .expect(202)
        .id();
    let rows = eventually(Duration::from_secs(90), "the run's backup", || {
        let (api, path) = (api.clone(), at(&format!("/backups/history?runId={run}")));
        async move {
            let items = api.get(&path).await.body["items"].as_array()?.clone();
            (!items.is_empty()
                && items
                    .iter()
                    .all(|i| i["status"] != "pending" && i["status"] != "running"))
            .then_some(items)
        }
    })
    .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["status"], "success", "{}", rows[0]);
    let backup = rows[0]["id"].as_str().expect("an id").to_owned();

    // The archive is in the stack's own `backups` volume, where the engine wrote it.
    let stored = volumes::sh(
        &docker,
        &format!("{}_backups", stack.project),
        &format!("find /volume/{suffix} -name '*.tar.gz' | wc -l"),
    )
    .await
    .expect("look into the backups volume");
    assert_eq!(
        stored.trim(),
        "1",
        "one archive in the stack's backups volume"
    );

    volumes::sh(
        &docker,
        &volume,
        r#"cd /volume && rm -rf 'up loads/2026/photo 7.jpg' "quote's.txt" && echo new > stray"#,
    )
    .await
    .expect("change");
    assert_ne!(
        volumes::listing(&docker, &volume).await.expect("listing"),
        before
    );
    let restore = api
        .post_empty(&at(&format!("/backups/history/{backup}/restore")))
        .await
        .expect(202)
        .id();
    let done = finished(
        &api,
        &at(&format!("/backups/restores/{restore}")),
        "the restore",
    )
    .await;
    assert_eq!(done["status"], "success", "{done}");
    assert_eq!(
        volumes::listing(&docker, &volume).await.expect("listing"),
        before,
        "the volume holds exactly the backed-up tree again"
    );

    // The image's HEALTHCHECK (`vardo-backup healthcheck`) reports the engine healthy.
    eventually(
        Duration::from_secs(90),
        "the container to be healthy",
        || {
            let state = stack.state("vardo");
            async move { state.ends_with(" healthy").then_some(()) }
        },
    )
    .await;
    // Unprivileged, and a healthcheck that can say unhealthy: exit 1 where nothing answers 200.
    let uid = stack.compose(&["exec", "-T", "vardo", "id", "-u"]);
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "10001",
        "{}",
        vardo_integration::describe(&uid)
    );
    let down = stack.compose(&[
        "exec",
        "-T",
        "vardo",
        "vardo-backup",
        "healthcheck",
        "--url",
        "http://127.0.0.1:1/readyz",
    ]);
    assert_eq!(
        down.status.code(),
        Some(1),
        "{}",
        vardo_integration::describe(&down)
    );
    let up = stack.compose(&["exec", "-T", "vardo", "vardo-backup", "healthcheck"]);
    assert!(up.status.success(), "{}", vardo_integration::describe(&up));
    // SIGTERM through tini: the engine drains and exits 0.
    let stop = stack.compose(&["stop", "--timeout", "60", "vardo"]);
    assert!(
        stop.status.success(),
        "{}",
        vardo_integration::describe(&stop)
    );
    let state = stack.state("vardo");
    assert!(
        state.starts_with("exited 0"),
        "a graceful stop exits 0: {state}"
    );

    // Two scheduler replicas (README): with the `all` engine stopped, a run asked for is taken
    // by one of them and backs the volume up.
    let scaled = stack.compose(&[
        "--profile",
        "replicas",
        "up",
        "-d",
        "--scale",
        "scheduler=2",
        "scheduler",
    ]);
    assert!(
        scaled.status.success(),
        "{}",
        vardo_integration::describe(&scaled)
    );
    let run = uuid::Uuid::new_v4();
    stack.sql(&format!(
        "INSERT INTO run_request (id, job_id, reason) VALUES ('{run}', '{job}', 'manual')"
    ));
    let outcome = eventually(Duration::from_secs(90), "a replica's run", || {
        let row = stack.sql(&format!(
            "SELECT r.claimed_by || ' ' || b.status FROM run_request r JOIN backup b ON b.run_id = r.id \
             WHERE r.id = '{run}' AND b.status IN ('success', 'failed')"
        ));
        async move { (!row.is_empty()).then_some(row) }
    })
    .await;
    let (claimed_by, status) = outcome.split_once(' ').expect("instance and status");
    assert_eq!(status, "success", "{outcome}");
    let replicas = stack.sql("SELECT count(*) FROM engine_instance WHERE stopped_at IS NULL");
    assert_eq!(replicas, "2", "the two replicas are the live instances");
    let live = stack.sql(&format!(
        "SELECT count(*) FROM engine_instance WHERE id = '{claimed_by}' AND stopped_at IS NULL"
    ));
    assert_eq!(live, "1", "a live replica ({claimed_by}) took the run");

    assert!(
        stack.leftovers().len() >= 6,
        "the stack's containers, volumes and network are seen before it is taken down"
    );
    let down = stack.down();
    assert!(
        down.status.success(),
        "{}",
        vardo_integration::describe(&down)
    );
    assert_eq!(
        stack.leftovers(),
        Vec::<String>::new(),
        "nothing of the stack is left"
    );
    volumes::remove(&docker, &volume).await;
}

//! Control plane: the OpenAPI document names every route the server has, and schemathesis (from
//! PyPI, installed by scripts/services) fuzzes the API with an organization token: no response
//! may be a 5xx or break the document's schemas.

use std::process::Command;

use serde_json::json;
use vardo_integration::http::ApiBed;
use vardo_integration::repo_root;

#[tokio::test]
async fn the_document_lists_every_route_with_its_methods() {
    let t = ApiBed::start("web").await;
    let doc = t.admin.get("/api/v1/openapi.json").await.expect(200).body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let expected = [
        ("/api/v1/organizations", &["get", "post"][..]),
        ("/api/v1/organizations/{orgId}/tokens", &["post"]),
        ("/api/v1/system/backups/targets", &["get", "post"]),
        (
            "/api/v1/system/backups/targets/{targetId}",
            &["get", "put", "delete"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/targets",
            &["get", "post"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/targets/{targetId}",
            &["get", "put", "delete"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/jobs",
            &["get", "post"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/jobs/{jobId}",
            &["get", "put", "delete"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/run",
            &["post"],
        ),
        ("/api/v1/organizations/{orgId}/backups/history", &["get"]),
        ("/api/v1/organizations/{orgId}/backups/runs", &["get"]),
        (
            "/api/v1/organizations/{orgId}/backups/history/{backupId}",
            &["get"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/history/{backupId}/download",
            &["get"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/history/{backupId}/restore",
            &["post"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/restores/{restoreId}",
            &["get"],
        ),
        ("/api/v1/organizations/{orgId}/apps", &["get"]),
        (
            "/api/v1/organizations/{orgId}/apps/{appId}",
            &["get", "put", "delete"],
        ),
        (
            "/api/v1/organizations/{orgId}/notifications/channels",
            &["get", "post"],
        ),
        (
            "/api/v1/organizations/{orgId}/notifications/channels/{channelId}",
            &["delete"],
        ),
        ("/api/v1/workers", &["get"]),
        (
            "/api/v1/organizations/{orgId}/backups/history/{backupId}/verify",
            &["post"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/verifications/{verificationId}",
            &["get"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/jobs/{jobId}/drill",
            &["post"],
        ),
        (
            "/api/v1/organizations/{orgId}/backups/drills/{drillId}",
            &["get"],
        ),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(
        paths.len(),
        expected.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing"));
        let mut have: Vec<&str> = item
            .as_object()
            .expect("item")
            .keys()
            .map(String::as_str)
            .collect();
        have.retain(|m| ["get", "post", "put", "delete", "patch"].contains(m));
        have.sort_unstable();
        let mut want = methods.to_vec();
        want.sort_unstable();
        assert_eq!(have, want, "{path}");
    }
    for schema in [
        "Target",
        "TargetInput",
        "Job",
        "JobInput",
        "HistoryItem",
        "Restore",
        "App",
        "Channel",
        "ErrorBody",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} schema"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    t.cleanup().await;
}

#[tokio::test]
async fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let st = repo_root().join(".vardo-dev/schemathesis-venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: run scripts/services",
        st.display()
    );
    let t = ApiBed::start("web").await;
    let org = t.org("st").await;
    // Something to read and change besides random ids.
    let target = org
        .api
        .post(
            &org.path("/backups/targets"),
            &json!({"name": "t", "type": "s3", "config": t.bed.bucket.target_json(None)}),
        )
        .await
        .expect(201)
        .id();
    let job = org
        .api
        .post(
            &org.path("/backups/jobs"),
            &json!({"name": "j", "schedule": "0 2 * * *"}),
        )
        .await
        .expect(201)
        .id();
    let report = tempfile::tempdir().expect("tempdir");
    // Path parameters that name real resources, so the fuzzing gets past the 404s.
    let config = report.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"path.orgId\" = \"{}\"\n\"path.targetId\" = \"{target}\"\n\"path.jobId\" = \"{job}\"\n",
            org.id
        ),
    )
    .expect("config");
    let schema = format!("{}/api/v1/openapi.json", t.server.base_url);
    let out = tokio::task::spawn_blocking({
        let st = st.clone();
        let token = org.token.clone();
        let report = report.path().to_path_buf();
        let config = config.clone();
        move || {
            Command::new(st)
                .arg("--config-file")
                .arg(&config)
                .args([
                    "run",
                    &schema,
                    "--header",
                    &format!("Authorization: Bearer {token}"),
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance,response_headers_conformance",
                    "--max-examples",
                    "15",
                    "--request-timeout",
                    "10",
                    "--workers",
                    "2",
                    "--seed",
                    "7",
                    "--no-color",
                    "--generation-database",
                    "none",
                    "--report-dir",
                ])
                .arg(&report)
                .env("SCHEMATHESIS_HOOKS", "")
                .output()
                .expect("schemathesis runs")
        }
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis failed (exit {:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The token is in the run's own output only as schemathesis sanitizes it.
    assert!(!stdout.contains(&org.token));
    t.cleanup().await;
}

//! `/healthz` (the process runs) and `/readyz` (Postgres, Redis and Docker answer, and start-up
//! has applied the schema).

use actix_web::{get, web, HttpResponse};
use serde_json::json;

use super::State;

#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[get("/readyz")]
pub async fn readyz(state: web::Data<State>) -> HttpResponse {
    let checks = state.engine.readiness().await;
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, e)| e.is_some())
        .map(|(n, _)| *n)
        .collect();
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, e)| {
            let v = e.as_deref().map_or(json!("ok"), |e| json!(e));
            ((*name).to_owned(), v)
        })
        .collect();
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "unavailable" },
        "failing": failing,
        "checks": detail,
    });
    if failing.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

//! The HTTP control plane (actix-web). One file per resource; `error` holds the one table from
//! error kinds to status codes, `auth` the bearer-token middleware, `json` request parsing, and
//! `openapi` the document generated from the handlers registered here.

mod apps;
pub(crate) mod auth;
pub(crate) mod channels;
mod drills;
pub(crate) mod error;
mod health;
pub(crate) mod history;
pub(crate) mod jobs;
mod json;
mod metrics;
mod openapi;
mod organizations;
mod restores;
mod runs;
pub(crate) mod targets;
pub(crate) mod targets_json;
mod tokens;
mod verifications;
mod workers;

use actix_web::{middleware, web, App, HttpServer};
use secrecy::{ExposeSecret, SecretString};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::{scope, AppExt};
use vardo_actors::crew::Crew;
use vardo_actors::engine::Engine;

/// Shared by every handler.
#[derive(Clone)]
pub struct State {
    pub engine: Engine,
    /// This process's Lock, VolumeRunner, Uploader and Pruner (and the actors registered with it).
    pub crew: Crew,
    /// SHA-256 of `VARDO_ADMIN_TOKEN`; without one, no request is an admin's.
    pub admin_token_hash: Option<[u8; 32]>,
}

/// Every route under `/api/v1`; the OpenAPI document is generated from this same list.
fn routes(cfg: &mut ServiceConfig) {
    cfg.service(organizations::create_organization)
        .service(organizations::list_organizations)
        .service(tokens::create_token)
        .service(targets::list_system_targets)
        .service(targets::create_system_target)
        .service(targets::get_system_target)
        .service(targets::update_system_target)
        .service(targets::delete_system_target)
        .service(targets::list_targets)
        .service(targets::create_target)
        .service(targets::get_target)
        .service(targets::update_target)
        .service(targets::delete_target)
        .service(jobs::list_jobs)
        .service(jobs::create_job)
        .service(jobs::get_job)
        .service(jobs::update_job)
        .service(jobs::delete_job)
        .service(jobs::run_job)
        .service(history::list_history)
        .service(history::get_backup)
        .service(history::download_backup)
        .service(runs::list_runs)
        .service(restores::create_restore)
        .service(restores::get_restore)
        .service(verifications::create_verification)
        .service(verifications::get_verification)
        .service(drills::create_drill)
        .service(drills::get_drill)
        .service(apps::list_apps)
        .service(apps::put_app)
        .service(apps::get_app)
        .service(apps::delete_app)
        .service(channels::list_channels)
        .service(channels::create_channel)
        .service(channels::delete_channel)
        .service(workers::list_workers);
}

/// The OpenAPI document of [`routes`].
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let (_, api) = App::new()
        .into_utoipa_app()
        .openapi(openapi::base())
        .service(scope("/api/v1").configure(routes))
        .split_for_parts();
    openapi::finish(api)
}

/// Binds `listen` and prints `listening on ADDR` once bound (port 0 → the port chosen).
/// The process handles SIGTERM/SIGINT itself (see `crate::shutdown`): the server's own signal
/// handling is off, and a graceful stop lets in-flight requests take up to `grace`.
pub fn server(
    engine: Engine,
    crew: Crew,
    listen: &str,
    admin_token: Option<&SecretString>,
    grace: std::time::Duration,
) -> anyhow::Result<actix_web::dev::Server> {
    let state = State {
        engine,
        crew,
        admin_token_hash: admin_token
            .map(|t| t.expose_secret())
            .filter(|t| !t.is_empty())
            .map(auth::admin_token_hash),
    };
    let document = web::Data::new(openapi::Document::new(&openapi_document())?);
    let server = HttpServer::new(move || {
        App::new()
            .into_utoipa_app()
            .app_data(web::Data::new(state.clone()))
            .app_data(document.clone())
            .app_data(json::path_config())
            .map(|app| {
                app.service(health::healthz)
                    .service(health::readyz)
                    .service(metrics::metrics)
                    .service(openapi::openapi_json)
                    .configure(crate::web::configure)
            })
            .service(
                scope("/api/v1")
                    .wrap(middleware::from_fn(auth::authenticate))
                    .configure(routes),
            )
            .default_service(web::to(error::not_found))
            .into_app()
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(grace.as_secs())
    .bind(listen)?;
    for addr in server.addrs() {
        // The integration harness reads this line to learn the port.
        println!("listening on {addr}");
    }
    Ok(server.run())
}

//! The HTTP control plane (actix-web). One file per resource.

mod health;

use actix_web::{web, App, HttpServer};
use vardo_actors::engine::Engine;

/// Shared by every handler.
#[derive(Clone)]
pub struct State {
    pub engine: Engine,
}

/// Binds `listen` and prints `listening on ADDR` once bound (port 0 → the port chosen).
pub fn server(engine: Engine, listen: &str) -> anyhow::Result<actix_web::dev::Server> {
    let state = State { engine };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .service(health::healthz)
            .service(health::readyz)
    })
    .workers(2)
    .bind(listen)?;
    for addr in server.addrs() {
        // The integration harness reads this line to learn the port.
        println!("listening on {addr}");
    }
    Ok(server.run())
}

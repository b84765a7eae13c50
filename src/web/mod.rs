//! The Backups page: server-rendered HTML (maud, checked at compile time) served by `serve` from
//! the same binary, with one embedded stylesheet and a few lines of script (times in the viewer's
//! zone). Every page reads through the same store queries as the API. Pages need a session (see
//! [`session`]); another organization's ids answer 404.

mod history;
mod job_form;
mod jobs;
mod layout;
mod overview;
mod restore;
mod session;
mod settings;

use actix_web::web;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(overview::overview))
        .route("/signin", web::get().to(session::signin_page))
        .route("/signin", web::post().to(session::signin))
        .route("/signout", web::post().to(session::signout))
        .route("/organization", web::post().to(session::pick_organization))
        .route("/organizations", web::get().to(overview::organizations))
        .route("/history", web::get().to(history::list))
        .route("/backups/{id}", web::get().to(history::backup))
        .route("/backups/{id}/download", web::get().to(history::download))
        .route("/backups/{id}/restore", web::get().to(restore::confirm))
        .route("/backups/{id}/restore", web::post().to(restore::start))
        .route("/restores/{id}", web::get().to(restore::restore_page))
        .route("/jobs/{id}", web::get().to(jobs::job_page))
        .route("/jobs/{id}/run", web::post().to(jobs::run_now))
        .route("/jobs/{id}/enabled", web::post().to(jobs::set_enabled))
        .route("/jobs/{id}/edit", web::post().to(job_form::edit))
        .route("/jobs/{id}/delete", web::post().to(job_form::delete))
        .route("/targets", web::get().to(settings::targets))
        .route("/targets", web::post().to(settings::create_target))
        .route("/targets/{id}/edit", web::post().to(settings::edit_target))
        .route(
            "/targets/{id}/delete",
            web::post().to(settings::delete_target),
        )
        .route("/channels", web::get().to(settings::channels))
        .route("/channels", web::post().to(settings::create_channel))
        .route(
            "/channels/{id}/delete",
            web::post().to(settings::delete_channel),
        )
        .route(
            "/channels/{id}/test",
            web::post().to(settings::test_channel),
        )
        .route("/static/style.css", web::get().to(layout::stylesheet))
        .route("/static/page.js", web::get().to(layout::script));
}

//! `GET /api/v1/openapi.json`: the OpenAPI document, generated from the handlers that
//! `http::routes` registers (utoipa), so it names every route and schema the server has.

use actix_web::{get, web, HttpResponse};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, SecurityRequirement};

/// The document, serialized once at start-up.
pub struct Document {
    json: String,
}

impl Document {
    pub fn new(api: &OpenApi) -> anyhow::Result<Self> {
        Ok(Self {
            json: serde_json::to_string(api)?,
        })
    }
}

/// Title, version and the bearer security scheme every route uses.
pub fn base() -> OpenApi {
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("vardo-backup")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Backup targets, jobs, history, restores, apps and notification channels. \
                     Authenticate with `Authorization: Bearer <token>`: the admin token \
                     (VARDO_ADMIN_TOKEN) or an organization token. Errors are \
                     `{\"error\":{\"code\",\"message\",\"field\"}}`.",
                ))
                .build(),
        )
        .build()
}

/// Adds the security scheme and makes it apply to every operation.
pub fn finish(mut api: OpenApi) -> OpenApi {
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    api.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    api
}

#[get("/api/v1/openapi.json")]
pub async fn openapi_json(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.json.clone())
}

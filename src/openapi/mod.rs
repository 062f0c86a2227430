//! The OpenAPI contract, in three renderings made from one source. The handlers'
//! `#[utoipa::path]` annotations (collected through `routes::configure`) give the
//! operations and schemas; `complete` adds what no single handler can say (problem
//! responses with examples, response headers, links, security); `v30` and `swagger2`
//! convert the result for older tools: OpenAPI 3.0.3 for generators that predate 3.1, and
//! Swagger 2.0 for Power Automate custom connectors, which `connector` then fits for
//! connectors (labels, visibility, paging, only the conversation operations).
//!
//! `servers` (Swagger 2.0: `host`, `basePath`, `schemes`) is `PUBLIC_BASE_URL`; when that
//! is unset, the address the document was requested at, as for paging links. The
//! committed files under `openapi/` are the documents of `cargo run`, at `DEFAULT_SERVER`.
//!
//! `postman` makes a Postman collection from the 3.0 rendering, served beside them.

mod complete;
mod connector;
mod examples;
mod postman;
mod served;
mod swagger2;
mod v30;
mod webhooks;

use actix_web::http::header;
use actix_web::middleware::{Compress, from_fn};
use actix_web::{HttpRequest, HttpResponse, guard, web};
use serde_json::{Map, Value, json};
use url::Url;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::Config;

use crate::connector::ConnectionAuth;
use crate::error::ApiError;
use crate::public_url::{PublicBaseUrl, default_server};
use crate::routes;

pub use connector::{CONNECTOR_TITLE, NEXT_LINK_FIELD};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Qpien conversations REST API",
        description = "A REST facade over Qpien's GraphQL API for customer conversations (WhatsApp, e-mail, live chat).\n\n\
**Authentication.** In service mode the service holds its own Qpien API key. When its operator has set up \
caller keys (`API_KEYS_FILE`), send yours as `Authorization: Bearer <key>` or as `X-API-Key: <key>`: without \
a valid key every conversation route answers 401, and a key without the operation's scope (`read` for the \
reads, `write` for updates; see each operation) gets 403, with nothing sent to Qpien. Without caller keys, \
callers send nothing (an `Authorization` header is ignored). In pass-through mode send your Qpien access \
token as `Authorization: Bearer <token>`; without it every conversation route answers 401 and nothing \
reaches Qpien. Each conversation operation therefore accepts the bearer, the `X-API-Key` header, or no \
credentials at all, depending on how the service runs.\n\n\
**Request ids.** Send `X-Request-Id` (1 to 128 characters of `A-Z a-z 0-9 - _ . :`) to trace a request; \
otherwise the service makes a UUID. It comes back in the `X-Request-Id` header of every response and in \
every problem body, and is passed on to Qpien.\n\n\
**Rate limits.** Qpien allows 100 requests a minute per customer. The service keeps each credential below \
that and reports the budget left on every conversation response (`X-RateLimit-Limit`, \
`X-RateLimit-Remaining`, `X-RateLimit-Reset`, `RateLimit-Policy`, `RateLimit`); past it, 429 with \
`Retry-After`.\n\n\
**Errors.** Every error is an RFC 9457 problem (`application/problem+json`); `GET` its `type` for an \
explanation.",
        license(name = "MIT", identifier = "MIT"),
        contact(name = "qpien-rest", url = "https://qpien.com"),
    ),
    tags(
        (name = "Conversations", description = "Customer conversations: list, read, update."),
        (name = "Operations", description = "Liveness, readiness and metrics, for orchestrators and monitoring."),
        (name = "Problems", description = "What each problem `type` means."),
        (name = "Webhooks", description = "Deliveries from Qpien: how the service learns of changes made in Qpien."),
        (name = "Subscriptions", description = "Webhook subscriptions: the service calls your URL with each change, signed as the Standard Webhooks specification says."),
    ),
    components(schemas(crate::error::Problem))
)]
struct ApiDoc;

/// The three renderings, each served at its own path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// OpenAPI 3.1, the source of the other two.
    V31,
    /// OpenAPI 3.0.3, for generators that predate 3.1.
    V30,
    /// Swagger 2.0, for Power Automate custom connectors.
    Swagger2,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V31, Version::V30, Version::Swagger2];

    /// The path the service serves this rendering at.
    pub fn path(self) -> &'static str {
        match self {
            Version::V31 => "/openapi.json",
            Version::V30 => "/openapi-3.0.json",
            Version::Swagger2 => "/swagger-2.0.json",
        }
    }

    /// `3.1`, `3.0` or `2.0`, as the command line takes it.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "3.1" => Some(Version::V31),
            "3.0" => Some(Version::V30),
            "2.0" => Some(Version::Swagger2),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Version::V31 => "OpenAPI 3.1",
            Version::V30 => "OpenAPI 3.0",
            Version::Swagger2 => "Swagger 2.0",
        }
    }
}

/// The documents without their server, built once at start-up.
pub struct Renderings {
    v31: Value,
    v30: Value,
    swagger2: Value,
}

impl Renderings {
    pub fn build() -> Self {
        let v31 = openapi_31();
        let mut v30 = v30::convert(&v31);
        webhooks::add_callbacks(&mut v30);
        let mut swagger2 = swagger2::convert(&v30);
        connector::fit_for_connector(&mut swagger2);
        Self { v31, v30, swagger2 }
    }

    /// The document as served from `server` (its scheme, authority and path prefix).
    pub fn render(&self, version: Version, server: &Url) -> Value {
        let base = server.as_str().trim_end_matches('/');
        match version {
            Version::V31 => with_server(&self.v31, base),
            Version::V30 => with_server(&self.v30, base),
            Version::Swagger2 => swagger2::with_host(&self.swagger2, server),
        }
    }
}

/// A rendering for `DEFAULT_SERVER`: what `qpien-rest openapi` prints and `openapi/` holds.
pub fn default_document(version: Version) -> Value {
    let server = default_server();
    Renderings::build().render(version, &server)
}

/// Where the Postman collection is served.
pub const POSTMAN_PATH: &str = "/postman-collection.json";

/// The Postman collection for `DEFAULT_SERVER` and `auth`: what `qpien-rest postman`
/// prints and `openapi/postman-collection.json` holds (without caller keys).
pub fn default_postman_collection(auth: &ConnectionAuth) -> Value {
    postman::collection(&default_document(Version::V30), auth)
}

/// The 3.1 document before any server is set.
fn openapi_31() -> Value {
    let mut document = from_handlers();
    complete::complete(&mut document);
    webhooks::add_webhooks(&mut document);
    document
}

/// The document as the handlers' `#[utoipa::path]` items make it.
fn from_handlers() -> Value {
    let (_, document) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    serde_json::to_value(document).expect("the document serialises")
}

/// `servers` goes right after `info`, where readers look for it.
fn with_server(document: &Value, base: &str) -> Value {
    let server = json!([{ "url": base, "description": "This instance of the service." }]);
    insert_after(document, "info", [("servers", server)])
}

/// A copy of `document` with `entries` inserted after its member `after`.
fn insert_after<const N: usize>(
    document: &Value,
    after: &str,
    entries: [(&str, Value); N],
) -> Value {
    let mut out = Map::new();
    let mut entries = Some(entries);
    for (key, value) in document.as_object().expect("a document is an object") {
        out.insert(key.clone(), value.clone());
        if key == after {
            for (name, value) in entries.take().into_iter().flatten() {
                out.insert(name.to_owned(), value);
            }
        }
    }
    Value::Object(out)
}

/// Serves the three renderings, the Postman collection for `auth` (the configuration's
/// mode), and Swagger UI (which offers the three renderings, 3.1 first), each with a
/// strong `ETag`, an explicit `Cache-Control` and gzip for clients that take it (`served`).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    renderings: web::Data<Renderings>,
    auth: web::Data<ConnectionAuth>,
) {
    for version in Version::ALL {
        cfg.service(
            web::resource(version.path())
                .app_data(renderings.clone())
                .route(web::get().to(
                    move |req: HttpRequest,
                          renderings: web::Data<Renderings>,
                          base: web::Data<PublicBaseUrl>| async move {
                        let document = renderings.render(version, &base.resolve(&req));
                        document_response(&base, &document)
                    },
                ))
                .wrap(Compress::default())
                .wrap(from_fn(served::validate)),
        );
    }
    cfg.service(
        web::resource(POSTMAN_PATH)
            .app_data(renderings.clone())
            .app_data(auth)
            .route(web::get().to(
                |req: HttpRequest,
                 renderings: web::Data<Renderings>,
                 base: web::Data<PublicBaseUrl>,
                 auth: web::Data<ConnectionAuth>| async move {
                    let v30 = renderings.render(Version::V30, &base.resolve(&req));
                    document_response(&base, &postman::collection(&v30, &auth))
                },
            ))
            .wrap(Compress::default())
            .wrap(from_fn(served::validate)),
    );
    // Relative to /docs/, so the UI keeps working behind a gateway that adds a path prefix.
    let urls = Version::ALL.map(|v| {
        let relative: &'static str = match v {
            Version::V31 => "../openapi.json",
            Version::V30 => "../openapi-3.0.json",
            Version::Swagger2 => "../swagger-2.0.json",
        };
        utoipa_swagger_ui::Url::with_primary(v.label(), relative, v == Version::V31)
    });
    // Swagger UI's files through `utoipa_swagger_ui::serve` rather than its `SwaggerUi`
    // service, which cannot be wrapped: they are the same for every request (the URLs
    // above are relative), so cacheable like a stable document.
    cfg.service(
        web::resource("/docs/{file:.*}")
            // Other methods fall through to the problem answers, as before.
            .guard(guard::Get())
            .app_data(web::Data::new(Config::new(urls)))
            .route(web::get().to(swagger_ui_file))
            .wrap(Compress::default())
            .wrap(from_fn(served::validate)),
    );
}

fn document_response(base: &PublicBaseUrl, document: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, served::cache_control(base)))
        .json(document)
}

async fn swagger_ui_file(
    file: web::Path<String>,
    config: web::Data<Config<'static>>,
) -> Result<HttpResponse, ApiError> {
    let file = match utoipa_swagger_ui::serve(&file, config.into_inner()) {
        Ok(Some(file)) => file,
        Ok(None) => return Err(ApiError::RouteNotFound),
        // Only a configuration that does not serialise, fixed in `configure`.
        Err(error) => {
            tracing::error!(%error, "Swagger UI's configuration cannot be served");
            return Ok(HttpResponse::InternalServerError().finish());
        }
    };
    let mut response = HttpResponse::Ok();
    if file.gzpipped {
        response.insert_header(header::ContentEncoding::Gzip);
    }
    Ok(response
        .insert_header((header::CACHE_CONTROL, served::STABLE))
        .content_type(file.content_type)
        .body(file.bytes.into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::registry::OPERATIONS;

    /// A handler without a row would be documented without its problems, scope and
    /// headers; a row without a handler would promise an operation that is not served.
    #[test]
    fn every_handler_has_a_row_and_every_row_a_handler() {
        let document = from_handlers();
        let mut handlers: Vec<(String, String, String)> = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap_or_default();
                handlers.push((method.to_uppercase(), path.clone(), id.to_owned()));
            }
        }
        let mut rows: Vec<(String, String, String)> = OPERATIONS
            .iter()
            .map(|op| (op.method.to_string(), op.path.to_owned(), op.id.to_owned()))
            .collect();
        handlers.sort();
        rows.sort();
        assert_eq!(
            handlers, rows,
            "handlers (left) and registry rows (right) differ"
        );
    }

    #[test]
    fn a_public_base_url_with_a_path_becomes_the_server_and_the_base_path() {
        let renderings = Renderings::build();
        let server = Url::parse("https://qpien.example.com/rest/").unwrap();

        let v31 = renderings.render(Version::V31, &server);
        let v20 = renderings.render(Version::Swagger2, &server);

        assert_eq!(v31["servers"][0]["url"], "https://qpien.example.com/rest");
        assert_eq!(v20["host"], "qpien.example.com");
        assert_eq!(v20["basePath"], "/rest");
        assert_eq!(v20["schemes"], json!(["https"]));
    }
}

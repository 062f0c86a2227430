//! The OpenAPI document: metadata here, paths collected from the handlers through
//! `routes::configure`, problem responses added from one table.

use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::server::Server;
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, Type,
};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use crate::error::{PROBLEM_JSON, PROBLEM_KINDS, Problem};
use crate::routes::{self, PROBLEM_STATUSES};
use crate::settings::Settings;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Qpien conversations REST API",
        description = "A REST facade over Qpien's GraphQL API for customer conversations (WhatsApp, e-mail, live chat). \
Every error is an RFC 9457 problem (`application/problem+json`) with a `requestId`; the `X-Request-Id` header \
of each response carries the same id.\n\n\
**Authentication.** In pass-through mode send your Qpien access token as `Authorization: Bearer <token>`. \
In service mode the service holds its own Qpien credentials and callers send nothing.",
        license(name = "MIT", identifier = "MIT"),
    ),
    tags(
        (name = "Conversations", description = "Customer conversations: list, read, update."),
        (name = "Operations", description = "Liveness and readiness for orchestrators."),
    ),
    components(schemas(Problem)),
    modifiers(&Security)
)]
struct ApiDoc;

/// The document as served at `/openapi.json`, with `servers` from `PUBLIC_BASE_URL`.
pub fn document(settings: &Settings) -> Document {
    let (_, mut doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    ProblemResponses.modify(&mut doc);
    let table = problem_table();
    if let Some(description) = doc.info.description.as_mut() {
        description.push_str(&table);
    }
    if let Some(url) = &settings.public_base_url {
        doc.servers = Some(vec![Server::new(url.as_str().trim_end_matches('/'))]);
    }
    doc
}

/// The error table of the README, from the same source as the responses.
fn problem_table() -> String {
    let mut table = String::from("\n\n**Errors.**\n\n| status | type | title |\n|---|---|---|\n");
    for (slug, status, title, _) in PROBLEM_KINDS {
        table.push_str(&format!("| {status} | `/problems/{slug}` | {title} |\n"));
    }
    table
}

struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, doc: &mut Document) {
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.patch,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                add_problems(operation);
                add_request_id_header(operation);
            }
        }
    }
}

fn add_problems(operation: &mut Operation) {
    let Some(id) = operation.operation_id.as_deref() else {
        return;
    };
    let Some((_, statuses)) = PROBLEM_STATUSES.iter().find(|(op, _)| *op == id) else {
        return;
    };
    for status in *statuses {
        let titles: Vec<&str> = PROBLEM_KINDS
            .iter()
            .filter(|k| k.1 == *status)
            .map(|k| k.2)
            .collect();
        let mut response = ResponseBuilder::new()
            .description(titles.join("; "))
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
        if *status == 429 {
            response = response.header(
                "Retry-After",
                utoipa::openapi::HeaderBuilder::new()
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::Type::Integer),
                    ))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(status.to_string(), response.build().into());
    }
}

fn add_request_id_header(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            let header = HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(
                    "The request id: the caller's X-Request-Id or a generated UUID.",
                ))
                .build();
            response
                .headers
                .insert("X-Request-Id".to_owned(), RefOr::T(header));
        }
    }
}

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "Pass-through mode: your Qpien access token (obtained with your API key's client id and secret), forwarded to Qpien as it is. \
Not needed in service mode."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

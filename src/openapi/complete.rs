//! What no single handler annotation can say, added to every operation from its row in
//! the operation registry: one problem response per problem status (schema, and an
//! example per problem kind that can cause it), the response headers it sends, the links
//! to other operations, the security schemes and the scope it needs of a caller key, and
//! the error table in the description.

use serde_json::{Map, Value, json};

use super::examples::problem_example;
use crate::error::{PROBLEM_JSON, PROBLEM_KINDS, ProblemKind, WEBHOOK_CHALLENGE};
use crate::routes::registry::{self, Documented, Operation};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Kinds only a request with a body can cause.
const BODY_KINDS: [&str; 4] = [
    "malformed-body",
    "payload-too-large",
    "unsupported-media-type",
    "invalid-body",
];

pub(super) fn complete(document: &mut Value) {
    add_security_scheme(document);
    add_error_table(document);
    let paths = document["paths"]
        .as_object_mut()
        .expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        for method in METHODS {
            if let Some(operation) = item.get_mut(method) {
                complete_operation(path, operation);
            }
        }
    }
}

fn complete_operation(path: &str, operation: &mut Value) {
    let id = operation["operationId"]
        .as_str()
        .expect("every operation has an operationId");
    let row = registry::by_id(id).unwrap_or_else(|| panic!("{id} has no row in routes::registry"));
    let responses = operation["responses"]
        .as_object_mut()
        .expect("every operation has responses");
    for status in row.problems {
        let kinds = kinds_for(row, *status);
        responses.insert(status.to_string(), problem_response(row, path, &kinds));
    }
    for (status, response) in responses.iter_mut() {
        let headers = response
            .as_object_mut()
            .expect("responses are inline")
            .entry("headers")
            .or_insert_with(|| json!({}));
        add_headers(headers, status, row);
    }
    let success = ["200", "201"]
        .into_iter()
        .find(|s| responses.contains_key(*s));
    if let Some(ok) = success.and_then(|status| responses.get_mut(status)) {
        add_links(ok, row);
    }
    if path.contains("{slug}") {
        constrain_problem_slug(operation);
    }
    not_null_headers(operation);
    // Said outright, so no reader (or linter) wonders whether it was forgotten.
    if operation.get("security").is_none() {
        operation["security"] = json!([]);
    }
    add_caller_key(operation, row);
}

/// Wherever a bearer is accepted, a caller key in `X-API-Key` is too; the scope the key
/// needs is in the description, for people, and in `x-required-scope`, for tools.
fn add_caller_key(operation: &mut Value, row: &Operation) {
    let security = operation["security"]
        .as_array_mut()
        .expect("security is a list");
    if let Some(at) = security.iter().position(|r| r.get("bearer").is_some()) {
        security.insert(at + 1, json!({ "apiKey": [] }));
    }
    let Some(scope) = row.scope else {
        return;
    };
    let scope = scope.as_str();
    if let Some(Value::String(description)) = operation.get_mut("description") {
        description.push_str(&format!(
            "\n\n**Caller key scope:** `{scope}`. When the service requires caller keys, a key without this scope gets 403 (`/problems/insufficient-key-scope`)."
        ));
    }
    operation["x-required-scope"] = json!(scope);
}

/// The kinds of problem `operation` can answer with `status`.
pub(super) fn kinds_for(operation: &Operation, status: u16) -> Vec<ProblemKind> {
    PROBLEM_KINDS
        .iter()
        .filter(|kind| kind.status == status && applies(kind.slug, operation))
        .copied()
        .collect()
}

/// Whether a problem of kind `slug` can come from `operation`, by what its row says.
fn applies(slug: &str, operation: &Operation) -> bool {
    let calls_qpien = operation.budget.is_some();
    match slug {
        "upstream-rejected-input" => calls_qpien && operation.has_body(),
        s if BODY_KINDS.contains(&s) => operation.has_body(),
        // A caller's credential or key, and what it may do.
        "missing-credentials"
        | "missing-api-key"
        | "invalid-api-key"
        | "insufficient-key-scope" => operation.scope.is_some(),
        "invalid-parameters" => operation.scope.is_some() && !operation.subscriptions(),
        // Qpien's answers, and what stands between a caller and Qpien.
        "upstream-unauthorized"
        | "insufficient-scope"
        | "rate-limited"
        | "unproven-tokens-limited"
        | "upstream-error"
        | "upstream-timeout"
        | "unavailable"
        | "precondition-failed" => calls_qpien,
        "invalid-signature" | "change-not-recorded" => operation.signed,
        // The change feed's own answers (its statuses pick which).
        "cursor-gone" | "event-log-unavailable" | "too-many-streams" => operation.feed,
        "feed-not-offered" => operation.feed || operation.subscriptions(),
        // Webhook subscriptions: the one named in the path, and their creation.
        "subscription-not-found" => operation.subscriptions() && operation.path.contains('{'),
        "too-many-subscriptions" | "callback-url-refused" => {
            operation.subscriptions()
                && operation.method == actix_web::http::Method::POST
                && !operation.path.contains('{')
        }
        "subscriptions-unavailable" => operation.subscriptions(),
        // The readiness probe reports an open breaker as not ready.
        "not-ready" => {
            !calls_qpien && !operation.signed && !operation.feed && !operation.subscriptions()
        }
        // Answered by the router for any path, not by an operation.
        "method-not-allowed" => false,
        _ => true,
    }
}

fn problem_response(operation: &Operation, path: &str, kinds: &[ProblemKind]) -> Value {
    let description = kinds
        .iter()
        .map(|kind| format!("{} (`/problems/{}`)", kind.title, kind.slug))
        .collect::<Vec<_>>()
        .join("; ");
    let examples: Map<String, Value> = kinds
        .iter()
        .map(|kind| {
            let value = problem_example(operation, path, kind.slug);
            (
                kind.slug.to_owned(),
                json!({ "summary": kind.title, "value": value }),
            )
        })
        .collect();
    json!({
        "description": description,
        "content": {
            PROBLEM_JSON: {
                "schema": { "$ref": "#/components/schemas/Problem" },
                "examples": examples,
            }
        }
    })
}

fn header(description: &str, schema: Value, required: bool) -> Value {
    json!({ "description": description, "required": required, "schema": schema })
}

fn add_headers(headers: &mut Value, status: &str, operation: &Operation) {
    let budgeted = operation.budget.is_some();
    let headers = headers.as_object_mut().expect("headers is a map");
    let integer = |minimum: u64| json!({ "type": "integer", "minimum": minimum });
    let text = |example: &str| json!({ "type": "string", "example": example });
    let mut add = |name: &str, value: Value| headers.insert(name.to_owned(), value);

    add(
        "X-Request-Id",
        header(
            "The request id: the caller's `X-Request-Id` when valid, else a new UUID. Quote it when reporting a problem.",
            json!({ "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$", "example": "3f1c2a8e-8a52-4a57-9d54-5b1a0f6f3a11" }),
            true,
        ),
    );
    if operation.documents(Documented::PageLinks) && status == "200" {
        add(
            "Link",
            header(
                "RFC 8288 links to the `first`, `last`, `next` and `prev` pages, as in the body's `links`.",
                text(
                    "<http://127.0.0.1:8080/conversations?page=1>; rel=\"first\", <http://127.0.0.1:8080/conversations?page=4>; rel=\"last\", <http://127.0.0.1:8080/conversations?page=2>; rel=\"next\"",
                ),
                true,
            ),
        );
    }
    // Successes and 304s report the budget left; a 429 reports the same fields (usually
    // nothing left, and when the window is whole again) besides `Retry-After`.
    let rate_headers = budgeted && matches!(status, "200" | "304" | "429");
    if rate_headers {
        let required = true;
        add(
            "X-RateLimit-Limit",
            header(
                "Requests per minute this credential may send to Qpien.",
                integer(1),
                required,
            ),
        );
        add(
            "X-RateLimit-Remaining",
            header(
                "Requests this credential may still send in the current window.",
                integer(0),
                required,
            ),
        );
        add(
            "X-RateLimit-Reset",
            header(
                "Seconds until the budget is whole again.",
                integer(0),
                required,
            ),
        );
        add(
            "RateLimit-Policy",
            header(
                "The quota policy (IETF draft `RateLimit-Policy`): `q` requests per `w` seconds.",
                text("\"qpien\";q=100;w=60"),
                required,
            ),
        );
        add(
            "RateLimit",
            header(
                "The budget left (IETF draft `RateLimit`): `r` remaining requests, `t` seconds until reset.",
                text("\"qpien\";r=99;t=60"),
                required,
            ),
        );
    }
    let cached = operation.documents(Documented::Cached);
    let representation =
        operation.documents(Documented::ETag) && (status == "200" || (cached && status == "304"));
    if representation {
        add(
            "ETag",
            header(
                "Strong entity tag of the representation (RFC 9110): send it as `If-None-Match` to read again without a body when nothing changed, or as `If-Match` to update only an unchanged conversation.",
                text("\"5f0c6e1d2a3b4c59\""),
                true,
            ),
        );
    }
    if cached && (status == "200" || status == "304") {
        add(
            "Cache-Control",
            header(
                "`private, max-age=<seconds>`: how long this answer is served from the facade's cache (`private, no-cache` when the cache is off).",
                text("private, max-age=5"),
                true,
            ),
        );
        add(
            "Cache-Status",
            header(
                "RFC 9211: `hit` (from the cache, `ttl` seconds of freshness left; negative with `fwd=stale` when served stale because Qpien could not answer, `detail` naming why), `fwd=miss` (this request asked Qpien; `stored` when kept), `fwd=miss; collapsed` (answered by an identical request's call).",
                text("qpien-rest; hit; ttl=3"),
                true,
            ),
        );
        add(
            "Age",
            header(
                "Seconds since the answer was obtained from Qpien, on answers from the cache.",
                integer(0),
                false,
            ),
        );
        add(
            "Vary",
            header(
                "`Authorization` in pass-through mode: the answer depends on the caller's token.",
                text("Authorization"),
                false,
            ),
        );
    }
    match status {
        "412" => add(
            "ETag",
            header(
                "The conversation's current entity tag.",
                text("\"5f0c6e1d2a3b4c59\""),
                true,
            ),
        ),
        "401" if operation.signed => add(
            "WWW-Authenticate",
            header(
                "The signature Qpien must send (RFC 9110 asks a challenge of every 401).",
                text(WEBHOOK_CHALLENGE),
                true,
            ),
        ),
        "401" => add(
            "WWW-Authenticate",
            header(
                "The authentication scheme to use (RFC 6750).",
                text("Bearer realm=\"qpien\""),
                true,
            ),
        ),
        "403" => add(
            "WWW-Authenticate",
            header(
                "RFC 6750 `insufficient_scope`, naming the scope.",
                text(
                    "Bearer realm=\"qpien\", error=\"insufficient_scope\", scope=\"write_conversations\"",
                ),
                false,
            ),
        ),
        "415" => add(
            "Accept-Patch",
            header(
                "The media types PATCH accepts (RFC 5789).",
                text("application/merge-patch+json, application/json"),
                true,
            ),
        ),
        "429" => add(
            "Retry-After",
            header("Seconds to wait before retrying.", integer(0), true),
        ),
        "503" if budgeted => add(
            "Retry-After",
            header(
                "Seconds until the circuit breaker lets a call through again.",
                integer(0),
                true,
            ),
        ),
        _ => None,
    };
}

/// Where to go from a success, for clients and for Schemathesis' stateful tests.
fn add_links(ok: &mut Value, operation: &Operation) {
    if operation.links.is_empty() {
        return;
    }
    let links: Map<String, Value> = operation
        .links
        .iter()
        .map(|link| {
            let value = json!({ "operationId": link.operation, "parameters": { "id": link.id }, "description": link.description });
            (link.name.to_owned(), value)
        })
        .collect();
    ok["links"] = Value::Object(links);
}

/// An optional header is absent, never `null`: HTTP has no null field value, and a tool
/// that believed the schema would send the text "null".
fn not_null_headers(operation: &mut Value) {
    let parameters = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut);
    for parameter in parameters.into_iter().flatten() {
        if parameter["in"] == "header"
            && let Some(types) = parameter["schema"]["type"].as_array()
        {
            let types: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            parameter["schema"]["type"] = match types.as_slice() {
                [single] => single.clone(),
                _ => Value::Array(types),
            };
        }
    }
}

/// The `slug` of `GET /problems/{slug}` is one of the kinds the service knows.
fn constrain_problem_slug(operation: &mut Value) {
    let slugs: Vec<&str> = PROBLEM_KINDS.iter().map(|k| k.slug).collect();
    for parameter in operation["parameters"].as_array_mut().into_iter().flatten() {
        if parameter["name"] == "slug" {
            parameter["schema"]["enum"] = json!(slugs);
        }
    }
}

fn add_security_scheme(document: &mut Value) {
    document["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Service mode with caller keys: your caller key (`qpk_…`), from the operator of the service. Pass-through mode: your Qpien access token (from `generateOAuthToken` with your API key's client id and secret), forwarded to Qpien as it is. Without it, 401. Service mode without caller keys: send nothing; the header is ignored.",
        },
        "apiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "Service mode with caller keys: your caller key (`qpk_…`), for clients that cannot send a bearer. Taken before `Authorization` when both are sent.",
        },
        "qpienSignature": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Qpien-Signature",
            "description": "Qpien's webhook signature: the hex HMAC-SHA256 of the exact body bytes under the secret Qpien showed when the webhook was created (`QPIEN_WEBHOOK_SECRET`). Only Qpien sends it.",
        }
    });
}

/// The README's error table, from the same table as the responses.
fn add_error_table(document: &mut Value) {
    let mut table = String::from("\n\n| status | type | title |\n|---|---|---|\n");
    for kind in PROBLEM_KINDS {
        table.push_str(&format!(
            "| {} | `/problems/{}` | {} |\n",
            kind.status, kind.slug, kind.title
        ));
    }
    if let Some(Value::String(description)) = document["info"].get_mut("description") {
        description.push_str(&table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_problem_status_has_a_kind_that_causes_it() {
        for operation in registry::OPERATIONS {
            for status in operation.problems {
                assert!(
                    !kinds_for(operation, *status).is_empty(),
                    "{} lists {status}, but no problem kind of that status applies to it",
                    operation.id
                );
            }
        }
    }
}

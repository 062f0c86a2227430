//! What no single handler annotation can say, added to every operation from shared
//! tables: one problem response per status of `PROBLEM_STATUSES` (schema, and an example
//! per problem kind that can cause it), the response headers each route sends, the links
//! between operations, the security schemes and the scope each operation needs of a
//! caller key, and the error table in the description.

use serde_json::{Map, Value, json};

use super::examples::problem_example;
use crate::error::{PROBLEM_JSON, PROBLEM_KINDS, ProblemKind};
use crate::routes::{PROBLEM_STATUSES, REQUIRED_SCOPES};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Kinds only a request with a body can cause.
const BODY_KINDS: [&str; 5] = [
    "malformed-body",
    "payload-too-large",
    "unsupported-media-type",
    "invalid-body",
    "upstream-rejected-input",
];

/// Operations that spend the caller's budget toward Qpien, and so report it.
const BUDGETED: [&str; 3] = ["listConversations", "getConversation", "updateConversation"];

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
        .expect("every operation has an operationId")
        .to_owned();
    let has_body = operation.get("requestBody").is_some();
    let statuses = PROBLEM_STATUSES
        .iter()
        .find(|(op, _)| *op == id)
        .map_or(&[][..], |(_, statuses)| *statuses);
    let responses = operation["responses"]
        .as_object_mut()
        .expect("every operation has responses");
    for status in statuses {
        let kinds = kinds_for(&id, *status, has_body);
        responses.insert(status.to_string(), problem_response(&id, path, &kinds));
    }
    let budgeted = BUDGETED.contains(&id.as_str());
    for (status, response) in responses.iter_mut() {
        let headers = response
            .as_object_mut()
            .expect("responses are inline")
            .entry("headers")
            .or_insert_with(|| json!({}));
        add_headers(headers, status, budgeted, &id);
    }
    if let Some(ok) = responses.get_mut("200") {
        add_links(ok, &id);
    }
    if id == "describeProblem" {
        constrain_problem_slug(operation);
    }
    not_null_headers(operation);
    // Said outright, so no reader (or linter) wonders whether it was forgotten.
    if operation.get("security").is_none() {
        operation["security"] = json!([]);
    }
    add_caller_key(operation, &id);
}

/// Wherever a bearer is accepted, a caller key in `X-API-Key` is too; the scope the key
/// needs is in the description, for people, and in `x-required-scope`, for tools.
fn add_caller_key(operation: &mut Value, id: &str) {
    let security = operation["security"]
        .as_array_mut()
        .expect("security is a list");
    if let Some(at) = security.iter().position(|r| r.get("bearer").is_some()) {
        security.insert(at + 1, json!({ "apiKey": [] }));
    }
    let Some((_, scope)) = REQUIRED_SCOPES.iter().find(|(op, _)| *op == id) else {
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
pub(super) fn kinds_for(operation: &str, status: u16, has_body: bool) -> Vec<ProblemKind> {
    PROBLEM_KINDS
        .iter()
        .filter(|(slug, kind_status, _, _)| {
            *kind_status == status
                && match *slug {
                    s if BODY_KINDS.contains(&s) => has_body,
                    // /readyz reports an open breaker as not ready; routes that call Qpien as unavailable.
                    "not-ready" => operation == "checkReadiness",
                    "unavailable" => operation != "checkReadiness",
                    "precondition-failed" => operation == "updateConversation",
                    // Answered by the router for any path, not by an operation.
                    "method-not-allowed" => false,
                    _ => true,
                }
        })
        .copied()
        .collect()
}

fn problem_response(operation: &str, path: &str, kinds: &[ProblemKind]) -> Value {
    let description = kinds
        .iter()
        .map(|(slug, _, title, _)| format!("{title} (`/problems/{slug}`)"))
        .collect::<Vec<_>>()
        .join("; ");
    let examples: Map<String, Value> = kinds
        .iter()
        .map(|(slug, _, title, _)| {
            let value = problem_example(operation, path, slug);
            (
                (*slug).to_owned(),
                json!({ "summary": title, "value": value }),
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

fn add_headers(headers: &mut Value, status: &str, budgeted: bool, operation: &str) {
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
    if operation == "listConversations" && status == "200" {
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
    let reads = matches!(operation, "listConversations" | "getConversation");
    let representation = (reads && (status == "200" || status == "304"))
        || (operation == "updateConversation" && status == "200");
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
    if reads && (status == "200" || status == "304") {
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
fn add_links(ok: &mut Value, operation: &str) {
    let link = |target: &str, id: &str, description: &str| json!({ "operationId": target, "parameters": { "id": id }, "description": description });
    let links = match operation {
        "listConversations" => json!({
            "GetFirstConversation": link("getConversation", "$response.body#/items/0/id", "Read the first conversation of the page."),
            "UpdateFirstConversation": link("updateConversation", "$response.body#/items/0/id", "Update the first conversation of the page."),
        }),
        "getConversation" => json!({
            "UpdateConversation": link("updateConversation", "$response.body#/id", "Update this conversation."),
        }),
        "updateConversation" => json!({
            "GetConversation": link("getConversation", "$response.body#/id", "Read this conversation again."),
        }),
        _ => return,
    };
    ok["links"] = links;
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
    let slugs: Vec<&str> = PROBLEM_KINDS.iter().map(|k| k.0).collect();
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
        }
    });
}

/// The README's error table, from the same table as the responses.
fn add_error_table(document: &mut Value) {
    let mut table = String::from("\n\n| status | type | title |\n|---|---|---|\n");
    for (slug, status, title, _) in PROBLEM_KINDS {
        table.push_str(&format!("| {status} | `/problems/{slug}` | {title} |\n"));
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
        for (operation, statuses) in PROBLEM_STATUSES {
            let has_body = *operation == "updateConversation";
            for status in *statuses {
                assert!(
                    !kinds_for(operation, *status, has_body).is_empty(),
                    "{operation} lists {status}, but no problem kind of that status applies to it"
                );
            }
        }
    }
}

//! The sandbox's HTTP side: `POST /api/v1` (GraphQL), `GET /healthz`, the per-client
//! rate limit with its headers, the documented error shape and the request counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{Name, Value};
use serde_json::json;

use super::SandboxStats;
use super::auth::{Caller, TokenStore};
use super::schema::SandboxSchema;
use super::webhooks::{self, Webhooks};

const WINDOW: Duration = Duration::from_secs(60);

/// What every request handler shares; one per sandbox instance.
pub(crate) struct AppState {
    pub schema: SandboxSchema,
    pub webhooks: Arc<Webhooks>,
    pub tokens: Arc<TokenStore>,
    pub limiter: RateLimiter,
    pub latency: std::time::Duration,
    pub stats: Arc<Mutex<SandboxStats>>,
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1", web::post().to(graphql))
        .route("/healthz", web::get().to(healthz))
        .route("/stats", web::get().to(stats))
        .configure(webhooks::http::routes);
}

/// The counters of requests and of webhook deliveries, as of now.
pub(crate) fn snapshot(stats: &Mutex<SandboxStats>, webhooks: &Webhooks) -> SandboxStats {
    let mut snapshot = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    snapshot.webhook_deliveries = webhooks.stats();
    snapshot
}

async fn stats(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(snapshot(&state.stats, &state.webhooks))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// Fixed 60-second windows, one per key.
pub(crate) struct RateLimiter {
    limit: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

struct Decision {
    allowed: bool,
    remaining: u32,
    reset_secs: u64,
}

impl RateLimiter {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn hit(&self, key: &str) -> Decision {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        let left = WINDOW.saturating_sub(now.duration_since(*start));
        // Round up, so a client waiting this many seconds is sure to be in a new window.
        let reset_secs = (left.as_millis().div_ceil(1000) as u64).max(1);
        Decision {
            allowed: *count <= self.limit,
            remaining: self.limit.saturating_sub(*count),
            reset_secs,
        }
    }
}

/// Root field names of the operation to run, and the `clientId` argument of
/// generateOAuthToken if it is given literally or as a variable.
fn inspect(request: &async_graphql::Request) -> (Vec<String>, Option<String>) {
    let Ok(doc) = async_graphql::parser::parse_query(&request.query) else {
        return (Vec::new(), None);
    };
    let operation = match (&doc.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        // Named operations are always "Multiple", even when there is only one.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    let Some(operation) = operation else {
        return (Vec::new(), None);
    };
    let mut fields = Vec::new();
    let mut client_id = None;
    collect_root_fields(&doc, &operation.node.selection_set.node, 0, &mut |field| {
        let name = field.name.node.as_str();
        if name == "generateOAuthToken" {
            client_id = field
                .get_argument("clientId")
                .and_then(|v| {
                    let vars = &request.variables;
                    v.node
                        .clone()
                        .into_const_with(|var| vars.get(&var).cloned().ok_or(()))
                        .ok()
                })
                .and_then(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                });
        }
        if !name.starts_with("__") {
            fields.push(name.to_owned());
        }
    });
    (fields, client_id)
}

fn collect_root_fields(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    depth: usize,
    visit: &mut dyn FnMut(&async_graphql::parser::types::Field),
) {
    // Guards against fragment cycles, which validation rejects later anyway.
    if depth > 8 {
        return;
    }
    for selection in &set.items {
        match &selection.node {
            Selection::Field(f) => visit(&f.node),
            Selection::InlineFragment(f) => {
                collect_root_fields(doc, &f.node.selection_set.node, depth + 1, visit)
            }
            Selection::FragmentSpread(s) => {
                let name = Name::new(s.node.fragment_name.node.as_str());
                if let Some(fragment) = doc.fragments.get(&name) {
                    collect_root_fields(doc, &fragment.node.selection_set.node, depth + 1, visit);
                }
            }
        }
    }
}

/// Adds `"success": false` to each error, and a code where async-graphql gave none
/// (those are its own parse and validation errors).
fn documented_shape(mut body: serde_json::Value) -> serde_json::Value {
    if let Some(errors) = body.get_mut("errors").and_then(|e| e.as_array_mut()) {
        for error in errors.iter_mut().filter_map(|e| e.as_object_mut()) {
            let extensions = error.entry("extensions").or_insert_with(|| json!({}));
            if let Some(ext) = extensions.as_object_mut() {
                ext.entry("code")
                    .or_insert_with(|| json!("GRAPHQL_VALIDATION_FAILED"));
            }
            error.insert("success".to_owned(), json!(false));
        }
    }
    body
}

fn error_body(code: &str, message: &str) -> serde_json::Value {
    json!({"errors": [{"message": message, "extensions": {"code": code}, "success": false}]})
}

async fn graphql(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    {
        let mut stats = state.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.requests += 1;
        stats.last_request_id = header("x-request-id").map(str::to_owned);
    }
    let caller = state.tokens.caller(header(AUTHORIZATION.as_str()));
    let parsed = serde_json::from_slice::<async_graphql::Request>(&body);
    let (fields, oauth_client) = parsed.as_ref().map(inspect).unwrap_or_default();

    let key = match (caller.client_id(), oauth_client) {
        (Some(id), _) => id.to_owned(),
        (None, Some(id)) => id,
        (None, None) => {
            let ip = req.peer_addr().map(|a| a.ip().to_string());
            format!("anonymous:{}", ip.as_deref().unwrap_or("unknown"))
        }
    };
    let decision = state.limiter.hit(&key);

    let (status, body) = if !decision.allowed {
        tracing::info!(client = %key, "sandbox: rate limited");
        state
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rate_limited += 1;
        (
            StatusCode::TOO_MANY_REQUESTS,
            error_body("RATE_LIMITED", "Too many requests"),
        )
    } else {
        match parsed {
            Err(e) => (
                StatusCode::BAD_REQUEST,
                error_body(
                    "BAD_REQUEST",
                    &format!("Malformed GraphQL request body: {e}"),
                ),
            ),
            Ok(request) => {
                {
                    let mut stats = state.stats.lock().unwrap_or_else(|e| e.into_inner());
                    for field in &fields {
                        *stats.operations.entry(field.clone()).or_default() += 1;
                    }
                }
                if !state.latency.is_zero() {
                    tokio::time::sleep(state.latency).await;
                }
                let response = state.schema.execute(request.data::<Caller>(caller)).await;
                let body = serde_json::to_value(&response)
                    .unwrap_or_else(|_| error_body("INTERNAL_SERVER_ERROR", "Internal error"));
                (StatusCode::OK, documented_shape(body))
            }
        }
    };
    tracing::debug!(client = %key, operations = ?fields, status = status.as_u16(), "sandbox: request");

    let mut response = HttpResponse::build(status);
    response
        .insert_header(("X-RateLimit-Limit", state.limiter.limit.to_string()))
        .insert_header(("X-RateLimit-Remaining", decision.remaining.to_string()))
        .insert_header(("X-RateLimit-Reset", decision.reset_secs.to_string()));
    if status == StatusCode::TOO_MANY_REQUESTS {
        response.insert_header((RETRY_AFTER, decision.reset_secs.to_string()));
    }
    response.json(body)
}

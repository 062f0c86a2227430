//! Liveness and readiness for orchestrators.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::callers::KeyStore;
use crate::error::ApiError;
use crate::events::QpienWebhooks;
use crate::metrics::Metrics;
use crate::telemetry::RequestId;
use crate::upstream::{BreakerState, Class, QpienClient};

/// Health report.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` for liveness, `ready` for readiness.
    #[schema(example = "ready")]
    status: &'static str,
    /// `service` (the facade holds its own Qpien credentials) or `pass-through`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "service")]
    mode: Option<&'static str>,
    /// State of the circuit breaker toward Qpien: `closed`, `half-open` or `open`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "closed")]
    circuit_breaker: Option<&'static str>,
    /// Service mode: what is left of this minute's budget of reads toward Qpien. A spent
    /// budget does not make the service unready: it still answers from its cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<Budget>,
    /// Where the rate budget, token and read cache are kept: `redis` (shared by the
    /// replicas), `in-process` (no `REDIS_URL`), or `in-process (Redis unreachable)`, when
    /// this replica goes on alone with its share of the budget until Redis answers again.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "redis")]
    shared_state: Option<&'static str>,
    /// With `QPIEN_WEBHOOK_SECRET`: when this replica last received a Qpien webhook
    /// delivery with a valid signature. Never a reason for 503: a quiet account sends
    /// none; alert on the metric instead, where Qpien is expected to be busy.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhooks: Option<Webhooks>,
    /// With `API_KEYS_FILE`: the caller keys in force and whether the file can be read.
    /// A file that cannot is not a reason for 503: the last good keys stay in force, and
    /// every replica reads the same file, so a bad edit would otherwise take them all out
    /// at once. Alert on `qpien_rest_caller_keys_reload_failing` instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    caller_keys: Option<CallerKeys>,
}

/// The caller keys in force, from `API_KEYS_FILE`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallerKeys {
    /// Keys in force.
    #[schema(example = 3)]
    count: usize,
    /// When they were read from the file (RFC 3339).
    #[schema(example = "2026-12-02T07:30:00.123Z")]
    loaded_at: String,
    /// Since when the file cannot be used (RFC 3339): the keys in force are older than
    /// the file, a key revoked since included. `null` while the file is fine.
    #[schema(example = "2026-12-02T07:31:02.480Z")]
    reload_failing_since: Option<String>,
    /// Why, in a word: `missing`, `unreadable` or `invalid` (the log says more);
    /// `null` while the file is fine.
    #[schema(example = "invalid")]
    reload_failure: Option<&'static str>,
}

fn rfc3339(at: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl CallerKeys {
    fn of(keys: &KeyStore) -> Self {
        let health = keys.health();
        Self {
            count: keys.current().len(),
            loaded_at: rfc3339(health.loaded_at),
            reload_failing_since: health.failing.map(|f| rfc3339(f.since)),
            reload_failure: health.failing.map(|f| f.reason),
        }
    }
}

/// What this replica last heard from Qpien's webhooks.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhooks {
    /// When the last verified delivery arrived (RFC 3339), `null` before the first.
    #[schema(example = "2026-12-02T07:30:00.123Z")]
    last_verified_at: Option<String>,
    /// Seconds since then, `null` before the first.
    #[schema(example = 12)]
    seconds_since_last_verified: Option<u64>,
}

impl Webhooks {
    fn of(receiver: &QpienWebhooks) -> Self {
        let last = receiver.last_verified();
        Self {
            last_verified_at: last.map(rfc3339),
            seconds_since_last_verified: last.map(|at| at.elapsed().unwrap_or_default().as_secs()),
        }
    }
}

/// The rate budget toward Qpien, as the `X-RateLimit-*` fields report it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Requests per minute.
    #[schema(example = 100)]
    limit: u32,
    /// Reads that may still be sent in the current window.
    #[schema(example = 87)]
    remaining: u32,
    /// Seconds until the budget is whole again.
    #[schema(example = 41)]
    reset_seconds: u64,
}

/// Liveness
///
/// Answers 200 as long as the process serves HTTP. It does not call Qpien.
#[utoipa::path(
    tag = "Operations",
    operation_id = "checkLiveness",
    responses((status = 200, description = "The process is alive.", body = Health))
)]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        mode: None,
        circuit_breaker: None,
        budget: None,
        shared_state: None,
        webhooks: None,
        caller_keys: None,
    })
}

/// Readiness
///
/// Answers 200 when Qpien answers GraphQL, the circuit breaker is not open and, in service
/// mode, the facade holds a valid access token (it fetches one if needed); 503 otherwise.
/// A used-up rate budget is not a reason for 503: the service still answers from its cache
/// and gives honest 429s, and a load balancer pulling every replica when callers poll
/// hardest would turn a rate limit into an outage. The body reports the budget.
#[utoipa::path(
    tag = "Operations",
    operation_id = "checkReadiness",
    responses((status = 200, description = "Ready to serve.", body = Health))
)]
#[get("/readyz")]
pub async fn readyz(
    client: web::Data<QpienClient>,
    request_id: web::ReqData<RequestId>,
    webhooks: Option<web::Data<QpienWebhooks>>,
    keys: Option<web::Data<KeyStore>>,
) -> Result<HttpResponse, ApiError> {
    let breaker = client.breaker_state();
    if breaker == BreakerState::Open {
        return Err(ApiError::NotReady(
            "the circuit breaker toward Qpien is open".into(),
        ));
    }
    client.check_ready(&request_id.0).await.map_err(|e| {
        // The kind only: the error's text may carry Qpien's own words, which the
        // log (of the problem) keeps.
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::NotReady(format!("Qpien is not usable ({}).", e.kind()))
    })?;
    let mode = if client.is_service_mode() {
        "service"
    } else {
        "pass-through"
    };
    let budget = client.credentials().service().map(|service| {
        let report = client.budget_report(&service, Class::Read);
        Budget {
            limit: report.limit,
            remaining: report.remaining,
            reset_seconds: report.reset.as_secs() + u64::from(report.reset.subsec_nanos() > 0),
        }
    });
    Ok(HttpResponse::Ok().json(Health {
        status: "ready",
        mode: Some(mode),
        circuit_breaker: Some(client.breaker_state().as_str()),
        budget,
        shared_state: Some(client.shared_state()),
        webhooks: webhooks.as_ref().map(|w| Webhooks::of(w)),
        caller_keys: keys.as_ref().map(|k| CallerKeys::of(k)),
    }))
}

/// Metrics
///
/// Prometheus metrics in the OpenMetrics text format: requests by route and status with
/// latency histograms, calls to Qpien by operation and outcome, retries, circuit breaker
/// state, rate-limit waits and rejections, token renewals.
#[utoipa::path(
    tag = "Operations",
    operation_id = "getMetrics",
    responses((status = 200, description = "The metrics.", content_type = "application/openmetrics-text", body = String))
)]
#[get("/metrics")]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics.encode())
}

//! Prometheus metrics, served as text at `/metrics`. One `Metrics` per application (not a
//! process global), so tests that run many applications in one process each read their own.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub read: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub upstream_calls: Family<UpstreamLabels, Counter>,
    pub upstream_duration: Family<OperationLabels, Histogram>,
    pub upstream_retries: Family<OperationLabels, Counter>,
    /// 0 closed, 1 half-open, 2 open.
    pub breaker_state: Gauge,
    pub rate_limit_waits: Counter,
    pub rate_limit_rejections: Counter,
    pub token_renewals: Family<OutcomeLabels, Counter>,
    pub reads: Family<ReadLabels, Counter>,
    pub conditional_responses: Family<StatusLabels, Counter>,
}

fn latency() -> Histogram {
    // 5 ms to ~20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("qpien_rest");
        let m = Self {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency),
            upstream_calls: Family::default(),
            upstream_duration: Family::new_with_constructor(latency),
            upstream_retries: Family::default(),
            breaker_state: Gauge::default(),
            rate_limit_waits: Counter::default(),
            rate_limit_rejections: Counter::default(),
            token_renewals: Family::default(),
            reads: Family::default(),
            conditional_responses: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests served, by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            m.http_duration.clone(),
        );
        registry.register(
            "upstream_calls",
            "Calls to Qpien by GraphQL operation and outcome (ok or the error kind)",
            m.upstream_calls.clone(),
        );
        registry.register(
            "upstream_call_duration_seconds",
            "Time of one call to Qpien, by operation",
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_retries",
            "Retries of read operations toward Qpien",
            m.upstream_retries.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker toward Qpien: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "rate_limit_waits",
            "Requests that waited for upstream rate budget",
            m.rate_limit_waits.clone(),
        );
        registry.register(
            "rate_limit_rejections",
            "Requests refused with 429 because the upstream rate budget was used up",
            m.rate_limit_rejections.clone(),
        );
        registry.register(
            "token_renewals",
            "Access token requests (generateOAuthToken) in service mode, by outcome",
            m.token_renewals.clone(),
        );
        registry.register(
            "reads",
            "Reads of conversations and pages by result: hit (fresh from the cache), miss (this request called Qpien), coalesced (waited on another request's call), stale (cached answer served because Qpien could not answer)",
            m.reads.clone(),
        );
        registry.register(
            "conditional_responses",
            "Answers to conditional requests: 304 Not Modified (If-None-Match) and 412 Precondition Failed (If-Match)",
            m.conditional_responses.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn read(&self, read: &'static str, result: &'static str) {
        self.reads.get_or_create(&ReadLabels { read, result }).inc();
    }

    pub fn conditional(&self, status: u16) {
        self.conditional_responses
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    pub fn observe_upstream(
        &self,
        operation: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.upstream_calls
            .get_or_create(&UpstreamLabels { operation, outcome })
            .inc();
        self.upstream_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// Middleware: counts every response by route pattern (not raw path, so ids do not
/// explode the label set) and status, and times it.
pub async fn record(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<actix_web::web::Data<Metrics>>().cloned();
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = response
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = response.status().as_u16();
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.clone(),
                route: route.clone(),
                status,
            })
            .inc();
        metrics
            .http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(response)
}

//! Prometheus metrics, served as text at `/metrics`. One `Metrics` per application (not a
//! process global), so tests that run many applications in one process each read their own.
//!
//! Series labelled by caller `key` stay bounded: key ids come from the keys file only,
//! never from what a request sends.

use std::borrow::Cow;
use std::time::Duration;

use actix_web::HttpMessage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `method` borrows the standard methods' names; `route` is a pattern (`routes::label::route_label`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: Cow<'static, str>,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: Cow<'static, str>,
    pub route: &'static str,
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
pub struct SubscriptionLabels {
    pub subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStatusLabels {
    pub key: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// `kind` names what the value was (`read`, `change`, `generation`, `token`, `lock`,
/// `budget`, `event`, `reply`), `reason` why it was refused (`state::trust::Rejected`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// Every `(kind, reason)` a value from Redis can be refused for, exported from the start
/// at 0 so the series exist before the first refusal (and `increase()` sees it).
pub const REDIS_REJECTIONS: [(&str, &str); 14] = [
    ("read", "unauthenticated"),
    ("read", "future"),
    ("read", "malformed"),
    ("change", "future"),
    ("change", "malformed"),
    ("generation", "malformed"),
    ("token", "unauthenticated"),
    ("token", "future"),
    ("token", "malformed"),
    ("lock", "unexpiring"),
    ("budget", "malformed"),
    ("reply", "malformed"),
    ("event", "unauthenticated"),
    ("event", "malformed"),
];

/// `type` is a known Qpien event type, `other` or `none` (a delivery not read that far).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub r#type: &'static str,
    pub outcome: &'static str,
}

/// `source` is `facade` (an update made through it) or `qpien` (a webhook delivery).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub source: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    pub scope: &'static str,
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
    /// 1 while Redis (`REDIS_URL`) answers, 0 while it does not or none is configured.
    pub redis_up: Gauge,
    /// 1 when `REDIS_URL` is set, so an alert on `redis_up` can tell down from absent.
    pub redis_configured: Gauge,
    /// Values read from Redis that were not used, by kind and reason.
    pub redis_values_rejected: Family<RejectedLabels, Counter>,
    pub conditional_responses: Family<StatusLabels, Counter>,
    /// Requests made with a caller key, by key id and status (403 and 429 included).
    pub caller_requests: Family<KeyStatusLabels, Counter>,
    /// 401s for a missing or unknown caller key: no key id to name.
    pub caller_unauthorized: Family<ReasonLabels, Counter>,
    /// Pass-through mode: requests answered before Qpien, by reason (`rejected`: Qpien
    /// refused the bearer a moment ago; `client-cap`, `total-cap`: unproven bearers).
    pub bearer_refusals: Family<ReasonLabels, Counter>,
    /// Calls to Qpien on behalf of a caller key; see `key_upstream_call`.
    pub caller_upstream_calls: Family<KeyLabels, Counter>,
    /// Caller keys in force.
    pub caller_keys: Gauge,
    /// Looks at a changed keys file, by outcome (`reloaded` or `kept`: the file could not
    /// be used and the last good keys stayed).
    pub caller_keys_reloads: Family<OutcomeLabels, Counter>,
    /// 1 while the keys file cannot be used (the last good keys are in force), else 0.
    pub caller_keys_reload_failing: Gauge,
    /// When the keys in force were read from the file, seconds since 1970.
    pub caller_keys_last_loaded: Gauge,
    /// Qpien webhook deliveries, by event type and outcome.
    pub webhook_events: Family<WebhookLabels, Counter>,
    /// Changes recorded against the cache, by scope (`conversation` or `everything`).
    pub invalidations: Family<ScopeLabels, Counter>,
    /// When the last delivery with a valid signature arrived, seconds since 1970; 0 before one.
    pub webhook_last_verified: Gauge,
    /// 1 when `QPIEN_WEBHOOK_SECRET` is set, so an alert on the silence can tell a
    /// quiet receiver from none.
    pub webhooks_configured: Gauge,
    /// Events offered to the event log, by source and outcome.
    pub events: Family<EventLabels, Counter>,
    /// Server-sent event streams open now.
    pub event_streams: Gauge,
    /// Streams refused because their caller key had as many open as allowed.
    pub event_streams_refused: Counter,
    /// Webhook subscription delivery attempts, by outcome.
    pub subscription_deliveries: Family<OutcomeLabels, Counter>,
    /// Delivery attempts that were retries of a failed one.
    pub subscription_retries: Counter,
    /// Events read for subscriptions and not yet delivered (at most a page each).
    pub subscription_backlog: Gauge,
    /// From an event's `occurredAt` to its successful delivery.
    pub subscription_latency: Histogram,
    /// Per subscription this replica delivers: the `occurredAt` (seconds since 1970) of
    /// the oldest event it has not delivered yet, 0 when it has delivered everything.
    /// One series per subscription held here, removed when it stops here.
    pub subscription_oldest_pending: Family<SubscriptionLabels, Gauge>,
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
            redis_up: Gauge::default(),
            redis_configured: Gauge::default(),
            redis_values_rejected: Family::default(),
            conditional_responses: Family::default(),
            caller_requests: Family::default(),
            caller_unauthorized: Family::default(),
            caller_upstream_calls: Family::default(),
            bearer_refusals: Family::default(),
            caller_keys: Gauge::default(),
            caller_keys_reloads: Family::default(),
            caller_keys_reload_failing: Gauge::default(),
            caller_keys_last_loaded: Gauge::default(),
            webhook_events: Family::default(),
            invalidations: Family::default(),
            webhook_last_verified: Gauge::default(),
            webhooks_configured: Gauge::default(),
            events: Family::default(),
            event_streams: Gauge::default(),
            event_streams_refused: Counter::default(),
            subscription_deliveries: Family::default(),
            subscription_retries: Counter::default(),
            subscription_backlog: Gauge::default(),
            // 1 ms to ~16 s: steady-state deliveries take milliseconds.
            subscription_latency: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            subscription_oldest_pending: Family::default(),
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
            "redis_up",
            "1 while Redis (REDIS_URL) answers and the replicas share their state through it; 0 while it does not, or none is configured",
            m.redis_up.clone(),
        );
        registry.register(
            "redis_configured",
            "1 when REDIS_URL is set (redis_up then says whether it answers), 0 otherwise",
            m.redis_configured.clone(),
        );
        registry.register(
            "redis_values_rejected",
            "Values read from Redis that were ignored (treated as a miss, Redis kept up), by kind (read, change, generation, token, lock, budget, event, reply) and reason: unauthenticated (no valid MAC: not written by a replica holding the shared secret), future (dated ahead beyond the clock skew), malformed (does not decode), unexpiring (a lock without expiry, taken over)",
            m.redis_values_rejected.clone(),
        );
        registry.register(
            "conditional_responses",
            "Answers to conditional requests: 304 Not Modified (If-None-Match) and 412 Precondition Failed (If-Match)",
            m.conditional_responses.clone(),
        );
        registry.register(
            "caller_requests",
            "Requests made with a caller key, by key id and status",
            m.caller_requests.clone(),
        );
        registry.register(
            "caller_unauthorized",
            "Requests refused with 401 for a missing or unknown caller key, by reason",
            m.caller_unauthorized.clone(),
        );
        registry.register(
            "bearer_refusals",
            "Pass-through mode: requests answered without calling Qpien, by reason (rejected: Qpien refused the bearer a moment ago; client-cap or total-cap: too many requests with bearers Qpien has not yet accepted)",
            m.bearer_refusals.clone(),
        );
        registry.register(
            "caller_upstream_calls",
            "Calls to Qpien made on behalf of a caller key, by key id",
            m.caller_upstream_calls.clone(),
        );
        registry.register("caller_keys", "Caller keys in force", m.caller_keys.clone());
        registry.register(
            "caller_keys_reloads",
            "Changes of the caller keys file seen, by outcome (reloaded, or kept the last good keys)",
            m.caller_keys_reloads.clone(),
        );
        registry.register(
            "caller_keys_reload_failing",
            "1 while the caller keys file cannot be read or parsed, so the last good keys (a revoked one included) stay in force; 0 otherwise",
            m.caller_keys_reload_failing.clone(),
        );
        registry.register(
            "caller_keys_last_loaded_timestamp_seconds",
            "When the caller keys in force were read from the file (Unix time)",
            m.caller_keys_last_loaded.clone(),
        );
        registry.register(
            "webhook_events",
            "Qpien webhook deliveries by event type (a known type, other, or none when not read that far) and outcome: applied, duplicate, unknown-type (applied too), bad-signature, too-large, malformed, not-recorded (Redis did not take it: answered 503 for Qpien to retry)",
            m.webhook_events.clone(),
        );
        registry.register(
            "invalidations",
            "Changes recorded against the read cache from Qpien's webhooks, by scope: conversation, or everything when a delivery names none",
            m.invalidations.clone(),
        );
        registry.register(
            "webhook_last_verified_timestamp_seconds",
            "When the last Qpien webhook delivery with a valid signature arrived (Unix time; 0 before the first). Alert on time() minus this when Qpien is expected to be busy",
            m.webhook_last_verified.clone(),
        );
        registry.register(
            "webhooks_configured",
            "1 when QPIEN_WEBHOOK_SECRET is set and this replica receives Qpien's webhooks, 0 otherwise",
            m.webhooks_configured.clone(),
        );
        registry.register(
            "events",
            "Changes offered to the event log (the change feed), by source (facade: an update made through it; qpien: a webhook delivery) and outcome (recorded; same-state: an update showing the state the conversation's last update event showed, e.g. Qpien's report of an update made through the facade, not recorded again; failed: the store did not take it)",
            m.events.clone(),
        );
        registry.register(
            "event_streams",
            "Server-sent event streams (GET /events) open on this replica",
            m.event_streams.clone(),
        );
        registry.register(
            "event_streams_refused",
            "Event streams refused with 429 because the caller key had EVENT_STREAMS_PER_KEY open already",
            m.event_streams_refused.clone(),
        );
        registry.register(
            "subscription_deliveries",
            "Webhook subscription delivery attempts, by outcome: delivered (2xx), failed (another status, a timeout or no connection: retried with backoff), gone (410: the subscription was removed), disabled (failed for the whole retry horizon)",
            m.subscription_deliveries.clone(),
        );
        registry.register(
            "subscription_retries",
            "Webhook subscription delivery attempts that retried a failed one",
            m.subscription_retries.clone(),
        );
        registry.register(
            "subscription_backlog_events",
            "Events read for webhook subscriptions on this replica and not yet delivered (at most a page of 100 per subscription is counted)",
            m.subscription_backlog.clone(),
        );
        registry.register(
            "subscription_delivery_latency_seconds",
            "Time from an event's occurredAt to its successful delivery to a subscriber",
            m.subscription_latency.clone(),
        );
        registry.register(
            "subscription_oldest_pending_timestamp_seconds",
            "Per webhook subscription delivered by this replica: when the oldest event it has not delivered yet happened (occurredAt, seconds since 1970), 0 when it has delivered everything; time() minus it is how far behind the subscription is",
            m.subscription_oldest_pending.clone(),
        );
        // Exported at 0 from the start, so that an alert on failures has a series to watch.
        for source in ["facade", "qpien"] {
            for outcome in ["recorded", "same-state", "failed"] {
                let _ = m.events.get_or_create(&EventLabels { source, outcome });
            }
        }
        for (kind, reason) in REDIS_REJECTIONS {
            let _ = m
                .redis_values_rejected
                .get_or_create(&RejectedLabels { kind, reason });
        }
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    pub fn event(&self, source: &'static str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels { source, outcome })
            .inc();
    }

    pub fn webhook(&self, kind: &'static str, outcome: &'static str) {
        self.webhook_events
            .get_or_create(&WebhookLabels {
                r#type: kind,
                outcome,
            })
            .inc();
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

impl Metrics {
    /// The hook for the upstream path: call it once for each HTTP request actually sent
    /// to Qpien on behalf of caller key `key_id` (`Caller::key_id`), retries included,
    /// where the key's share is spent; never for answers served without Qpien (cache
    /// hits, coalesced reads, refusals).
    pub fn key_upstream_call(&self, key_id: &str) {
        self.caller_upstream_calls
            .get_or_create(&KeyLabels {
                key: key_id.to_owned(),
            })
            .inc();
    }

    /// A 401 for a missing (`missing`) or unknown (`unknown`) caller key.
    pub fn caller_unauthorized(&self, reason: &'static str) {
        self.caller_unauthorized
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn bearer_refused(&self, reason: &'static str) {
        self.bearer_refusals
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// The id of the caller key a request came with, in its extensions for `record`.
#[derive(Clone, Debug)]
pub struct KeyId(pub String);

/// Middleware: counts every response by route pattern (not raw path, so ids do not
/// explode the label set) and status, and times it.
pub async fn record(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let metrics = req.app_data::<actix_web::web::Data<Metrics>>().cloned();
    let method = method_label(req.method());
    let route = crate::routes::label::route_label(req.path());
    let started = std::time::Instant::now();
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let status = response.status().as_u16();
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                method: method.clone(),
                route,
                status,
            })
            .inc();
        metrics
            .http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(started.elapsed().as_secs_f64());
        // Put there by the `Caller` extractor once the key is known.
        let key = response
            .request()
            .extensions()
            .get::<KeyId>()
            .map(|k| k.0.clone());
        if let Some(key) = key {
            metrics
                .caller_requests
                .get_or_create(&KeyStatusLabels { key, status })
                .inc();
        }
    }
    Ok(response)
}

/// The method's name, borrowed when it is one of the standard ones.
fn method_label(method: &actix_web::http::Method) -> Cow<'static, str> {
    use actix_web::http::Method;
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::PATCH, "PATCH"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD.iter().find(|(m, _)| m == method).map_or_else(
        || Cow::Owned(method.as_str().to_owned()),
        |(_, name)| Cow::Borrowed(*name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_calls_are_counted_by_key_id() {
        let metrics = Metrics::default();

        metrics.key_upstream_call("crm");
        metrics.key_upstream_call("crm");
        metrics.key_upstream_call("bi");

        let text = metrics.encode();
        assert!(
            text.contains(r#"qpien_rest_caller_upstream_calls_total{key="crm"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"qpien_rest_caller_upstream_calls_total{key="bi"} 1"#),
            "{text}"
        );
    }
}

//! The HTTP side of the read layer: what a request asks of the cache (`If-None-Match`,
//! `Cache-Control: no-cache`, `If-Match`) and what an answer says about it (`ETag`,
//! `Cache-Control`, `Vary`, `Age`, RFC 9211 `Cache-Status`, the rate-limit fields).

use std::fmt;
use std::io::Write;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};

use crate::domain::InvalidParam;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::reads::cache::CacheLimits;
use crate::reads::etag::{Condition, ETag};
use crate::reads::{Freshness, Served, Source, StaleReason};
use crate::upstream::{BudgetReport, UpstreamError};

/// The name this cache goes by in `Cache-Status`.
const CACHE_NAME: &str = "qpien-rest";

/// What a GET asks of the cache.
pub struct Conditional {
    pub freshness: Freshness,
    if_none_match: Option<Condition>,
}

impl Conditional {
    /// `Cache-Control: no-cache` (or `max-age=0`) asks for Qpien's answer. An
    /// `If-None-Match` that is no list of entity tags matches nothing: the full answer is
    /// sent, which is always safe for a read (unlike `If-Match`, see `if_match`).
    pub fn of(req: &HttpRequest) -> Self {
        let revalidate = req
            .headers()
            .get_all(header::CACHE_CONTROL)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().to_ascii_lowercase())
            .any(|d| d == "no-cache" || d == "max-age=0");
        Self {
            freshness: if revalidate {
                Freshness::Revalidate
            } else {
                Freshness::Cached
            },
            if_none_match: joined(req.headers(), header::IF_NONE_MATCH)
                .and_then(|v| Condition::parse(&v).ok()),
        }
    }

    /// Whether the caller already holds the representation tagged `etag`.
    pub fn not_modified(&self, etag: ETag) -> bool {
        self.if_none_match
            .as_ref()
            .is_some_and(|condition| !condition.none_match(etag))
    }
}

/// `If-Match`, or a 400 naming the header when it is no list of entity tags: an update
/// guarded by a tag the service cannot read must not go through unguarded.
pub fn if_match(req: &HttpRequest) -> Result<Option<Condition>, ApiError> {
    joined(req.headers(), header::IF_MATCH)
        .map(|value| {
            Condition::parse(&value).map_err(|_| {
                ApiError::InvalidParameters(vec![InvalidParam::parameter(
                    "If-Match",
                    "must be * or a list of entity tags such as \"0123456789abcdef\", as the ETag header gives them",
                )])
            })
        })
        .transpose()
}

/// Repeated fields joined by commas, as RFC 9110 §5.3 combines them.
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// How an answer was made, for its headers.
pub struct Answered<'a> {
    pub served: &'a Served,
    pub etag: ETag,
    /// `etag` as its field value.
    pub etag_header: HeaderValue,
    pub limits: CacheLimits,
    pub cache_control: &'a HeaderValue,
    /// Pass-through mode: the answer depends on the caller's `Authorization`.
    pub per_bearer: bool,
}

impl Answered<'_> {
    /// A 200 with `body`, or a 304 when the caller holds this representation already.
    pub fn respond(
        &self,
        conditional: &Conditional,
        budget: BudgetReport,
        metrics: &Metrics,
        body: impl actix_web::body::MessageBody + 'static,
    ) -> HttpResponse {
        let not_modified = conditional.not_modified(self.etag);
        let mut response = if not_modified {
            metrics.conditional(304);
            HttpResponse::NotModified()
        } else {
            HttpResponse::Ok()
        };
        rate_headers(&mut response, budget);
        response
            .insert_header((header::ETAG, self.etag_header.clone()))
            .insert_header((header::CACHE_CONTROL, self.cache_control.clone()))
            .insert_header((CACHE_STATUS, self.cache_status()));
        if self.per_bearer {
            response.insert_header((header::VARY, HeaderValue::from_static("Authorization")));
        }
        if matches!(self.served.source, Source::Hit | Source::Stale(_)) {
            let age = self.served.entry.age().as_secs();
            response.insert_header((header::AGE, HeaderValue::from(age)));
        }
        if not_modified {
            response.finish()
        } else {
            response.content_type(mime_json()).body(body)
        }
    }

    /// RFC 9211: `hit` with the seconds of freshness left (negative when stale), or
    /// `fwd=` why Qpien was asked, `collapsed` when another request's call answered,
    /// `stored` when the answer was kept.
    fn cache_status(&self) -> HeaderValue {
        let ttl = self.limits.ttl.as_secs_f64() - self.served.entry.age().as_secs_f64();
        let ttl = ttl.floor() as i64;
        match self.served.source {
            Source::Hit => field_value(format_args!("{CACHE_NAME}; hit; ttl={ttl}")),
            Source::Miss if self.limits.ttl.is_zero() => {
                HeaderValue::from_static("qpien-rest; fwd=miss")
            }
            Source::Miss => HeaderValue::from_static("qpien-rest; fwd=miss; stored"),
            Source::Coalesced => HeaderValue::from_static("qpien-rest; fwd=miss; collapsed"),
            Source::Stale(StaleReason {
                detail,
                upstream_status: Some(status),
            }) => field_value(format_args!(
                "{CACHE_NAME}; hit; ttl={ttl}; fwd=stale; fwd-status={status}; detail={detail}"
            )),
            Source::Stale(StaleReason {
                detail,
                upstream_status: None,
            }) => field_value(format_args!(
                "{CACHE_NAME}; hit; ttl={ttl}; fwd=stale; detail={detail}"
            )),
        }
    }
}

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A field value formatted on the stack: those made for each answer (`Cache-Status`,
/// the rate-limit fields) are short ASCII.
fn field_value(args: fmt::Arguments) -> HeaderValue {
    const ROOM: usize = 128;
    let mut value = [0u8; ROOM];
    let mut rest = &mut value[..];
    rest.write_fmt(args)
        .expect("128 bytes hold any of our field values");
    let len = ROOM - rest.len();
    HeaderValue::from_bytes(&value[..len]).expect("visible ASCII")
}

fn mime_json() -> HeaderValue {
    HeaderValue::from_static("application/json")
}

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A budget as response fields: `X-RateLimit-*` (Qpien's own names) and the IETF
/// `RateLimit-Policy` / `RateLimit`. Numbers are formatted on the stack.
fn rate_fields(report: BudgetReport) -> [(HeaderName, HeaderValue); 5] {
    let reset = report.reset.as_secs() + u64::from(report.reset.subsec_nanos() > 0);
    [
        (X_RATELIMIT_LIMIT, HeaderValue::from(report.limit)),
        (X_RATELIMIT_REMAINING, HeaderValue::from(report.remaining)),
        (X_RATELIMIT_RESET, HeaderValue::from(reset)),
        (
            RATELIMIT_POLICY,
            field_value(format_args!("\"qpien\";q={};w=60", report.limit)),
        ),
        (
            RATELIMIT,
            field_value(format_args!("\"qpien\";r={};t={reset}", report.remaining)),
        ),
    ]
}

/// The remaining upstream budget of the caller's credential.
pub fn rate_headers(response: &mut HttpResponseBuilder, report: BudgetReport) {
    for field in rate_fields(report) {
        response.insert_header(field);
    }
}

/// An upstream failure as its problem; a 429 carries the rate-limit fields too, so a
/// client's retry policy sees the budget as it does on a success.
pub fn failure(
    error: UpstreamError,
    budget: impl FnOnce() -> BudgetReport,
) -> Result<HttpResponse, ApiError> {
    let error = ApiError::Upstream(error);
    if error.status_code() != StatusCode::TOO_MANY_REQUESTS {
        return Err(error);
    }
    let mut response = error.error_response();
    for (name, value) in rate_fields(budget()) {
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_rate_fields_spell_the_budget() {
        let report = BudgetReport {
            limit: 90,
            remaining: 7,
            reset: Duration::from_millis(1500),
        };
        let fields =
            rate_fields(report).map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()));
        assert_eq!(
            fields,
            [
                "x-ratelimit-limit: 90",
                "x-ratelimit-remaining: 7",
                "x-ratelimit-reset: 2",
                "ratelimit-policy: \"qpien\";q=90;w=60",
                "ratelimit: \"qpien\";r=7;t=2",
            ]
        );
    }
}

//! One error type for the HTTP edge, one table from outcome to status, one body shape:
//! RFC 9457 `application/problem+json`. Callers get a clean message; the log gets the
//! cause chain, once, here.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::callers::Scope;
use crate::domain::InvalidParam;
use crate::upstream::{Cap, UpstreamError};

tokio::task_local! {
    /// The request being served, so problem bodies can name it wherever they are built.
    pub static REQUEST: RequestContext;
}

#[derive(Clone, Debug)]
pub struct RequestContext {
    pub id: String,
    pub path: String,
}

pub const PROBLEM_JSON: &str = "application/problem+json";
/// The RFC 6750 challenge for caller keys; realm `qpien` is Qpien's own token.
const CALLER_REALM: &str = "Bearer realm=\"qpien-rest\"";
/// The challenge of a refused webhook delivery (RFC 9110 wants one with every 401): the
/// signature header is the scheme.
pub const WEBHOOK_CHALLENGE: &str = "X-Qpien-Signature realm=\"qpien-webhooks\"";
/// Media types `PATCH` accepts, as announced in `Accept-Patch`.
pub const ACCEPT_PATCH: &str = "application/merge-patch+json, application/json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request parameters")]
    InvalidParameters(Vec<InvalidParam>),
    #[error("malformed request body: {0}")]
    MalformedBody(String),
    #[error("invalid request body")]
    InvalidBody(Vec<InvalidParam>),
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(Option<String>),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("no bearer token in pass-through mode")]
    MissingCredentials,
    #[error("no caller key")]
    MissingApiKey,
    #[error("unknown caller key")]
    InvalidApiKey,
    #[error("caller key {key_id:?} lacks the scope {}", scope.as_str())]
    KeyLacksScope { key_id: String, scope: Scope },
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not ready: {0}")]
    NotReady(String),
    /// `If-Match` named no current tag; the conversation's current `ETag`.
    #[error("If-Match does not match the conversation as Qpien has it")]
    PreconditionFailed(String),
    #[error("a webhook delivery without a valid signature")]
    InvalidSignature,
    #[error("the shared state did not take a change Qpien reported")]
    ChangeNotRecorded,
    #[error("the cursor is older than the change feed's retention, or not from it")]
    CursorGone,
    #[error("the event log is unavailable: {0}")]
    EventLogUnavailable(String),
    #[error("the caller key has {0} event streams open")]
    TooManyStreams(u32),
    #[error("no change feed in pass-through mode")]
    FeedNotOffered,
    #[error("no such subscription for this caller")]
    SubscriptionNotFound,
    #[error("the caller has {0} subscriptions, as many as allowed")]
    TooManySubscriptions(u32),
    #[error("the callback URL is refused: it {0}")]
    CallbackUrlRefused(String),
    #[error("the subscription store is unavailable: {0}")]
    SubscriptionsUnavailable(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// An RFC 9457 problem detail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "type": "/problems/invalid-parameters",
    "title": "Invalid request parameters",
    "status": 400,
    "detail": "1 query or path parameter is invalid; see errors.",
    "instance": "/conversations",
    "requestId": "3f1c2a8e-8a52-4a57-9d54-5b1a0f6f3a11",
    "errors": [{"parameter": "pageSize", "detail": "must be a whole number from 1 to 100"}]
}))]
pub struct Problem {
    /// URI reference naming the kind of problem; `GET` it for a description.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of problem; the same for every occurrence.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person to read.
    pub detail: String,
    /// The path of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Qpien's error code, where the problem comes from Qpien (e.g. `TOKEN_EXPIRED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "INSUFFICIENT_SCOPES")]
    pub code: Option<String>,
    /// The scope the token or caller key lacks, with 403.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "write_conversations")]
    pub required_scope: Option<String>,
    /// The request id, also in the `X-Request-Id` header: quote it when reporting a problem.
    pub request_id: String,
    /// Every offending input, with 400 and 422.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<InvalidParam>,
}

/// A kind of problem. `GET /problems/{slug}` serves its explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProblemKind {
    /// The last part of the problem's `type`.
    pub slug: &'static str,
    pub status: u16,
    pub title: &'static str,
    /// What it means and what to do, for a person.
    pub explanation: &'static str,
}

pub const INVALID_PARAMETERS: ProblemKind = ProblemKind {
    slug: "invalid-parameters",
    status: 400,
    title: "Invalid request parameters",
    explanation: "A query or path parameter is missing, unknown, repeated, or has a value outside what the route accepts. Each offending parameter is listed in `errors`. Nothing was sent to Qpien.",
};
pub const MALFORMED_BODY: ProblemKind = ProblemKind {
    slug: "malformed-body",
    status: 400,
    title: "Malformed request body",
    explanation: "The body is not JSON, not a JSON object, or names a member twice in one object (the detail says which). Nothing was sent to Qpien.",
};
pub const MISSING_CREDENTIALS: ProblemKind = ProblemKind {
    slug: "missing-credentials",
    status: 401,
    title: "Missing bearer token",
    explanation: "In pass-through mode every request must carry `Authorization: Bearer <Qpien access token>`. Nothing was sent to Qpien.",
};
pub const MISSING_API_KEY: ProblemKind = ProblemKind {
    slug: "missing-api-key",
    status: 401,
    title: "Missing caller key",
    explanation: "This service requires a caller key: send it as `Authorization: Bearer <key>` or as `X-API-Key: <key>`. The operator of the service creates keys (`qpien-rest keys add`). Nothing was sent to Qpien.",
};
pub const INVALID_API_KEY: ProblemKind = ProblemKind {
    slug: "invalid-api-key",
    status: 401,
    title: "Unknown caller key",
    explanation: "The caller key is not one this service knows: mistyped, truncated, or revoked. Ask the operator of the service for a valid key. Nothing was sent to Qpien.",
};
pub const UPSTREAM_UNAUTHORIZED: ProblemKind = ProblemKind {
    slug: "upstream-unauthorized",
    status: 401,
    title: "Qpien refused the access token",
    explanation: "Qpien answered UNAUTHORIZED (unknown token) or TOKEN_EXPIRED (older than one hour). Get a new Qpien access token and retry.",
};
pub const INSUFFICIENT_SCOPE: ProblemKind = ProblemKind {
    slug: "insufficient-scope",
    status: 403,
    title: "The token lacks a scope",
    explanation: "Qpien answered INSUFFICIENT_SCOPES; `requiredScope` names the scope the API key needs. Scope changes apply to new tokens only.",
};
pub const INSUFFICIENT_KEY_SCOPE: ProblemKind = ProblemKind {
    slug: "insufficient-key-scope",
    status: 403,
    title: "The caller key lacks a scope",
    explanation: "The caller key is valid but does not allow this operation: reads need the scope `read`, updates the scope `write`. `requiredScope` names the one missing. Ask the operator of the service for a key with that scope. Nothing was sent to Qpien.",
};
pub const NOT_FOUND: ProblemKind = ProblemKind {
    slug: "not-found",
    status: 404,
    title: "Not found",
    explanation: "Qpien has no conversation with this id, or the route does not exist.",
};
pub const METHOD_NOT_ALLOWED: ProblemKind = ProblemKind {
    slug: "method-not-allowed",
    status: 405,
    title: "Method not allowed",
    explanation: "The route exists but not with this method.",
};
pub const PRECONDITION_FAILED: ProblemKind = ProblemKind {
    slug: "precondition-failed",
    status: 412,
    title: "Precondition failed",
    explanation: "`If-Match` names no entity tag of the conversation as Qpien has it now: someone changed it since you read it. Nothing was changed. The answer's `ETag` is the current tag: read the conversation again, decide, and retry with that tag.",
};
pub const PAYLOAD_TOO_LARGE: ProblemKind = ProblemKind {
    slug: "payload-too-large",
    status: 413,
    title: "Request body too large",
    explanation: "The request body is over the limit. Nothing was sent to Qpien.",
};
pub const UNSUPPORTED_MEDIA_TYPE: ProblemKind = ProblemKind {
    slug: "unsupported-media-type",
    status: 415,
    title: "Unsupported media type",
    explanation: "PATCH takes `application/merge-patch+json` (RFC 7396) or `application/json`. Nothing was sent to Qpien.",
};
pub const INVALID_BODY: ProblemKind = ProblemKind {
    slug: "invalid-body",
    status: 422,
    title: "Invalid request body",
    explanation: "The body is well-formed JSON but some members are unknown, read-only, of the wrong type or out of range, or it changes nothing. Each is listed in `errors`. Nothing was sent to Qpien.",
};
pub const UPSTREAM_REJECTED_INPUT: ProblemKind = ProblemKind {
    slug: "upstream-rejected-input",
    status: 422,
    title: "Qpien rejected the input",
    explanation: "Qpien refused the values (BAD_USER_INPUT), e.g. a tag name that does not exist for the customer.",
};
pub const RATE_LIMITED: ProblemKind = ProblemKind {
    slug: "rate-limited",
    status: 429,
    title: "Rate limit exhausted",
    explanation: "The budget of requests per minute toward Qpien for this credential is used up: Qpien said so, or this service stopped short of Qpien's limit so that the account is never blocked. Wait `Retry-After` seconds.",
};
pub const UNPROVEN_TOKENS_LIMITED: ProblemKind = ProblemKind {
    slug: "unproven-tokens-limited",
    status: 429,
    title: "Too many unproven tokens",
    explanation: "Pass-through mode: requests with bearer tokens Qpien has not accepted yet are capped per client address (`UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT`) and for all clients together (`UNPROVEN_CREDENTIALS_PER_MINUTE`), so made-up tokens cannot spend calls to Qpien. A token Qpien has answered for is not held back. Nothing was sent to Qpien. Wait `Retry-After` seconds.",
};
pub const UPSTREAM_ERROR: ProblemKind = ProblemKind {
    slug: "upstream-error",
    status: 502,
    title: "Qpien failed",
    explanation: "Qpien could not be reached, answered with a server error or with something that is not the expected GraphQL response, or refused the service's configured credentials (INVALID_CLIENT).",
};
pub const UNAVAILABLE: ProblemKind = ProblemKind {
    slug: "unavailable",
    status: 503,
    title: "Qpien temporarily unavailable",
    explanation: "Calls to Qpien failed repeatedly, so this service stopped sending them for a cool-down (circuit breaker) to let Qpien recover. Retry after `Retry-After` seconds.",
};
pub const NOT_READY: ProblemKind = ProblemKind {
    slug: "not-ready",
    status: 503,
    title: "Not ready",
    explanation: "The service cannot serve requests yet: Qpien is unreachable or, in service mode, no access token could be obtained.",
};
pub const UPSTREAM_TIMEOUT: ProblemKind = ProblemKind {
    slug: "upstream-timeout",
    status: 504,
    title: "Qpien did not answer in time",
    explanation: "Qpien did not answer within the configured timeout.",
};

/// Every kind, in status order: the documentation tables are made from this list.
pub const INVALID_SIGNATURE: ProblemKind = ProblemKind {
    slug: "invalid-signature",
    status: 401,
    title: "Invalid webhook signature",
    explanation: "The delivery carries no `X-Qpien-Signature`, or it is not the hex HMAC-SHA256 of the body under the webhook's secret (`QPIEN_WEBHOOK_SECRET`). Nothing was applied.",
};
pub const CHANGE_NOT_RECORDED: ProblemKind = ProblemKind {
    slug: "change-not-recorded",
    status: 503,
    title: "Change not recorded",
    explanation: "The shared state (Redis) did not take the change this delivery reports, so not every replica would see it. Nothing was applied: deliver it again (Qpien retries by itself).",
};
pub const FEED_NOT_OFFERED: ProblemKind = ProblemKind {
    slug: "feed-not-offered",
    status: 403,
    title: "No change feed in pass-through mode",
    explanation: "This service forwards each caller's own Qpien token (pass-through mode), and a token may belong to any Qpien account: the service cannot tell which without asking Qpien, so it shows the change feed, the event stream, the triggers and the webhook subscriptions to no one. They are offered in service mode, where the service holds the account's key and decides itself who may read.",
};
pub const CURSOR_GONE: ProblemKind = ProblemKind {
    slug: "cursor-gone",
    status: 410,
    title: "Cursor no longer in the change feed",
    explanation: "The cursor (`after`, or the stream's `Last-Event-ID`) names a point the change feed no longer keeps: it is older than the retention (`EVENT_LOG_RETENTION_SECS`, 7 days unless the operator says otherwise), or it comes from another installation. Start again without a cursor: the answer gives the current one, and you see every change from then on. To learn what changed in between, read the conversations themselves (`GET /conversations`).",
};
pub const TOO_MANY_STREAMS: ProblemKind = ProblemKind {
    slug: "too-many-streams",
    status: 429,
    title: "Too many event streams",
    explanation: "The caller key (or, without keys, the anonymous callers together) already holds as many event streams open on this replica as `EVENT_STREAMS_PER_KEY` allows. Close one, or share one stream between listeners, and retry after `Retry-After` seconds.",
};
pub const EVENT_LOG_UNAVAILABLE: ProblemKind = ProblemKind {
    slug: "event-log-unavailable",
    status: 503,
    title: "Change feed unavailable",
    explanation: "The store of the change feed (the embedded database, or Redis with `REDIS_URL`) did not answer, so nothing could be read. No event is lost by this: retry after `Retry-After` seconds with the same cursor.",
};
pub const SUBSCRIPTION_NOT_FOUND: ProblemKind = ProblemKind {
    slug: "subscription-not-found",
    status: 404,
    title: "No such subscription",
    explanation: "There is no webhook subscription with this id among those of your caller key: it was never created, it was deleted (by you, or because its receiver answered 410 Gone), or another key created it (a key sees only its own). List yours with `GET /subscriptions`.",
};
pub const TOO_MANY_SUBSCRIPTIONS: ProblemKind = ProblemKind {
    slug: "too-many-subscriptions",
    status: 409,
    title: "Too many subscriptions",
    explanation: "The caller key (or, without keys, the anonymous callers together) already holds as many webhook subscriptions as `SUBSCRIPTIONS_PER_KEY` allows (50 unless the operator says otherwise). Delete one you no longer need (`DELETE /subscriptions/{id}`), or widen an existing one's event types instead of adding another.",
};
pub const CALLBACK_URL_REFUSED: ProblemKind = ProblemKind {
    slug: "callback-url-refused",
    status: 422,
    title: "Callback URL refused",
    explanation: "The service will not call this URL: callbacks must be `https` URLs of hosts on the public internet. Plain `http`, and hosts that are or resolve to loopback, private, link-local, shared (CGNAT) or unique-local addresses, are refused unless the operator allows them (`SUBSCRIPTION_ALLOW_HTTP`, `SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS`); cloud metadata, multicast and unspecified addresses always are. `errors` says which rule the URL broke. Nothing was created.",
};
pub const SUBSCRIPTIONS_UNAVAILABLE: ProblemKind = ProblemKind {
    slug: "subscriptions-unavailable",
    status: 503,
    title: "Subscriptions unavailable",
    explanation: "The store of the webhook subscriptions (the embedded database, or Redis with `REDIS_URL`) did not answer, so nothing was read or changed. Deliveries already under way resume by themselves; retry after `Retry-After` seconds.",
};

pub const PROBLEM_KINDS: &[ProblemKind] = &[
    INVALID_PARAMETERS,
    MALFORMED_BODY,
    MISSING_CREDENTIALS,
    MISSING_API_KEY,
    INVALID_API_KEY,
    UPSTREAM_UNAUTHORIZED,
    INSUFFICIENT_SCOPE,
    INSUFFICIENT_KEY_SCOPE,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    PRECONDITION_FAILED,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    INVALID_BODY,
    UPSTREAM_REJECTED_INPUT,
    RATE_LIMITED,
    UNPROVEN_TOKENS_LIMITED,
    UPSTREAM_ERROR,
    UNAVAILABLE,
    NOT_READY,
    UPSTREAM_TIMEOUT,
    INVALID_SIGNATURE,
    CHANGE_NOT_RECORDED,
    FEED_NOT_OFFERED,
    CURSOR_GONE,
    TOO_MANY_STREAMS,
    EVENT_LOG_UNAVAILABLE,
    SUBSCRIPTION_NOT_FOUND,
    TOO_MANY_SUBSCRIPTIONS,
    CALLBACK_URL_REFUSED,
    SUBSCRIPTIONS_UNAVAILABLE,
];

impl ApiError {
    fn kind(&self) -> ProblemKind {
        match self {
            Self::InvalidParameters(_) => INVALID_PARAMETERS,
            Self::MalformedBody(_) => MALFORMED_BODY,
            Self::InvalidBody(_) => INVALID_BODY,
            Self::UnsupportedMediaType(_) => UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => PAYLOAD_TOO_LARGE,
            Self::MissingCredentials => MISSING_CREDENTIALS,
            Self::MissingApiKey => MISSING_API_KEY,
            Self::InvalidApiKey => INVALID_API_KEY,
            Self::KeyLacksScope { .. } => INSUFFICIENT_KEY_SCOPE,
            Self::RouteNotFound => NOT_FOUND,
            Self::MethodNotAllowed => METHOD_NOT_ALLOWED,
            Self::NotReady(_) => NOT_READY,
            Self::PreconditionFailed(_) => PRECONDITION_FAILED,
            Self::InvalidSignature => INVALID_SIGNATURE,
            Self::ChangeNotRecorded => CHANGE_NOT_RECORDED,
            Self::CursorGone => CURSOR_GONE,
            Self::EventLogUnavailable(_) => EVENT_LOG_UNAVAILABLE,
            Self::TooManyStreams(_) => TOO_MANY_STREAMS,
            Self::FeedNotOffered => FEED_NOT_OFFERED,
            Self::SubscriptionNotFound => SUBSCRIPTION_NOT_FOUND,
            Self::TooManySubscriptions(_) => TOO_MANY_SUBSCRIPTIONS,
            Self::CallbackUrlRefused(_) => CALLBACK_URL_REFUSED,
            Self::SubscriptionsUnavailable(_) => SUBSCRIPTIONS_UNAVAILABLE,
            Self::Upstream(e) => match e {
                UpstreamError::Unauthorized { .. } => UPSTREAM_UNAUTHORIZED,
                UpstreamError::InsufficientScope { .. } => INSUFFICIENT_SCOPE,
                UpstreamError::NotFound { .. } => NOT_FOUND,
                UpstreamError::BadInput { .. } => UPSTREAM_REJECTED_INPUT,
                UpstreamError::RateLimited { .. } | UpstreamError::BudgetExhausted { .. } => {
                    RATE_LIMITED
                }
                UpstreamError::UnprovenLimited { .. } => UNPROVEN_TOKENS_LIMITED,
                UpstreamError::CircuitOpen { .. } => UNAVAILABLE,
                UpstreamError::Timeout => UPSTREAM_TIMEOUT,
                UpstreamError::InvalidClient
                | UpstreamError::Unreachable(_)
                | UpstreamError::BadStatus { .. }
                | UpstreamError::InvalidResponse(_)
                | UpstreamError::Unexpected { .. } => UPSTREAM_ERROR,
            },
        }
    }

    /// What the caller reads. Upstream causes are summarised, never copied: Qpien's
    /// messages go to the log only; callers get its documented codes (`code`).
    fn detail(&self) -> String {
        match self {
            Self::InvalidParameters(errors) => format!("{} query or path parameter(s) invalid; see errors.", errors.len()),
            Self::InvalidBody(errors) => format!("{} member(s) of the merge patch invalid; see errors.", errors.len()),
            Self::MalformedBody(why) => why.clone(),
            Self::UnsupportedMediaType(found) => format!(
                "Content-Type {} is not accepted; send {ACCEPT_PATCH}.",
                found.as_deref().map_or("(none)".to_owned(), |f| format!("{f:?}"))
            ),
            Self::PayloadTooLarge(limit) => format!("The request body is over {limit} bytes."),
            Self::MissingCredentials => {
                "Send your Qpien access token as `Authorization: Bearer <token>`.".to_owned()
            }
            Self::MissingApiKey => {
                "Send your caller key as `Authorization: Bearer <key>` or `X-API-Key: <key>`.".to_owned()
            }
            Self::InvalidApiKey => "This caller key is unknown or has been revoked.".to_owned(),
            Self::KeyLacksScope { scope, .. } => format!(
                "This caller key lacks the scope {}, which this operation needs.",
                scope.as_str()
            ),
            Self::RouteNotFound => "No route matches this path.".to_owned(),
            Self::MethodNotAllowed => "This route does not support this method.".to_owned(),
            Self::NotReady(why) => why.clone(),
            Self::PreconditionFailed(_) => "The conversation changed since the tag in If-Match was issued; its current tag is in the ETag header.".to_owned(),
            Self::InvalidSignature => "X-Qpien-Signature is missing or is not the HMAC-SHA256 of this body under a current webhook secret.".to_owned(),
            Self::ChangeNotRecorded => "The change could not be recorded for every replica; deliver it again.".to_owned(),
            Self::CursorGone => "The cursor is older than the change feed keeps, or not from this service; start again without one.".to_owned(),
            Self::EventLogUnavailable(_) => "The change feed's store did not answer; retry with the same cursor.".to_owned(),
            Self::TooManyStreams(limit) => format!("This caller already has {limit} event streams open on this replica, as many as allowed."),
            Self::FeedNotOffered => "The change feed is offered in service mode only.".to_owned(),
            Self::SubscriptionNotFound => "Your caller key has no subscription with this id.".to_owned(),
            Self::TooManySubscriptions(limit) => format!("This caller already has {limit} subscriptions, as many as allowed."),
            Self::CallbackUrlRefused(why) => format!("The callback URL {why}."),
            Self::SubscriptionsUnavailable(_) => "The subscriptions' store did not answer; retry.".to_owned(),
            Self::Upstream(e) => match e {
                UpstreamError::Unauthorized { code: "TOKEN_EXPIRED", .. } => {
                    "Qpien says the access token has expired; generate a new one.".to_owned()
                }
                UpstreamError::Unauthorized { .. } => "Qpien does not accept the access token.".to_owned(),
                UpstreamError::InsufficientScope { required_scope, .. } => match required_scope {
                    Some(scope) => format!("The access token lacks the scope {scope}."),
                    None => "The access token lacks a scope this operation needs.".to_owned(),
                },
                UpstreamError::NotFound { .. } => "Qpien has no conversation with this id.".to_owned(),
                // Qpien's own words stay in the log (under this request id): they are free
                // text, and may name what the caller has no business seeing.
                UpstreamError::BadInput { .. } => "Qpien refused a value of the request (BAD_USER_INPUT), e.g. a tag name that does not exist for the customer; the service's log has Qpien's message under this request id.".to_owned(),
                UpstreamError::BudgetExhausted { retry_after } => format!(
                    "The budget of requests per minute toward Qpien for this credential is used up; retry in {} s.",
                    retry_after.as_secs()
                ),
                UpstreamError::UnprovenLimited { cap: Cap::Client, retry_after } => format!(
                    "Too many requests from this address with tokens Qpien has not accepted yet; retry in {} s.",
                    retry_after.as_secs()
                ),
                UpstreamError::UnprovenLimited { cap: Cap::Total, retry_after } => format!(
                    "Too many requests with tokens Qpien has not accepted yet; retry in {} s.",
                    retry_after.as_secs()
                ),
                UpstreamError::CircuitOpen { retry_after } => format!(
                    "Qpien failed repeatedly; calls are paused to let it recover. Retry in {} s.",
                    retry_after.as_secs()
                ),
                UpstreamError::RateLimited { retry_after } => {
                    format!("Qpien's rate limit is exhausted; retry in {} s.", retry_after.as_secs())
                }
                UpstreamError::Timeout => "Qpien did not answer in time.".to_owned(),
                UpstreamError::InvalidClient => {
                    "Qpien rejected this service's configured API credentials; an operator must fix them.".to_owned()
                }
                UpstreamError::Unreachable(_) => "Qpien cannot be reached.".to_owned(),
                UpstreamError::BadStatus { status } => format!("Qpien answered HTTP {status}."),
                UpstreamError::InvalidResponse(_) | UpstreamError::Unexpected { .. } => {
                    "Qpien's answer was not what this service expects.".to_owned()
                }
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Upstream(
                UpstreamError::RateLimited { retry_after }
                | UpstreamError::BudgetExhausted { retry_after }
                | UpstreamError::UnprovenLimited { retry_after, .. }
                | UpstreamError::CircuitOpen { retry_after },
            ) => Some(*retry_after),
            Self::TooManyStreams(_) => Some(Duration::from_secs(30)),
            Self::EventLogUnavailable(_)
            | Self::ChangeNotRecorded
            | Self::SubscriptionsUnavailable(_) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    pub fn problem(&self) -> Problem {
        let ProblemKind {
            slug,
            status,
            title,
            ..
        } = self.kind();
        let context = REQUEST.try_with(Clone::clone).ok();
        Problem {
            kind: format!("/problems/{slug}"),
            title: title.to_owned(),
            status,
            detail: self.detail(),
            instance: context.as_ref().map(|c| c.path.clone()),
            code: match self {
                Self::Upstream(e) => e.code().map(str::to_owned),
                _ => None,
            },
            required_scope: match self {
                Self::Upstream(UpstreamError::InsufficientScope { required_scope, .. }) => {
                    required_scope.clone()
                }
                Self::KeyLacksScope { scope, .. } => Some(scope.as_str().to_owned()),
                _ => None,
            },
            request_id: context.map(|c| c.id).unwrap_or_default(),
            errors: match self {
                Self::InvalidParameters(errors) | Self::InvalidBody(errors) => errors.clone(),
                Self::CallbackUrlRefused(why) => vec![InvalidParam::pointer("url", why.clone())],
                _ => Vec::new(),
            },
        }
    }

    /// A caller's refused bearer and the caps on unproven bearers are the caller's
    /// business, logged like the facade's own refusals: a flood of junk bearers must not
    /// become a flood of warnings.
    fn log(&self) {
        let status = self.status_code();
        let chain = error_chain(self);
        let callers_bearer = matches!(
            self,
            Self::Upstream(
                UpstreamError::Unauthorized { .. } | UpstreamError::UnprovenLimited { .. }
            )
        );
        if status.is_server_error() {
            tracing::error!(http.status_code = status.as_u16(), error.cause_chain = %chain, "request failed");
        } else if matches!(self, Self::Upstream(_)) && !callers_bearer {
            tracing::warn!(http.status_code = status.as_u16(), error.cause_chain = %chain, "upstream refused the request");
        } else {
            tracing::info!(http.status_code = status.as_u16(), error.cause_chain = %chain, "request rejected");
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.kind().status).expect("valid status")
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        let problem = self.problem();
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if let Some(after) = self.retry_after() {
            response.insert_header((header::RETRY_AFTER, after.as_secs().to_string()));
        }
        match self {
            Self::MissingCredentials => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"qpien\""));
            }
            Self::MissingApiKey => {
                response.insert_header((header::WWW_AUTHENTICATE, CALLER_REALM));
            }
            Self::InvalidSignature => {
                response.insert_header((header::WWW_AUTHENTICATE, WEBHOOK_CHALLENGE));
            }
            Self::InvalidApiKey => {
                let value = format!("{CALLER_REALM}, error=\"invalid_token\"");
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
            Self::KeyLacksScope { scope, .. } => {
                let value = format!(
                    "{CALLER_REALM}, error=\"insufficient_scope\", scope=\"{}\"",
                    scope.as_str()
                );
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
            Self::Upstream(UpstreamError::Unauthorized { .. }) => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    "Bearer realm=\"qpien\", error=\"invalid_token\"",
                ));
            }
            Self::Upstream(UpstreamError::InsufficientScope { required_scope, .. }) => {
                let scope = required_scope.as_deref().unwrap_or("");
                let value = format!(
                    "Bearer realm=\"qpien\", error=\"insufficient_scope\", scope=\"{scope}\""
                );
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            Self::UnsupportedMediaType(_) => {
                response.insert_header(("Accept-Patch", ACCEPT_PATCH));
            }
            Self::PreconditionFailed(etag) => {
                response.insert_header((header::ETAG, etag.as_str()));
            }
            _ => {}
        }
        response.body(serde_json::to_string(&problem).expect("a problem always serialises"))
    }
}

//! What can go wrong when calling Qpien, in the facade's words. The HTTP status each
//! outcome becomes is decided in one place, `crate::error`.

use std::sync::Arc;
use std::time::Duration;

use super::proofs::Cap;

/// Clone, so one failed call can be handed to every request that waited on it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The facade's own budget of requests toward Qpien for this credential is used up.
    #[error("the upstream request budget is used up; retry in {}s", retry_after.as_secs())]
    BudgetExhausted { retry_after: Duration },
    /// Pass-through mode: a cap on requests with bearers Qpien has not yet accepted is
    /// reached (`proofs`); nothing was sent to Qpien.
    #[error("too many requests with unproven bearers ({}); retry in {}s", cap.label(), retry_after.as_secs())]
    UnprovenLimited { cap: Cap, retry_after: Duration },
    /// The circuit breaker is open after repeated upstream failures.
    #[error("the circuit breaker toward the upstream is open; retry in {}s", retry_after.as_secs())]
    CircuitOpen { retry_after: Duration },
    /// The token is missing, unknown (`UNAUTHORIZED`) or too old (`TOKEN_EXPIRED`).
    #[error("the upstream refused the access token ({code})")]
    Unauthorized { code: &'static str, message: String },
    /// The token lacks a scope (`INSUFFICIENT_SCOPES`).
    #[error("the access token lacks the scope {required_scope:?}")]
    InsufficientScope {
        required_scope: Option<String>,
        message: String,
    },
    /// The configured client id or secret was refused (`INVALID_CLIENT`).
    #[error(
        "Qpien rejected the configured credentials (INVALID_CLIENT): check QPIEN_CLIENT_ID and QPIEN_CLIENT_SECRET"
    )]
    InvalidClient,
    /// The upstream has no such object.
    #[error("not found upstream: {message}")]
    NotFound { message: String },
    /// The upstream refused the values we sent (`BAD_USER_INPUT`).
    #[error("the upstream rejected the input: {message}")]
    BadInput { message: String },
    /// HTTP 429; `retry_after` from the upstream's reset header.
    #[error("the upstream rate limit is exhausted; retry in {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// No complete answer within the timeout.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// Connection refused, reset, DNS failure, TLS failure.
    #[error("cannot reach the upstream")]
    Unreachable(#[source] Arc<reqwest::Error>),
    /// An HTTP status that is not a GraphQL answer (5xx, unexpected 4xx).
    #[error("the upstream answered HTTP {status}")]
    BadStatus { status: u16 },
    /// A body that is not the GraphQL response we expect.
    #[error("the upstream answer is not a valid GraphQL response: {0}")]
    InvalidResponse(String),
    /// A GraphQL error with a code we do not know.
    #[error("the upstream returned an unexpected GraphQL error ({code}): {message}")]
    Unexpected { code: String, message: String },
}

fn is_code_shaped(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl UpstreamError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BudgetExhausted { .. } => "budget_exhausted",
            Self::UnprovenLimited { .. } => "unproven_limited",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Unauthorized { .. } => "unauthorized",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::InvalidClient => "invalid_client",
            Self::NotFound { .. } => "not_found",
            Self::BadInput { .. } => "bad_input",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::BadStatus { .. } => "bad_status",
            Self::InvalidResponse(_) => "invalid_response",
            Self::Unexpected { .. } => "unexpected",
        }
    }

    /// Whether this says the upstream itself is in trouble (for the circuit breaker), as
    /// opposed to an answer about our request.
    pub fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Unreachable(_)
                | Self::BadStatus { .. }
                | Self::InvalidResponse(_)
        )
    }

    /// Whether the facade answered this without asking Qpien, for a caller's bearer: one
    /// Qpien refused a moment ago, or one of too many unproven ones (`proofs`).
    pub fn is_bearer_refusal(&self) -> bool {
        match self {
            Self::Unauthorized { message, .. } => message == REMEMBERED_REFUSAL,
            Self::UnprovenLimited { .. } => true,
            _ => false,
        }
    }

    /// The upstream's own error code, shown to callers in a problem's `code`. An unknown
    /// code is passed on only when it looks like one (`A-Z`, digits, `_`, at most 64):
    /// anything else is Qpien's free text, which stays in the log with the messages.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Unauthorized { code, .. } => Some(code),
            Self::InsufficientScope { .. } => Some("INSUFFICIENT_SCOPES"),
            Self::InvalidClient => Some("INVALID_CLIENT"),
            Self::NotFound { .. } => Some("NOT_FOUND"),
            Self::BadInput { .. } => Some("BAD_USER_INPUT"),
            Self::Unexpected { code, .. } if is_code_shaped(code) => Some(code),
            _ => None,
        }
    }
}

/// The `message` of a refusal repeated from memory (`proofs`), never Qpien's own.
pub(super) const REMEMBERED_REFUSAL: &str = "refused by Qpien a moment ago";

/// A wait as `Retry-After` gives it: whole seconds, rounded up, at least one.
pub(super) fn whole_seconds(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .max(Duration::from_secs(1))
}

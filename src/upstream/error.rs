//! What can go wrong when calling Qpien, in the facade's words. The HTTP status each
//! outcome becomes is decided in one place, `crate::error`.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
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
    #[error("the upstream rejected the configured client credentials (INVALID_CLIENT)")]
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
    Unreachable(#[source] reqwest::Error),
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

impl UpstreamError {
    /// The upstream's own error code, shown to callers where there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Unauthorized { code, .. } => Some(code),
            Self::InsufficientScope { .. } => Some("INSUFFICIENT_SCOPES"),
            Self::InvalidClient => Some("INVALID_CLIENT"),
            Self::NotFound { .. } => Some("NOT_FOUND"),
            Self::BadInput { .. } => Some("BAD_USER_INPUT"),
            Self::Unexpected { code, .. } => Some(code),
            _ => None,
        }
    }
}

//! Reading Qpien's answer: the body (capped), the rate-limit headers, and the GraphQL
//! envelope with its `errors[].extensions.code`, classified into data or an
//! `UpstreamError`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::UpstreamError;

/// When the upstream gives no usable reset time with a 429, wait out a whole window.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The largest answer we read; a page of 100 conversations is well under 1 MiB.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The root field's value of a GraphQL answer, or what went wrong. A GraphQL error wins
/// over partial data: half an answer is never passed on as success.
pub fn decode<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    root_field: &str,
) -> Result<T, UpstreamError> {
    if status.is_server_error() {
        return Err(UpstreamError::BadStatus {
            status: status.as_u16(),
        });
    }
    let parsed: GraphQlResponse = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(_) if !status.is_success() => {
            return Err(UpstreamError::BadStatus {
                status: status.as_u16(),
            });
        }
        Err(e) => {
            return Err(UpstreamError::InvalidResponse(format!(
                "body is not GraphQL JSON: {e}"
            )));
        }
    };
    if let Some(error) = parsed.errors.into_iter().flatten().next() {
        return Err(classify(error));
    }
    if !status.is_success() {
        return Err(UpstreamError::BadStatus {
            status: status.as_u16(),
        });
    }
    let value = parsed
        .data
        .and_then(|mut data| data.remove(root_field))
        .filter(|v| !v.is_null())
        .ok_or_else(|| UpstreamError::InvalidResponse(format!("no data for {root_field}")))?;
    serde_json::from_value(value).map_err(|e| {
        UpstreamError::InvalidResponse(format!("unexpected shape of {root_field}: {e}"))
    })
}

/// What Qpien says is left of its window: `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
pub fn rate_report(headers: &HeaderMap) -> (Option<u32>, Option<Duration>) {
    let remaining =
        header_number(headers, "x-ratelimit-remaining").map(|n| n.min(u64::from(u32::MAX)) as u32);
    let reset = header_number(headers, "x-ratelimit-reset").map(Duration::from_secs);
    (remaining, reset)
}

#[derive(Deserialize)]
struct GraphQlResponse {
    data: Option<Map<String, Value>>,
    errors: Option<Vec<GraphQlError>>,
}

#[derive(Deserialize)]
struct GraphQlError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    extensions: Map<String, Value>,
}

fn classify(error: GraphQlError) -> UpstreamError {
    let GraphQlError {
        message,
        extensions,
    } = error;
    let code = extensions.get("code").and_then(Value::as_str).unwrap_or("");
    match code {
        "UNAUTHORIZED" => UpstreamError::Unauthorized {
            code: "UNAUTHORIZED",
            message,
        },
        "TOKEN_EXPIRED" => UpstreamError::Unauthorized {
            code: "TOKEN_EXPIRED",
            message,
        },
        "INSUFFICIENT_SCOPES" => UpstreamError::InsufficientScope {
            required_scope: extensions
                .get("requiredScope")
                .and_then(Value::as_str)
                .map(str::to_owned),
            message,
        },
        "INVALID_CLIENT" => UpstreamError::InvalidClient,
        "NOT_FOUND" => UpstreamError::NotFound { message },
        "BAD_USER_INPUT" => UpstreamError::BadInput { message },
        "RATE_LIMITED" => UpstreamError::RateLimited {
            retry_after: DEFAULT_RETRY_AFTER,
        },
        "" => UpstreamError::Unexpected {
            code: "NONE".into(),
            message,
        },
        other => UpstreamError::Unexpected {
            code: other.to_owned(),
            message,
        },
    }
}

/// The body, refused past `MAX_RESPONSE_BYTES` without reading the rest.
pub async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, UpstreamError> {
    let too_large =
        || UpstreamError::InvalidResponse(format!("the answer is over {MAX_RESPONSE_BYTES} bytes"));
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub fn transport_error(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else {
        UpstreamError::Unreachable(std::sync::Arc::new(e))
    }
}

/// Seconds until the upstream's window resets: `X-RateLimit-Reset` as documented, else
/// `Retry-After`, else a whole window.
pub fn retry_after(headers: &HeaderMap) -> Duration {
    ["x-ratelimit-reset", RETRY_AFTER.as_str()]
        .iter()
        .find_map(|name| {
            headers
                .get(*name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|secs| Duration::from_secs(secs.max(1)))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

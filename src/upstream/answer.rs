//! Reading Qpien's answer: the body (capped), the rate-limit headers, and the GraphQL
//! envelope with its `errors[].extensions.code`, classified into data or an
//! `UpstreamError`.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::UpstreamError;

/// When the upstream gives no usable reset time with a 429, wait out a whole window.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The largest answer we read; a page of 100 conversations is well under 1 MiB.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The root field's value of a GraphQL answer, or what went wrong. A GraphQL error wins
/// over partial data: half an answer is never passed on as success.
///
/// One pass over the body, no `Value` tree: `data` is first kept as its raw slice, and
/// only once no error was reported is the root field read from it straight into `T`.
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
    let parsed =
        serde_json::from_slice::<GraphQlResponse>(body).and_then(|parsed| match parsed.data {
            Some(data) if !data.get().starts_with('{') => Err(serde::de::Error::custom(
                "invalid type: data is not an object",
            )),
            _ => Ok(parsed),
        });
    let parsed = match parsed {
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
    let value = match parsed.data {
        Some(data) => {
            let mut reader = serde_json::Deserializer::from_str(data.get());
            RootField::<T> {
                name: root_field,
                value: PhantomData,
            }
            .deserialize(&mut reader)
            .map_err(|e| {
                UpstreamError::InvalidResponse(format!("unexpected shape of {root_field}: {e}"))
            })?
        }
        None => None,
    };
    value.ok_or_else(|| UpstreamError::InvalidResponse(format!("no data for {root_field}")))
}

/// What Qpien says is left of its window: `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
pub fn rate_report(headers: &HeaderMap) -> (Option<u32>, Option<Duration>) {
    let remaining =
        header_number(headers, "x-ratelimit-remaining").map(|n| n.min(u64::from(u32::MAX)) as u32);
    let reset = header_number(headers, "x-ratelimit-reset").map(Duration::from_secs);
    (remaining, reset)
}

#[derive(Deserialize)]
struct GraphQlResponse<'a> {
    /// Read into the caller's type only when there is no error.
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    errors: Option<Vec<GraphQlError>>,
}

/// Reads the `data` object for the value of its member `name`, as `T`, skipping the
/// others; `None` when it is absent or `null`. Of repeated members the last counts.
struct RootField<'n, T> {
    name: &'n str,
    value: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for RootField<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for RootField<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the data object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut value = None;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.name))? {
            if wanted {
                value = map.next_value::<Option<T>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(value)
    }
}

/// A member name, compared with the one wanted without being copied.
struct KeyIs<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode_json<T: DeserializeOwned>(status: u16, body: Value) -> Result<T, UpstreamError> {
        let status = StatusCode::from_u16(status).unwrap();
        decode(status, &serde_json::to_vec(&body).unwrap(), "root")
    }

    #[test]
    fn the_root_field_is_read_into_its_type_and_other_members_skipped() {
        let body = json!({"data": {"other": [1, {"a": null}], "root": {"x": 1}, "more": "s"}});
        let value: std::collections::BTreeMap<String, u8> = decode_json(200, body).unwrap();
        assert_eq!(value["x"], 1);
    }

    #[test]
    fn an_error_wins_over_data_of_any_shape() {
        let body = json!({"data": {"root": "not a map"},
            "errors": [{"message": "gone", "extensions": {"code": "NOT_FOUND"}}]});
        let result = decode_json::<std::collections::BTreeMap<String, u8>>(200, body);
        assert!(matches!(result, Err(UpstreamError::NotFound { message }) if message == "gone"));
    }

    #[test]
    fn missing_null_or_misshapen_data_is_an_invalid_answer() {
        for body in [
            json!({"data": null}),
            json!({"data": {"root": null}}),
            json!({"data": {"other": 1}}),
            json!({"data": {"root": "text"}}),
            json!({"data": ["root"]}),
            json!({"data": "root", "errors": [{"message": "m"}]}),
        ] {
            let result = decode_json::<std::collections::BTreeMap<String, u8>>(200, body.clone());
            assert!(
                matches!(result, Err(UpstreamError::InvalidResponse(_))),
                "{body}: {result:?}"
            );
        }
        let result = decode_json::<Value>(400, json!({"data": "root"}));
        assert!(matches!(
            result,
            Err(UpstreamError::BadStatus { status: 400 })
        ));
    }
}

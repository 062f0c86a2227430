//! Problem examples made by the code that makes real problems: the parsers produce the
//! `errors` lists and `ApiError::problem` the bodies, so each example is what the service
//! answers in that case, word for word.

use std::time::Duration;

use serde_json::{Value, json};

use crate::callers::Scope;
use crate::domain::{ConversationId, ConversationPatch, ListQuery, PatchError};
use crate::error::{ApiError, PROBLEM_KINDS, REQUEST, RequestContext};
use crate::routes::registry::Operation;
use crate::routes::{FeedQuery, MAX_BODY_BYTES};
use crate::upstream::{Cap, UpstreamError};

pub(super) const EXAMPLE_ID: &str = "6650a1000000000000000001";
const EXAMPLE_REQUEST_ID: &str = "3f1c2a8e-8a52-4a57-9d54-5b1a0f6f3a11";

/// The problem body `operation` answers for `slug`, as requested at `path`.
pub(super) fn problem_example(operation: &Operation, path: &str, slug: &str) -> Value {
    let instance = path
        .replace("{id}", EXAMPLE_ID)
        .replace("{slug}", "no-such-problem");
    let Some(error) = example_error(operation, slug) else {
        return from_table(slug, &instance);
    };
    // Inside the request context, as a handler's error would be: `instance` and
    // `requestId` come from where they do in production.
    let context = RequestContext {
        id: EXAMPLE_REQUEST_ID.to_owned(),
        path: instance,
    };
    let problem = REQUEST.sync_scope(context, || error.problem());
    serde_json::to_value(problem).expect("a problem serialises")
}

/// A typical cause of `slug` for `operation`; `None` for a kind this file does not know.
/// Its scope, path and whether it calls Qpien (its registry row) choose among causes.
pub(super) fn example_error(operation: &Operation, slug: &str) -> Option<ApiError> {
    let key_scope = operation.scope.unwrap_or(Scope::Read);
    let scope = match key_scope {
        Scope::Write => "write_conversations",
        Scope::Read => "read_conversations",
    };
    Some(match slug {
        // The change feed's query.
        "invalid-parameters" if operation.feed => {
            let pairs = [("types", "conversation.deleted"), ("after", "yesterday")]
                .map(|(name, value)| (name.to_owned(), value.to_owned()));
            ApiError::InvalidParameters(FeedQuery::parse(&pairs, &["types", "after"]).err()?)
        }
        // The list's query; the others' path parameter.
        "invalid-parameters" if !operation.path.contains('{') => {
            let pairs = [("status", "done"), ("pageSize", "500")]
                .map(|(name, value)| (name.to_owned(), value.to_owned()));
            ApiError::InvalidParameters(ListQuery::parse(&pairs).err()?)
        }
        "invalid-parameters" => {
            let detail = ConversationId::parse("6650a1").err()?;
            ApiError::InvalidParameters(vec![crate::domain::InvalidParam::parameter("id", detail)])
        }
        "malformed-body" => match ConversationPatch::parse(br#"{"status": "resolved""#) {
            Err(PatchError::Malformed(why)) => ApiError::MalformedBody(why),
            _ => return None,
        },
        "invalid-body" => match ConversationPatch::parse(br#"{"status": "done", "id": "x"}"#) {
            Err(PatchError::Invalid(errors)) => ApiError::InvalidBody(errors),
            _ => return None,
        },
        "unsupported-media-type" => ApiError::UnsupportedMediaType(Some("text/plain".into())),
        "payload-too-large" => ApiError::PayloadTooLarge(MAX_BODY_BYTES),
        "missing-credentials" => ApiError::MissingCredentials,
        "missing-api-key" => ApiError::MissingApiKey,
        "invalid-api-key" => ApiError::InvalidApiKey,
        "insufficient-key-scope" => ApiError::KeyLacksScope {
            key_id: "crm".into(),
            scope: key_scope,
        },
        "upstream-unauthorized" => ApiError::Upstream(UpstreamError::Unauthorized {
            code: "TOKEN_EXPIRED",
            message: String::new(),
        }),
        "insufficient-scope" => ApiError::Upstream(UpstreamError::InsufficientScope {
            required_scope: Some(scope.to_owned()),
            message: String::new(),
        }),
        // Nothing of Qpien's to find: the thing named in the path is the service's own.
        "not-found" if operation.budget.is_none() => ApiError::RouteNotFound,
        "not-found" => ApiError::Upstream(UpstreamError::NotFound {
            message: String::new(),
        }),
        "upstream-rejected-input" => ApiError::Upstream(UpstreamError::BadInput {
            message: "unknown tag name: vipp".into(),
        }),
        "rate-limited" => ApiError::Upstream(UpstreamError::BudgetExhausted {
            retry_after: Duration::from_secs(12),
        }),
        "unproven-tokens-limited" => ApiError::Upstream(UpstreamError::UnprovenLimited {
            cap: Cap::Client,
            retry_after: Duration::from_secs(7),
        }),
        "upstream-error" => ApiError::Upstream(UpstreamError::BadStatus { status: 503 }),
        "unavailable" => ApiError::Upstream(UpstreamError::CircuitOpen {
            retry_after: Duration::from_secs(30),
        }),
        "not-ready" => ApiError::NotReady("the circuit breaker toward Qpien is open".into()),
        "upstream-timeout" => ApiError::Upstream(UpstreamError::Timeout),
        "method-not-allowed" => ApiError::MethodNotAllowed,
        "precondition-failed" => ApiError::PreconditionFailed("\"5f0c6e1d2a3b4c59\"".into()),
        "invalid-signature" => ApiError::InvalidSignature,
        "change-not-recorded" => ApiError::ChangeNotRecorded,
        "feed-not-offered" => ApiError::FeedNotOffered,
        "cursor-gone" => ApiError::CursorGone,
        "too-many-streams" => ApiError::TooManyStreams(20),
        "subscription-not-found" => ApiError::SubscriptionNotFound,
        "too-many-subscriptions" => ApiError::TooManySubscriptions(50),
        "callback-url-refused" => ApiError::CallbackUrlRefused(
            "names the host \"hooks.internal\", which resolves to 10.0.0.7, a private address, which is refused (the operator can allow such addresses with SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS=true)".into(),
        ),
        "subscriptions-unavailable" => {
            ApiError::SubscriptionsUnavailable("the embedded database is locked".into())
        }
        "event-log-unavailable" => {
            ApiError::EventLogUnavailable("the embedded database is locked".into())
        }
        _ => return None,
    })
}

/// A kind added to the table before an example here: its title and explanation.
fn from_table(slug: &str, instance: &str) -> Value {
    let kind = PROBLEM_KINDS
        .iter()
        .find(|k| k.slug == slug)
        .expect("examples are asked for known kinds only");
    json!({
        "type": format!("/problems/{}", kind.slug), "title": kind.title, "status": kind.status, "detail": kind.explanation,
        "instance": instance, "requestId": EXAMPLE_REQUEST_ID,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::registry::OPERATIONS;

    #[test]
    fn every_problem_kind_has_an_example_of_its_own_status() {
        for operation in OPERATIONS {
            for kind in PROBLEM_KINDS {
                let error = example_error(operation, kind.slug)
                    .unwrap_or_else(|| panic!("no example of /problems/{}: add one", kind.slug));
                let problem = error.problem();
                assert_eq!(problem.kind, format!("/problems/{}", kind.slug));
                assert_eq!(problem.status, kind.status);
            }
        }
    }
}

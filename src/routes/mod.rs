//! The HTTP routes: one handler per operation, each documented with `#[utoipa::path]`
//! and described by its row in `registry`. `configure` is the single list of handlers,
//! used by the server and by the OpenAPI generator alike.

mod body;
mod caching;
mod changes;
mod conversations;
mod health;
pub mod label;
mod problems;
pub mod registry;
mod stream;
mod subscriptions;
mod table;
mod webhooks;

use std::future::{Ready, ready};
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use actix_web::{FromRequest, HttpMessage, HttpRequest, Route, web};
use tracing_actix_web::RootSpan;
use utoipa_actix_web::service_config::ServiceConfig;

pub use body::MAX_BODY_BYTES;
pub use changes::FeedQuery;
pub use conversations::{ConversationList, PageLinks};
pub use stream::{StreamSlots, StreamsClosing};
pub use table::unmatched;

use crate::callers::{CallerKey, KeyStore};
use crate::error::ApiError;
use crate::metrics::{KeyId, Metrics};
use crate::upstream::{ClientKey, Credential, CredentialHasher, QpienClient};

pub fn configure(cfg: &mut ServiceConfig) {
    use conversations::*;
    use problems::*;
    let to = |route: fn() -> Route| route;
    use subscriptions::*;
    cfg.service(list_conversations)
        .service(changes::list_conversation_changes)
        .service(create_subscription)
        .service(list_subscriptions)
        .service(
            table::Parameterised::default()
                .with(
                    &registry::GET_CONVERSATION,
                    to(|| web::to(get_conversation)),
                    __path_get_conversation,
                )
                .with(
                    &registry::UPDATE_CONVERSATION,
                    to(|| web::to(update_conversation)),
                    __path_update_conversation,
                )
                .with(
                    &registry::GET_SUBSCRIPTION,
                    to(|| web::to(get_subscription)),
                    __path_get_subscription,
                )
                .with(
                    &registry::DELETE_SUBSCRIPTION,
                    to(|| web::to(delete_subscription)),
                    __path_delete_subscription,
                )
                .with(
                    &registry::ROTATE_SUBSCRIPTION_SECRET,
                    to(|| web::to(rotate_subscription_secret)),
                    __path_rotate_subscription_secret,
                )
                .with(
                    &registry::ENABLE_SUBSCRIPTION,
                    to(|| web::to(enable_subscription)),
                    __path_enable_subscription,
                )
                .with(
                    &registry::DESCRIBE_PROBLEM,
                    to(|| web::to(describe)),
                    __path_describe,
                ),
        )
        .service(stream::stream_events)
        .service(changes::on_conversation_changed)
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(webhooks::receive_qpien_webhook);
}

/// Liveness, readiness and the metrics alone, for the admin listener (`crate::admin`).
pub fn configure_admin(cfg: &mut web::ServiceConfig) {
    cfg.service(health::healthz)
        .service(health::readyz)
        .service(health::metrics);
}

/// The header for callers that cannot send a bearer (e.g. Power Automate connectors).
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The authority a request runs under, decided before any input reaches the upstream:
/// the Qpien credential to use, and in service mode with `API_KEYS_FILE`, the caller key
/// that was presented (`None`: pass-through mode, or an anonymous service-mode caller).
/// Service mode without keys ignores the caller's `Authorization`; with keys it requires
/// a known one; pass-through mode requires a bearer.
pub struct Caller {
    /// The Qpien credential the request runs under.
    pub credential: Credential,
    /// The caller key presented, in service mode with caller keys.
    pub key: Option<Arc<CallerKey>>,
}

impl Caller {
    /// 403 unless the caller key allows the scope `operation` needs (its registry row);
    /// callers without a key pass (their authority is Qpien's to judge, or the operator
    /// chose anonymous access).
    pub fn may(&self, operation: &registry::Operation) -> Result<(), ApiError> {
        match (self.key.as_deref(), operation.scope) {
            (Some(key), Some(scope)) if !key.scopes.contains(scope) => {
                Err(ApiError::KeyLacksScope {
                    key_id: key.id.clone(),
                    scope,
                })
            }
            _ => Ok(()),
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let client = req
            .app_data::<web::Data<QpienClient>>()
            .expect("the client is registered");
        let credentials = client.credentials();
        if let Some(service) = credentials.service() {
            return ready(match req.app_data::<web::Data<KeyStore>>() {
                Some(keys) => with_key(req, keys, credentials),
                None => Ok(Caller {
                    credential: service,
                    key: None,
                }),
            });
        }
        let Some(token) = bearer(req) else {
            return ready(Err(ApiError::MissingCredentials));
        };
        let credential = credentials.bearer(token);
        // Before anything else is spent on it: a bearer Qpien just refused, or one of too
        // many unproven ones from this client, goes no further. The client is the peer
        // address: a proxy in front makes all its callers one client (no setting says
        // which proxies' `X-Forwarded-For` to believe).
        let peer = req.peer_addr().map(|address| address.ip());
        ready(
            match client.admit_bearer(&credential, ClientKey::of(peer)) {
                Ok(()) => Ok(Caller {
                    credential,
                    key: None,
                }),
                Err(refused) => Err(ApiError::Upstream(refused)),
            },
        )
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
}

/// Service mode with caller keys: `X-API-Key` (when not empty), else the bearer, must be
/// a key in force. The key id goes on the request's span and, for the metrics, into the
/// request's extensions; the key itself goes nowhere.
fn with_key(
    req: &HttpRequest,
    keys: &KeyStore,
    credentials: &CredentialHasher,
) -> Result<Caller, ApiError> {
    let metrics = req.app_data::<web::Data<Metrics>>();
    let presented = req
        .headers()
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .or_else(|| bearer(req));
    let Some(presented) = presented else {
        metrics.inspect(|m| m.caller_unauthorized("missing"));
        return Err(ApiError::MissingApiKey);
    };
    let Some(key) = keys.authenticate(presented) else {
        metrics.inspect(|m| m.caller_unauthorized("unknown"));
        return Err(ApiError::InvalidApiKey);
    };
    if let Some(span) = req.extensions().get::<RootSpan>() {
        span.record("caller.key_id", tracing::field::display(&key.id));
    }
    req.extensions_mut().insert(KeyId(key.id.clone()));
    let credential = credentials
        .service_for_key(&key.id, key.per_minute)
        .expect("caller keys exist in service mode only");
    Ok(Caller {
        credential,
        key: Some(key),
    })
}

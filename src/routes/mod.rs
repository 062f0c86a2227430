//! The HTTP routes: one handler per operation, each documented with `#[utoipa::path]`.
//! `configure` is the single list of routes, used by the server and by the OpenAPI
//! generator alike.

mod caching;
mod conversations;
mod health;
mod problems;

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};
use utoipa_actix_web::service_config::ServiceConfig;

pub use conversations::{ConversationList, MAX_BODY_BYTES, PageLinks};

use crate::error::ApiError;
use crate::upstream::{Credential, QpienClient};

/// Problem statuses each operation can answer, by `operationId`; the OpenAPI document
/// gets one response per status from this table.
pub const PROBLEM_STATUSES: &[(&str, &[u16])] = &[
    ("listConversations", conversations::LIST_PROBLEMS),
    ("getConversation", conversations::GET_PROBLEMS),
    ("updateConversation", conversations::UPDATE_PROBLEMS),
    ("checkReadiness", &[503]),
    ("describeProblem", &[404]),
];

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(conversations::list_conversations)
        .service(conversations::get_conversation)
        .service(conversations::update_conversation)
        .service(health::healthz)
        .service(health::readyz)
        .service(health::metrics)
        .service(problems::describe);
}

/// The authority a request runs under, decided before any input reaches the upstream:
/// service mode ignores the caller's `Authorization`; pass-through mode requires a bearer.
pub struct Caller(pub Credential);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let credentials = req
            .app_data::<web::Data<QpienClient>>()
            .expect("the client is registered")
            .credentials();
        if let Some(service) = credentials.service() {
            return ready(Ok(Caller(service)));
        }
        let bearer = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        ready(match bearer {
            Some(token) => Ok(Caller(credentials.bearer(token))),
            None => Err(ApiError::MissingCredentials),
        })
    }
}

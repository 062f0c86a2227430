//! The HTTP client toward Qpien: one `reqwest::Client` with connect and whole-call
//! timeouts, one GraphQL exchange per call, and the classification of every answer into
//! data or an `UpstreamError`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tracing::Instrument;
use url::Url;

use super::UpstreamError;
use super::operations::{
    GENERATE_OAUTH_TOKEN, GET_CONVERSATION, GET_CONVERSATION_LIST, Operation, PING,
    UPDATE_CONVERSATION,
};
use super::token::TokenCache;
use super::wire::{self, WireConversation, WireConversationList, WireToken};
use crate::domain::{Conversation, ConversationId, ConversationPage, ConversationPatch, ListQuery};
use crate::settings::{ClientCredentials, Secret, UpstreamSettings};

/// Whose authority a call runs under.
pub enum Credential {
    /// Service mode: the facade's own token.
    Service,
    /// Pass-through mode: the caller's bearer token, forwarded as it came.
    Bearer(Secret),
}

pub struct QpienClient {
    http: reqwest::Client,
    url: Url,
    /// `Some` in service mode.
    tokens: Option<TokenCache>,
}

/// When the upstream gives no usable reset time with a 429, wait out a whole window.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

impl QpienClient {
    pub fn new(
        url: Url,
        settings: &UpstreamSettings,
        credentials: Option<ClientCredentials>,
    ) -> Result<Self, reqwest::Error> {
        // reqwest is built without a bundled crypto provider; ring is ours. Installing it
        // twice (several clients in one process) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("qpien-rest/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            url,
            tokens: credentials.map(TokenCache::new),
        })
    }

    pub fn is_service_mode(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub async fn get_conversation(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
    ) -> Result<Conversation, UpstreamError> {
        let variables = json!({ "conversationId": id.as_str() });
        let wire: WireConversation = self
            .call(&GET_CONVERSATION, variables, credential, request_id)
            .await?;
        wire.try_into()
    }

    pub async fn list_conversations(
        &self,
        credential: &Credential,
        request_id: &str,
        query: &ListQuery,
    ) -> Result<ConversationPage, UpstreamError> {
        let variables = json!({
            "filter": wire::filter_variables(&query.filter),
            "page": query.page,
            "limit": query.page_size,
        });
        let list: WireConversationList = self
            .call(&GET_CONVERSATION_LIST, variables, credential, request_id)
            .await?;
        Ok(ConversationPage {
            total_items: u64::try_from(list.total_count)
                .map_err(|_| UpstreamError::InvalidResponse("negative totalCount".into()))?,
            items: list
                .conversations
                .into_iter()
                .map(Conversation::try_from)
                .collect::<Result<_, _>>()?,
        })
    }

    pub async fn update_conversation(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        patch: &ConversationPatch,
    ) -> Result<Conversation, UpstreamError> {
        let variables =
            json!({ "conversationId": id.as_str(), "input": wire::update_input(patch) });
        let wire: WireConversation = self
            .call(&UPDATE_CONVERSATION, variables, credential, request_id)
            .await?;
        wire.try_into()
    }

    /// Ready means: the upstream answers GraphQL and, in service mode, we hold a token.
    /// In pass-through mode an authentication error still proves the upstream is there.
    pub async fn check_ready(&self, request_id: &str) -> Result<(), UpstreamError> {
        match &self.tokens {
            Some(_) => self
                .call::<Value>(&PING, json!({}), &Credential::Service, request_id)
                .await
                .map(drop),
            None => match self
                .send::<Value>(&PING, &json!({}), None, request_id)
                .await
            {
                Ok(_)
                | Err(
                    UpstreamError::Unauthorized { .. } | UpstreamError::InsufficientScope { .. },
                ) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    pub fn holds_token(&self) -> Option<bool> {
        self.tokens.as_ref().map(TokenCache::holds_valid_token)
    }

    /// One operation under the right authority. In service mode a `TOKEN_EXPIRED` answer
    /// renews the token once and repeats the call: the upstream rejected the call before
    /// running it, so even a mutation is safe to send again.
    async fn call<T: DeserializeOwned>(
        &self,
        op: &Operation,
        variables: Value,
        credential: &Credential,
        request_id: &str,
    ) -> Result<T, UpstreamError> {
        let Some(tokens) = &self.tokens else {
            let Credential::Bearer(bearer) = credential else {
                return Err(UpstreamError::Unauthorized {
                    code: "UNAUTHORIZED",
                    message: "no bearer token".into(),
                });
            };
            return self.send(op, &variables, Some(bearer), request_id).await;
        };
        let generate =
            async |creds: &ClientCredentials| self.generate_token(creds, request_id).await;
        let token = tokens.token(generate).await?;
        match self.send(op, &variables, Some(&token), request_id).await {
            Err(UpstreamError::Unauthorized {
                code: "TOKEN_EXPIRED",
                ..
            }) => {
                tracing::info!(
                    upstream.operation = op.name,
                    "upstream says the token expired; renewing once"
                );
                tokens.discard(&token).await;
                let token = tokens.token(generate).await?;
                self.send(op, &variables, Some(&token), request_id).await
            }
            other => other,
        }
    }

    async fn generate_token(
        &self,
        creds: &ClientCredentials,
        request_id: &str,
    ) -> Result<(Secret, Duration), UpstreamError> {
        let variables =
            json!({ "clientId": creds.client_id, "clientSecret": creds.client_secret.expose() });
        let token: WireToken = self
            .send(&GENERATE_OAUTH_TOKEN, &variables, None, request_id)
            .await?;
        let lifetime = u64::try_from(token.expires_in)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| {
                UpstreamError::InvalidResponse(format!(
                    "token lifetime {} is not positive",
                    token.expires_in
                ))
            })?;
        tracing::info!(
            token.lifetime_secs = lifetime.as_secs(),
            "obtained a new upstream access token"
        );
        Ok((Secret::new(token.access_token), lifetime))
    }

    /// One HTTP exchange. The span records the operation and outcome, never variables
    /// (they may hold the client secret) nor the token.
    async fn send<T: DeserializeOwned>(
        &self,
        op: &Operation,
        variables: &Value,
        bearer: Option<&Secret>,
        request_id: &str,
    ) -> Result<T, UpstreamError> {
        let span = tracing::info_span!(
            "upstream",
            upstream.operation = op.name,
            upstream.status = tracing::field::Empty
        );
        async {
            let mut request = self
                .http
                .post(self.url.clone())
                .header("X-Request-Id", request_id)
                .json(&json!({ "query": op.document, "variables": variables, "operationName": op.name }));
            if let Some(bearer) = bearer {
                request = request.bearer_auth(bearer.expose());
            }
            let response = request.send().await.map_err(transport_error)?;
            let status = response.status();
            tracing::Span::current().record("upstream.status", status.as_u16());
            if status == StatusCode::TOO_MANY_REQUESTS {
                return Err(UpstreamError::RateLimited { retry_after: retry_after(response.headers()) });
            }
            let body = response.bytes().await.map_err(transport_error)?;
            if status.is_server_error() {
                return Err(UpstreamError::BadStatus { status: status.as_u16() });
            }
            let parsed: GraphQlResponse = match serde_json::from_slice(&body) {
                Ok(parsed) => parsed,
                Err(_) if !status.is_success() => return Err(UpstreamError::BadStatus { status: status.as_u16() }),
                Err(e) => return Err(UpstreamError::InvalidResponse(format!("body is not GraphQL JSON: {e}"))),
            };
            if let Some(error) = parsed.errors.into_iter().flatten().next() {
                return Err(classify(error));
            }
            if !status.is_success() {
                return Err(UpstreamError::BadStatus { status: status.as_u16() });
            }
            let value = parsed
                .data
                .and_then(|mut data| data.remove(op.root_field))
                .filter(|v| !v.is_null())
                .ok_or_else(|| UpstreamError::InvalidResponse(format!("no data for {}", op.root_field)))?;
            serde_json::from_value(value)
                .map_err(|e| UpstreamError::InvalidResponse(format!("unexpected shape of {}: {e}", op.root_field)))
        }
        .instrument(span)
        .await
    }
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

fn transport_error(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else {
        UpstreamError::Unreachable(e)
    }
}

/// Seconds until the upstream's window resets: `X-RateLimit-Reset` as documented, else
/// `Retry-After`, else a whole window.
fn retry_after(headers: &HeaderMap) -> Duration {
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

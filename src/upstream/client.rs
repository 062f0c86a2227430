//! The HTTP client toward Qpien: a `reqwest::Client` per thread with a connect timeout,
//! a whole-call timeout of our own (`timeout_at` the call's deadline, the body included),
//! one GraphQL exchange per call, and the classification of every answer into data or an
//! `UpstreamError`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use thread_local::ThreadLocal;
use tokio::time::{Instant, sleep, timeout_at};
use tracing::Instrument;
use url::Url;

use super::UpstreamError;
use super::answer;
use super::breaker::{Breaker, BreakerState};
use super::budget::{Admission, BudgetReport, Class, RateBudget};
use super::credential::{CallerShare, Credential, CredentialHasher, CredentialId};
use super::operations::{
    GENERATE_OAUTH_TOKEN, GET_CONVERSATION, GET_CONVERSATION_LIST, Operation, PING,
    UPDATE_CONVERSATION,
};
use super::retry::RetryPolicy;
use super::token::TokenCache;
use super::wire::{self, WireConversation, WireConversationList, WireToken};
use crate::domain::{Conversation, ConversationId, ConversationPage, ConversationPatch, ListQuery};
use crate::metrics::Metrics;
use crate::settings::{ClientCredentials, Secret, UpstreamSettings};
use crate::state::SharedToken;
use crate::state::redis::RedisState;

pub struct QpienClient {
    /// One HTTP client, so one connection pool, per thread. A connection is served by a
    /// task on the thread that opened it: with one pool shared by the server's worker
    /// threads, most calls were handed to another thread and their answers handed back,
    /// a wake-up of another thread each way.
    http: ThreadLocal<reqwest::Client>,
    connect_timeout: Duration,
    url: Url,
    /// `Some` in service mode.
    tokens: Option<TokenCache>,
    credentials: CredentialHasher,
    timeout: Duration,
    budget: RateBudget,
    breaker: Breaker,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    /// When Qpien last gave an answer that proves it is up (for `/readyz`).
    last_healthy: std::sync::Mutex<Option<Instant>>,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How recent an answer from Qpien must be for `/readyz` to trust it without probing.
const FRESH_EVIDENCE: Duration = Duration::from_secs(30);

/// What one call needs besides the operation: whose budget it spends and whether it may
/// wait for it, the bearer, the request id and the instant by which it must be over.
struct Attempt<'a> {
    bearer: Option<&'a Secret>,
    budget_key: CredentialId,
    /// The caller key that asked, whose share the call spends too.
    caller: Option<&'a CallerShare>,
    may_wait: bool,
    request_id: &'a str,
    deadline: Instant,
}

/// Whether a read may wait for rate budget: not when a stale answer is at hand, which
/// serves the caller better at once than a fresh one a second later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetWait {
    Allowed,
    No,
}

impl QpienClient {
    /// `shared`: the Redis the replicas share their state through, if any, with the
    /// secret its credential ids are keyed by.
    pub fn new(
        url: Url,
        settings: &UpstreamSettings,
        credentials: Option<ClientCredentials>,
        shared: Option<(Arc<RedisState>, &str)>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        crate::install_tls_provider();
        let http = ThreadLocal::new();
        http.get_or_try(|| http_client(settings.connect_timeout))?;
        let client_id = credentials.as_ref().map(|c| c.client_id.as_str());
        let hasher = match &shared {
            Some((_, secret)) => CredentialHasher::shared(secret, client_id),
            None => CredentialHasher::random(client_id),
        };
        let redis = shared.map(|(redis, _)| redis);
        let tokens = credentials.map(|credentials| {
            let shared = redis.clone().zip(hasher.service()).map(|(redis, service)| {
                SharedToken::new(redis, &service.id().to_hex(), &credentials.client_secret)
            });
            TokenCache::new(credentials, shared)
        });
        Ok(Self {
            http,
            connect_timeout: settings.connect_timeout,
            url,
            tokens,
            credentials: hasher,
            timeout: settings.request_timeout,
            budget: RateBudget::new(
                settings.rate_limit_per_minute,
                settings.write_reserve(),
                settings.rate_limit_max_wait,
            )
            .shared(settings.replicas, redis.clone()),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cool_down),
            retry: RetryPolicy::new(settings.max_retries),
            metrics,
            last_healthy: std::sync::Mutex::new(None),
        })
    }

    /// This thread's HTTP client.
    fn http(&self) -> &reqwest::Client {
        self.http
            .get_or(|| http_client(self.connect_timeout).expect("built once in QpienClient::new"))
    }

    pub fn breaker_state(&self) -> BreakerState {
        let state = self.breaker.state();
        self.metrics.breaker_state.set(state.gauge());
        state
    }

    /// The budget left for the caller's credential and requests of `class`, for the
    /// rate-limit response headers.
    /// With a caller key that has a share, whichever of the share and the account has
    /// less left.
    pub fn budget_report(&self, credential: &Credential, class: Class) -> BudgetReport {
        let account = self.budget.report(credential.id(), class);
        let share = credential.caller().and_then(|caller| {
            let per_minute = caller.per_minute?;
            Some(self.budget.share_report(caller.budget_key, per_minute))
        });
        match share {
            Some(share) if share.remaining < account.remaining => share,
            _ => account,
        }
    }

    /// Whether a read for `credential` that may not wait would be refused for budget
    /// now: the caller key's share, or the account's reads, have nothing left.
    pub fn read_budget_spent(&self, credential: &Credential) -> bool {
        let share_spent = credential.caller().is_some_and(|caller| {
            caller
                .per_minute
                .is_some_and(|per_minute| self.budget.share_spent(caller.budget_key, per_minute))
        });
        share_spent || self.budget.spent(credential.id(), Class::Read)
    }

    /// Where the state shared by replicas is kept: `redis`, `in-process`, or `in-process
    /// (Redis unreachable)`.
    pub fn shared_state(&self) -> &'static str {
        self.budget.kept_in()
    }

    /// The most one call may take, all included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn is_service_mode(&self) -> bool {
        self.tokens.is_some()
    }

    /// Makes the `Credential` of a request: the service's, or a caller's bearer.
    pub fn credentials(&self) -> &CredentialHasher {
        &self.credentials
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    pub async fn get_conversation(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        wait: BudgetWait,
    ) -> Result<Conversation, UpstreamError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Variables<'a> {
            conversation_id: &'a str,
        }
        let variables = Variables {
            conversation_id: id.as_str(),
        };
        let wire: WireConversation = self
            .call(&GET_CONVERSATION, &variables, credential, request_id, wait)
            .await?;
        wire.try_into()
    }

    pub async fn list_conversations(
        &self,
        credential: &Credential,
        request_id: &str,
        query: &ListQuery,
        wait: BudgetWait,
    ) -> Result<ConversationPage, UpstreamError> {
        let variables = json!({
            "filter": wire::filter_variables(&query.filter),
            "page": query.page,
            "limit": query.page_size,
        });
        let list: WireConversationList = self
            .call(
                &GET_CONVERSATION_LIST,
                &variables,
                credential,
                request_id,
                wait,
            )
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
            .call(
                &UPDATE_CONVERSATION,
                &variables,
                credential,
                request_id,
                BudgetWait::Allowed,
            )
            .await?;
        wire.try_into()
    }

    /// Ready means: the upstream answers GraphQL and, in service mode, we hold a token.
    /// An answer from Qpien in the last `FRESH_EVIDENCE` is proof enough, so frequent
    /// probes do not spend the customer's rate budget; otherwise a `{ __typename }` probe
    /// is sent. In pass-through mode an authentication error still proves Qpien is there.
    /// A spent rate budget (ours or Qpien's) is no reason to be unready: the instance
    /// still answers from its cache and gives honest 429s, and taking every replica out
    /// of service when callers poll hardest would turn a rate limit into an outage.
    pub async fn check_ready(&self, request_id: &str) -> Result<(), UpstreamError> {
        let recently_healthy = self
            .last_healthy
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| at.elapsed() < FRESH_EVIDENCE);
        if recently_healthy && self.holds_token() != Some(false) {
            return Ok(());
        }
        let credential = self
            .credentials
            .service()
            .unwrap_or_else(|| self.credentials.anonymous());
        match self
            .call::<Value>(&PING, &json!({}), &credential, request_id, BudgetWait::No)
            .await
        {
            Ok(_)
            | Err(UpstreamError::BudgetExhausted { .. } | UpstreamError::RateLimited { .. }) => {
                Ok(())
            }
            Err(UpstreamError::Unauthorized { .. } | UpstreamError::InsufficientScope { .. })
                if self.tokens.is_none() =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn holds_token(&self) -> Option<bool> {
        self.tokens.as_ref().map(TokenCache::holds_valid_token)
    }

    /// One operation under the right authority, over by the whole-call timeout whatever
    /// happens: token renewal, budget waits and retries all happen inside it.
    async fn call<T: DeserializeOwned>(
        &self,
        op: &Operation,
        variables: &impl Serialize,
        credential: &Credential,
        request_id: &str,
        wait: BudgetWait,
    ) -> Result<T, UpstreamError> {
        let body = op.request_body(variables);
        let deadline = Instant::now() + self.timeout;
        let attempt = Attempt {
            bearer: None,
            budget_key: credential.id(),
            caller: credential.caller(),
            may_wait: wait == BudgetWait::Allowed,
            request_id,
            deadline,
        };
        match timeout_at(deadline, self.authorized(op, &body, credential, attempt)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        }
    }

    /// In service mode a `TOKEN_EXPIRED` answer renews the token once and repeats the
    /// call: Qpien refused the call before running it, so even a mutation is safe to send
    /// again. In pass-through mode the caller's bearer goes as it came (a missing one only
    /// for the readiness probe).
    async fn authorized<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        credential: &Credential,
        attempt: Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        let Some(tokens) = &self.tokens else {
            let bearer = credential.bearer();
            return self
                .with_retries(op, body, &Attempt { bearer, ..attempt })
                .await;
        };
        let generate = async |creds: &ClientCredentials| self.generate_token(creds, &attempt).await;
        let token = tokens.token(generate).await?;
        match self
            .with_retries(
                op,
                body,
                &Attempt {
                    bearer: Some(&token),
                    ..attempt
                },
            )
            .await
        {
            Err(UpstreamError::Unauthorized {
                code: "TOKEN_EXPIRED",
                ..
            }) => {
                tracing::info!(
                    upstream.operation = op.name,
                    "Qpien says the token expired; renewing once"
                );
                tokens.discard(&token).await;
                let token = tokens.token(generate).await?;
                self.with_retries(
                    op,
                    body,
                    &Attempt {
                        bearer: Some(&token),
                        ..attempt
                    },
                )
                .await
            }
            other => other,
        }
    }

    async fn generate_token(
        &self,
        creds: &ClientCredentials,
        attempt: &Attempt<'_>,
    ) -> Result<(Secret, Duration), UpstreamError> {
        let body = GENERATE_OAUTH_TOKEN.request_body(
            &json!({ "clientId": creds.client_id, "clientSecret": creds.client_secret.expose() }),
        );
        let result: Result<WireToken, _> = self
            .with_retries(
                &GENERATE_OAUTH_TOKEN,
                &body,
                // The service's token serves every caller: no key's share pays for it.
                &Attempt {
                    bearer: None,
                    caller: None,
                    may_wait: true,
                    ..*attempt
                },
            )
            .await;
        let outcome = result.as_ref().map_or_else(UpstreamError::kind, |_| "ok");
        self.metrics
            .token_renewals
            .get_or_create(&crate::metrics::OutcomeLabels { outcome })
            .inc();
        let token = result?;
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

    /// Reads are repeated after transient failures, within the retry budget and only
    /// while the backoff still ends before the deadline.
    async fn with_retries<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        attempt: &Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        self.retry.earn();
        let mut retries = 0;
        loop {
            let error = match self.guarded(op, body, attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if !op.read_only || !self.retry.may_retry(&error, retries) {
                return Err(error);
            }
            retries += 1;
            let delay = RetryPolicy::delay(retries);
            if Instant::now() + delay >= attempt.deadline {
                return Err(error);
            }
            tracing::info!(upstream.operation = op.name, retry = retries, delay_ms = delay.as_millis() as u64, error = %error, "retrying a read");
            self.metrics
                .upstream_retries
                .get_or_create(&crate::metrics::OperationLabels { operation: op.name })
                .inc();
            sleep(delay).await;
        }
    }

    /// One exchange behind the rate budget and the circuit breaker, measured.
    async fn guarded<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        attempt: &Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        let left = if attempt.may_wait {
            attempt.deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        // Token renewals and mutations may use the reserve that reads leave.
        let class = if op.read_only {
            Class::Read
        } else {
            Class::Write
        };
        // The caller key's share first, then the account's limit: a key past its share
        // is refused without touching what the others may use.
        if let Some(caller) = attempt.caller
            && let Some(per_minute) = caller.per_minute
        {
            let admission = self
                .budget
                .admit_share(caller.budget_key, per_minute, left)
                .await;
            self.wait_for(admission).await?;
        }
        let left = left.min(attempt.deadline.saturating_duration_since(Instant::now()));
        let admission = self.budget.admit(attempt.budget_key, class, left).await;
        self.wait_for(admission).await?;
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|wait| UpstreamError::CircuitOpen {
                retry_after: round_up(wait),
            });
        self.metrics.breaker_state.set(self.breaker.state().gauge());
        let permit = permit?;
        let started = Instant::now();
        let result = match timeout_at(attempt.deadline, self.send(op, body, attempt)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        };
        let healthy = !result.as_ref().is_err_and(UpstreamError::is_upstream_fault);
        permit.record(healthy);
        if healthy {
            *self.last_healthy.lock().expect("not poisoned") = Some(Instant::now());
        }
        self.metrics.breaker_state.set(self.breaker.state().gauge());
        let outcome = result.as_ref().map_or_else(UpstreamError::kind, |_| "ok");
        self.metrics
            .observe_upstream(op.name, outcome, started.elapsed());
        result
    }

    async fn wait_for(&self, admission: Admission) -> Result<(), UpstreamError> {
        match admission {
            Admission::Now => Ok(()),
            Admission::After(wait) => {
                self.metrics.rate_limit_waits.inc();
                sleep(wait).await;
                Ok(())
            }
            Admission::Refused(wait) => {
                self.metrics.rate_limit_rejections.inc();
                Err(UpstreamError::BudgetExhausted {
                    retry_after: round_up(wait),
                })
            }
        }
    }

    /// One HTTP exchange. The span records the operation and outcome, never variables
    /// (they may hold the client secret) nor the token.
    async fn send<T: DeserializeOwned>(
        &self,
        op: &Operation,
        body: &Bytes,
        attempt: &Attempt<'_>,
    ) -> Result<T, UpstreamError> {
        let span = tracing::info_span!(
            "upstream",
            upstream.operation = op.name,
            upstream.status = tracing::field::Empty
        );
        async {
            let mut request = self
                .http()
                .post(self.url.clone())
                .header(X_REQUEST_ID, attempt.request_id)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone());
            if let Some(bearer) = attempt.bearer {
                request = request.bearer_auth(bearer.expose());
            }
            if let Some(caller) = attempt.caller {
                self.metrics.key_upstream_call(&caller.key_id);
            }
            let response = request.send().await.map_err(answer::transport_error)?;
            let status = response.status();
            tracing::Span::current().record("upstream.status", status.as_u16());
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = answer::retry_after(response.headers());
                self.budget
                    .upstream_report(attempt.budget_key, Some(0), Some(retry_after))
                    .await;
                return Err(UpstreamError::RateLimited { retry_after });
            }
            let (remaining, reset) = answer::rate_report(response.headers());
            self.budget
                .upstream_report(attempt.budget_key, remaining, reset)
                .await;
            let body = answer::read_capped(response).await?;
            answer::decode(status, &body, op.root_field)
        }
        .instrument(span)
        .await
    }
}

/// No whole-call timeout here: the call's own deadline ends it first (`guarded`), and a
/// second timer per call would only cost.
fn http_client(connect: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .user_agent(concat!("qpien-rest/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn round_up(wait: Duration) -> Duration {
    Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .max(Duration::from_secs(1))
}

//! The HTTP client toward Qpien: its operations (read, list and update conversations,
//! the readiness probe) with their typed variables and answers, a `reqwest::Client` per
//! thread with a connect timeout, and what the routes may ask of the budget and the
//! breaker. `exchange.rs` makes each call: authority, budget, breaker, retries, and a
//! whole-call timeout of our own (`timeout_at` the call's deadline, the body included).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use thread_local::ThreadLocal;
use tokio::time::Instant;
use url::Url;

use super::UpstreamError;
use super::breaker::{Breaker, BreakerState};
use super::budget::{BudgetReport, Class, RateBudget};
use super::credential::{Credential, CredentialHasher};
use super::operations::{GET_CONVERSATION, GET_CONVERSATION_LIST, PING, UPDATE_CONVERSATION};
use super::proofs::{ClientKey, Proofs};
use super::retry::RetryPolicy;
use super::token::TokenCache;
use super::wire::{self, WireConversation, WireConversationList};
use crate::domain::{Conversation, ConversationId, ConversationPage, ConversationPatch, ListQuery};
use crate::metrics::Metrics;
use crate::settings::{ClientCredentials, UpstreamSettings};
use crate::state::SharedToken;
use crate::state::redis::RedisState;

mod exchange;

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
    /// Pass-through mode: what Qpien said of each bearer, and the caps on the others.
    proofs: Option<Proofs>,
    metrics: Arc<Metrics>,
    /// When Qpien last gave an answer that proves it is up (for `/readyz`).
    last_healthy: std::sync::Mutex<Option<Instant>>,
}

/// How recent an answer from Qpien must be for `/readyz` to trust it without probing.
const FRESH_EVIDENCE: Duration = Duration::from_secs(30);

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
        let proofs = credentials.is_none().then(|| Proofs::new(settings.bearers));
        let tokens = credentials.map(|credentials| {
            let shared = redis.clone().zip(hasher.service()).map(|(redis, service)| {
                // A renewal runs inside one request's deadline: it never holds the lock
                // longer, Redis's round trips aside.
                let lock_hold = settings.request_timeout + Duration::from_secs(1);
                SharedToken::new(
                    redis,
                    &service.id().to_hex(),
                    &credentials.client_secret,
                    lock_hold,
                )
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
            proofs,
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

    /// The deadline of a request that starts now: `QPIEN_TIMEOUT_MS` from now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Pass-through mode: a read of this bearer was answered from the cache, so Qpien
    /// accepted it (here, or on another replica through Redis): it is not held back.
    pub fn vouch_for(&self, credential: &Credential) {
        if let Some(proofs) = &self.proofs {
            proofs.vouch(credential.id());
        }
    }

    /// Pass-through mode: whether a request with this bearer from `client` may go on
    /// toward Qpien (`proofs`). Service mode lets every request through.
    pub fn admit_bearer(
        &self,
        credential: &Credential,
        client: ClientKey,
    ) -> Result<(), UpstreamError> {
        let Some(proofs) = &self.proofs else {
            return Ok(());
        };
        proofs.admit(credential.id(), client).map_err(|refusal| {
            self.metrics.bearer_refused(refusal.label());
            refusal.into()
        })
    }

    pub async fn get_conversation(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        wait: BudgetWait,
        deadline: Instant,
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
            .call(
                &GET_CONVERSATION,
                &variables,
                credential,
                request_id,
                wait,
                deadline,
            )
            .await?;
        wire.try_into()
    }

    pub async fn list_conversations(
        &self,
        credential: &Credential,
        request_id: &str,
        query: &ListQuery,
        wait: BudgetWait,
        deadline: Instant,
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
                deadline,
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
        deadline: Instant,
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
                deadline,
            )
            .await?;
        wire.try_into()
    }

    /// Ready means: the upstream answers GraphQL and, in service mode, we hold a token
    /// (the probe fetches one when none is held, unless the budget is spent).
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
        if recently_healthy && self.token() != ServiceToken::Missing {
            return Ok(());
        }
        let credential = self
            .credentials
            .service()
            .unwrap_or_else(|| self.credentials.anonymous());
        match self
            .call::<Value>(
                &PING,
                &json!({}),
                &credential,
                request_id,
                BudgetWait::No,
                self.deadline(),
            )
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

    /// Whether this service holds a valid token of its own.
    pub fn token(&self) -> ServiceToken {
        match &self.tokens {
            None => ServiceToken::NotUsed,
            Some(tokens) if tokens.holds_valid_token() => ServiceToken::Held,
            Some(_) => ServiceToken::Missing,
        }
    }
}

/// The service's own Qpien token, for readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceToken {
    /// Pass-through mode: every call carries its caller's bearer.
    NotUsed,
    Held,
    /// Service mode without a valid token (none fetched yet, or it expired).
    Missing,
}

/// No whole-call timeout here: the call's own deadline ends it first (`guarded`), and a
/// second timer per call would only cost.
fn http_client(connect: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(connect)
        .user_agent(concat!("qpien-rest/", env!("CARGO_PKG_VERSION")))
        .build()
}

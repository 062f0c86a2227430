//! The sandbox: a real GraphQL server that stands in for Qpien's API in development and
//! tests, since no machine here can reach Qpien.
//!
//! It serves exactly the schema qpien-rest assumes, `src/upstream/graphql/schema.graphql`
//! at the workspace root (a test of this crate proves it) and behaves as `/work/shared/qpien-api.md` documents Qpien: client credentials are
//! exchanged for expiring bearer tokens with scopes, failures are GraphQL errors with
//! `extensions.code` and `"success": false`, and a per-client rate limit answers 429 with
//! `X-RateLimit-*` headers on every response. The data is a deterministic demo seed held in
//! memory; each [`Sandbox`] owns its own copy, so tests never need to reset anything.
//!
//! - [`schema`]: the GraphQL types and resolvers;
//! - [`data`]: the seed and the in-memory store;
//! - [`auth`]: clients, tokens and scopes;
//! - [`server`]: HTTP, rate limiting, error shape and counters;
//! - [`webhooks`]: Qpien's webhook feature (registration, signed deliveries, retries),
//!   fed with [`events`] by `updateConversation` and by the [`activity`] generator;
//! - [`config`]: the settings.
//!
//! The `qpien-sandbox` binary (`src/main.rs`) runs it standalone (docker-compose). The
//! facade depends on this crate only to embed it at start-up; this crate depends on
//! nothing of the facade's code.

mod activity;
mod auth;
mod config;
mod data;
mod events;
mod schema;
mod server;
#[cfg(test)]
mod tests;
mod types;
#[cfg(test)]
mod webhook_tests;
mod webhooks;

pub use config::{SandboxConfig, WebhookRegistration};
pub use events::WebhookEvent;
pub use webhooks::{
    DeliveryStats, RegisteredWebhook, RegistrationError, WebhookEndpoint, WebhookStatus,
};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

/// Client with scopes `read_conversations` and `write_conversations`.
pub const DEMO_CLIENT_ID: &str = "demo-client";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";
/// Client with scope `read_conversations` only.
pub const READ_ONLY_CLIENT_ID: &str = "demo-readonly-client";
pub const READ_ONLY_CLIENT_SECRET: &str = "demo-readonly-secret";

/// Counters of what the sandbox received, so tests can prove "zero upstream calls". Also
/// served as JSON at `GET /stats`, for benchmarks that run it as a process of its own.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStats {
    /// Every HTTP request to /api/v1, including rejected ones.
    pub requests: u64,
    /// Requests answered 429 because the client's rate limit was exceeded.
    pub rate_limited: u64,
    /// Executed operations by GraphQL root field name (e.g. "getConversation").
    /// Requests refused before execution (rate limited, malformed body) are not counted here.
    pub operations: BTreeMap<String, u64>,
    /// The X-Request-Id header of the latest request (None if it had none).
    pub last_request_id: Option<String>,
    /// Events emitted and webhook deliveries made.
    pub webhook_deliveries: DeliveryStats,
}

/// A running sandbox.
pub struct Sandbox {
    addr: SocketAddr,
    stats: Arc<Mutex<SandboxStats>>,
    webhooks: Arc<webhooks::Webhooks>,
    handle: ServerHandle,
    task: Option<tokio::task::JoinHandle<()>>,
    activity: Option<tokio::task::AbortHandle>,
}

impl Sandbox {
    /// Starts the server on the given already-bound listener, on the current tokio runtime
    /// (which also runs the webhook deliveries and the activity generator).
    pub fn start(listener: TcpListener, config: SandboxConfig) -> std::io::Result<Sandbox> {
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Handle::current();
        let stats = Arc::new(Mutex::new(SandboxStats::default()));
        let tokens = Arc::new(auth::TokenStore::new(config.token_ttl));
        let store = Arc::new(data::Store::seeded());
        let webhooks = Arc::new(webhooks::Webhooks::new(
            runtime.clone(),
            webhooks::RetryPolicy {
                timeout: config.webhook_timeout,
                base: config.webhook_retry_base,
                cap: config.webhook_retry_cap,
                max_attempts: config.webhook_max_attempts,
            },
        ));
        let activity = (config.activity_per_minute > 0).then(|| {
            runtime
                .spawn(activity::run(
                    store.clone(),
                    webhooks.clone(),
                    config.activity_per_minute,
                    config.activity_seed,
                    config.activity_limit,
                ))
                .abort_handle()
        });
        let state = web::Data::new(server::AppState {
            schema: schema::build(store, tokens.clone(), webhooks.clone()),
            webhooks: webhooks.clone(),
            tokens,
            limiter: server::RateLimiter::new(config.rate_limit_per_minute),
            latency: config.latency,
            stats: stats.clone(),
        });
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(server::routes))
                .workers(1)
                // The host application owns Ctrl-C / SIGTERM and calls `stop`.
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)?
                .run();
        let handle = server.handle();
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "sandbox server failed");
            }
        });
        let sandbox = Sandbox {
            addr,
            stats,
            webhooks,
            handle,
            task: Some(task),
            activity,
        };
        tracing::info!(
            url = %sandbox.url(),
            token_ttl_secs = config.token_ttl.as_secs(),
            rate_limit_per_minute = config.rate_limit_per_minute,
            activity_per_minute = config.activity_per_minute,
            "Qpien sandbox started"
        );
        Ok(sandbox)
    }

    /// GraphQL endpoint URL, e.g. "http://127.0.0.1:43123/api/v1".
    pub fn url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Base URL of the sandbox's HTTP server, e.g. "http://127.0.0.1:43123" (webhook
    /// registration at `/webhooks`, counters at `/stats`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counters of what the sandbox received and delivered so far.
    pub fn stats(&self) -> SandboxStats {
        server::snapshot(&self.stats, &self.webhooks)
    }

    /// Registers a webhook endpoint for `events`, as an operator would in Qpien's app,
    /// with a new secret (32 hex digits), returned only here.
    pub fn register_webhook(
        &self,
        endpoint_url: &str,
        events: &[WebhookEvent],
    ) -> Result<RegisteredWebhook, RegistrationError> {
        self.webhooks
            .register(endpoint_url, events, WebhookStatus::Active, None)
    }

    /// [`Self::register_webhook`] with a secret the receiver already knows.
    pub fn register_webhook_with_secret(
        &self,
        endpoint_url: &str,
        events: &[WebhookEvent],
        secret: &str,
    ) -> Result<RegisteredWebhook, RegistrationError> {
        self.webhooks.register(
            endpoint_url,
            events,
            WebhookStatus::Active,
            Some(secret.to_owned()),
        )
    }

    /// Stops the server (graceful, short timeout), the activity and the deliveries.
    pub async fn stop(mut self) {
        self.stop_background();
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        tracing::info!(url = %self.url(), "Qpien sandbox stopped");
    }
}

impl Sandbox {
    fn stop_background(&mut self) {
        if let Some(activity) = self.activity.take() {
            activity.abort();
        }
        self.webhooks.shut_down();
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_background();
        if self.task.is_some() {
            // Not stopped explicitly: still release the port and worker threads. The
            // command is sent at once; the returned future only waits for completion.
            drop(self.handle.stop(false));
        }
    }
}

/// The SDL async-graphql generates for the sandbox schema (for the schema-agreement test).
pub fn served_sdl() -> String {
    schema::sdl()
}

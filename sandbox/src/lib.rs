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
//! - [`server`]: HTTP, rate limiting, error shape and counters.
//!
//! The `qpien-sandbox` binary (`src/main.rs`) runs it standalone (docker-compose). The
//! facade depends on this crate only to embed it at start-up; this crate depends on
//! nothing of the facade's code.

mod auth;
mod data;
mod schema;
mod server;
#[cfg(test)]
mod tests;
mod types;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};

/// Client with scopes `read_conversations` and `write_conversations`.
pub const DEMO_CLIENT_ID: &str = "demo-client";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";
/// Client with scope `read_conversations` only.
pub const READ_ONLY_CLIENT_ID: &str = "demo-readonly-client";
pub const READ_ONLY_CLIENT_SECRET: &str = "demo-readonly-secret";

/// Tunables of a sandbox; the defaults are Qpien's documented values.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// Requests per client per fixed 60-second window.
    pub rate_limit_per_minute: u32,
    /// Time every GraphQL operation takes before it answers, as a remote API's would;
    /// lets tests and benchmarks see requests that overlap.
    pub latency: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(3600),
            rate_limit_per_minute: 100,
            latency: Duration::ZERO,
        }
    }
}

impl SandboxConfig {
    /// Reads SANDBOX_TOKEN_TTL_SECS and SANDBOX_RATE_LIMIT_PER_MINUTE (both optional, must be integers >= 1);
    /// Err(message for an operator) on a bad value — never panics.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// [`Self::from_env`] over any source of settings, so it can be tested without
    /// touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
            name: &str,
            value: Option<String>,
        ) -> Result<Option<T>, String> {
            let Some(raw) = value else { return Ok(None) };
            match raw.trim().parse::<T>() {
                Ok(n) if n >= T::from(1) => Ok(Some(n)),
                _ => Err(format!(
                    "{name} must be a whole number of at least 1, got {raw:?}"
                )),
            }
        }
        let mut config = Self::default();
        if let Some(secs) =
            positive::<u64>("SANDBOX_TOKEN_TTL_SECS", lookup("SANDBOX_TOKEN_TTL_SECS"))?
        {
            config.token_ttl = Duration::from_secs(secs);
        }
        if let Some(limit) = positive::<u32>(
            "SANDBOX_RATE_LIMIT_PER_MINUTE",
            lookup("SANDBOX_RATE_LIMIT_PER_MINUTE"),
        )? {
            config.rate_limit_per_minute = limit;
        }
        if let Some(raw) = lookup("SANDBOX_LATENCY_MS") {
            match raw.trim().parse::<u64>() {
                Ok(ms) if ms <= 60_000 => config.latency = Duration::from_millis(ms),
                _ => {
                    return Err(format!(
                        "SANDBOX_LATENCY_MS must be a whole number from 0 to 60000, got {raw:?}"
                    ));
                }
            }
        }
        Ok(config)
    }
}

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
}

/// A running sandbox.
pub struct Sandbox {
    addr: SocketAddr,
    stats: Arc<Mutex<SandboxStats>>,
    handle: ServerHandle,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Sandbox {
    /// Starts the server on the given already-bound listener, on the current tokio runtime.
    pub fn start(listener: TcpListener, config: SandboxConfig) -> std::io::Result<Sandbox> {
        let addr = listener.local_addr()?;
        let stats = Arc::new(Mutex::new(SandboxStats::default()));
        let tokens = Arc::new(auth::TokenStore::new(config.token_ttl));
        let state = web::Data::new(server::AppState {
            schema: schema::build(Arc::new(data::Store::seeded()), tokens.clone()),
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
            handle,
            task: Some(task),
        };
        tracing::info!(
            url = %sandbox.url(),
            token_ttl_secs = config.token_ttl.as_secs(),
            rate_limit_per_minute = config.rate_limit_per_minute,
            "Qpien sandbox started"
        );
        Ok(sandbox)
    }

    /// GraphQL endpoint URL, e.g. "http://127.0.0.1:43123/api/v1".
    pub fn url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Counters of what the sandbox received so far.
    pub fn stats(&self) -> SandboxStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the server (graceful, short timeout).
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        tracing::info!(url = %self.url(), "Qpien sandbox stopped");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
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

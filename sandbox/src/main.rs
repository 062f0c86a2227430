//! `qpien-sandbox`: runs the Qpien stand-in on its own (e.g. in docker-compose), so the
//! facade can be developed against it without reaching Qpien.
//!
//! Settings: SANDBOX_HOST (default 127.0.0.1), SANDBOX_PORT (default 8081),
//! SANDBOX_TOKEN_TTL_SECS, SANDBOX_RATE_LIMIT_PER_MINUTE, SANDBOX_LATENCY_MS, RUST_LOG
//! (default "info"). `GET /stats` answers its counters as JSON.
//!
//! Webhooks: SANDBOX_ACTIVITY_PER_MINUTE (default 0, off) makes seeded customers write and
//! agents write and join, that many times a minute (SANDBOX_ACTIVITY_SEED picks the
//! sequence); `updateConversation` reports its changes too. SANDBOX_WEBHOOK_URL registers
//! an endpoint at start-up, signed with SANDBOX_WEBHOOK_SECRET (required with the URL) for
//! SANDBOX_WEBHOOK_EVENTS (comma-separated, default all: NEW_INCOMING_MESSAGE,
//! NEW_OUTGOING_MESSAGE, JOIN_CONVERSATION, CONVERSATION_UPDATED); SANDBOX_WEBHOOK_MAX_ATTEMPTS
//! bounds the retries (default: until it answers 200). More endpoints can be registered
//! over HTTP: `POST /webhooks` `{"endpointUrl", "events", "status"?}`, `GET /webhooks`,
//! `DELETE /webhooks/{id}`.
//!
//! A bad setting exits with code 2 and a message on stderr.

use std::net::TcpListener;
use std::process::ExitCode;

use qpien_sandbox::{
    DEMO_CLIENT_ID, READ_ONLY_CLIENT_ID, Sandbox, SandboxConfig, WebhookRegistration,
};
use tracing_subscriber::EnvFilter;

fn setting(name: &str, default: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(v) => Ok(v),
        Err(std::env::VarError::NotPresent) => Ok(default.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

fn listen_address() -> Result<(String, u16), String> {
    let host = setting("SANDBOX_HOST", "127.0.0.1")?;
    let port = setting("SANDBOX_PORT", "8081")?;
    let port = port
        .trim()
        .parse::<u16>()
        .map_err(|_| format!("SANDBOX_PORT must be a port number (0-65535), got {port:?}"))?;
    Ok((host.trim().to_owned(), port))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let lookup = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let settings = listen_address().and_then(|addr| {
        Ok((
            addr,
            SandboxConfig::from_env()?,
            WebhookRegistration::from_lookup(lookup)?,
        ))
    });
    let ((host, port), config, webhook) = match settings {
        Ok(s) => s,
        Err(message) => {
            eprintln!("qpien-sandbox: invalid setting: {message}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("qpien-sandbox: cannot listen on {host}:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sandbox = match Sandbox::start(listener, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("qpien-sandbox: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(webhook) = webhook {
        match sandbox.register_webhook_with_secret(&webhook.url, &webhook.events, &webhook.secret) {
            Ok(registered) => tracing::info!(
                id = %registered.endpoint.id,
                url = %registered.endpoint.endpoint_url,
                "webhook endpoint registered from SANDBOX_WEBHOOK_URL"
            ),
            Err(e) => {
                eprintln!("qpien-sandbox: invalid setting: SANDBOX_WEBHOOK_URL: {e}");
                sandbox.stop().await;
                return ExitCode::from(2);
            }
        }
    }
    println!("Qpien sandbox GraphQL endpoint: {}", sandbox.url());
    println!("Demo client id: {DEMO_CLIENT_ID} (read-only: {READ_ONLY_CLIENT_ID})");

    shutdown_signal().await;
    tracing::info!("shutting down");
    sandbox.stop().await;
    ExitCode::SUCCESS
}

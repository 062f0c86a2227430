//! Builds and runs the application: checks who may call it, loads and watches the caller
//! keys, binds the listener (port 0 in tests), starts the embedded sandbox when no
//! upstream is configured, wires the routes, the docs and the middleware (CORS
//! outermost, from `CORS_ALLOWED_ORIGINS`).

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::header;
use actix_web::middleware::{Condition, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, WebhookEvent};
use tracing_actix_web::TracingLogger;
use url::Url;
use utoipa_actix_web::AppExt;

use crate::callers::{KeyFileError, KeyStore, Reload};
use crate::connector::ConnectionAuth;
use crate::events::callback_url::Policy;
use crate::events::delivery::Deliveries;
use crate::events::log::{EventLog, OpenError};
use crate::events::subscriptions::Subscriptions;
use crate::events::{QpienWebhooks, Recorder};
use crate::metrics::{self, Metrics};
use crate::public_url::PublicBaseUrl;
use crate::reads::CachedConversations;
use crate::routes::registry;
use crate::settings::{
    CORS_ANY_IN_SERVICE_MODE, ClientCredentials, CorsOrigins, Secret, Settings, SettingsError,
};
use crate::state::redis::RedisState;
use crate::telemetry::{RequestSpan, request_context};
use crate::upstream::QpienClient;
use crate::{admin, openapi, routes};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot register the facade's webhook receiver with the embedded sandbox: {0}")]
    SandboxWebhook(String),
    #[error("cannot start the embedded sandbox: {0}")]
    Sandbox(std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("REDIS_URL cannot be used: {0}")]
    Redis(redis::RedisError),
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("API_KEYS_FILE {path}: {error}")]
    Keys { path: String, error: KeyFileError },
    #[error("{0} (DATA_DIR, or REDIS_URL)")]
    EventLog(#[from] OpenError),
}

impl StartupError {
    /// A mistake in the configuration (exit code 2, as for settings), rather than a
    /// failure of the machine (exit code 1).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::Settings(_) | Self::Keys { .. } | Self::Redis(_) | Self::EventLog(_)
        )
    }
}

pub struct Application {
    port: u16,
    server: Server,
    upstream_url: Url,
    service_mode: bool,
    /// Kept so the embedded sandbox lives as long as the application.
    _sandbox: Option<Sandbox>,
    /// Watches the caller keys file while the application runs.
    key_watch: Option<tokio::task::JoinHandle<()>>,
    /// Tells the event streams to end when the service stops.
    closing: tokio::sync::watch::Sender<bool>,
    /// The admin listener, with `ADMIN_PORT`.
    admin: Option<admin::Admin>,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.check_access()?;
        let keys = load_caller_keys(&settings)?;
        let (upstream_url, credentials, sandbox) = match &settings.upstream.api_url {
            Some(url) => (url.clone(), settings.upstream.credentials.clone(), None),
            None => {
                let address = "127.0.0.1:0";
                let listener = TcpListener::bind(address).map_err(StartupError::Sandbox)?;
                let sandbox = Sandbox::start(listener, settings.sandbox.clone())
                    .map_err(StartupError::Sandbox)?;
                let url = Url::parse(&sandbox.url()).expect("the sandbox URL is valid");
                // The embedded default wires the sandbox's demo key itself (service mode).
                let credentials =
                    settings
                        .upstream
                        .credentials
                        .clone()
                        .or(Some(ClientCredentials {
                            client_id: DEMO_CLIENT_ID.to_owned(),
                            client_secret: Secret::new(DEMO_CLIENT_SECRET),
                        }));
                (url, credentials, Some(sandbox))
            }
        };
        let service_mode = credentials.is_some();
        // Settings::from_env refuses this too; settings built in code meet it here.
        if service_mode && settings.cors == CorsOrigins::Any {
            return Err(SettingsError(vec![CORS_ANY_IN_SERVICE_MODE.to_owned()]).into());
        }
        let cors_origins = settings.cors.clone();
        let metrics = web::Data::new(Metrics::default());
        // What names credentials in Redis alike on every replica, and keys the MAC of
        // the values they share: REDIS_HASH_SECRET, else (service mode) the client secret.
        let hash_secret = settings.redis.as_ref().and_then(|r| {
            r.hash_secret
                .clone()
                .or_else(|| credentials.as_ref().map(|c| c.client_secret.clone()))
        });
        let redis = match (&settings.redis, &hash_secret) {
            (Some(redis), Some(secret)) => Some(
                RedisState::connect(redis, secret, metrics.clone().into_inner())
                    .await
                    .map_err(StartupError::Redis)?,
            ),
            (Some(_), None) => {
                return Err(SettingsError(vec![
                    "REDIS_URL in pass-through mode needs REDIS_HASH_SECRET".to_owned(),
                ])
                .into());
            }
            (None, _) => None,
        };
        // The key of the subscriptions' sealed signing secrets: REDIS_HASH_SECRET, else
        // the client secret, the same on every replica.
        let sealing = settings
            .redis
            .as_ref()
            .and_then(|r| r.hash_secret.clone())
            .or_else(|| credentials.as_ref().map(|c| c.client_secret.clone()));
        let client = Arc::new(QpienClient::new(
            upstream_url.clone(),
            &settings.upstream,
            credentials,
            redis.clone().zip(hash_secret.as_ref().map(Secret::expose)),
            metrics.clone().into_inner(),
        )?);
        let reads = web::Data::new(CachedConversations::new(
            Arc::clone(&client),
            settings.read_cache,
            redis.clone(),
            metrics.clone().into_inner(),
        ));
        // The account's changes, for the change feed, the stream and the triggers. Only in
        // service mode: a pass-through bearer may belong to any Qpien account, and the
        // facade cannot tell which without asking Qpien, so it shows no one the feed.
        let log = if service_mode {
            Some(EventLog::open(&settings, redis.clone()).await?)
        } else {
            None
        };
        let recorder = log.as_ref().map(|log| {
            Arc::new(Recorder::new(
                log.clone(),
                redis.clone(),
                metrics.clone().into_inner(),
            ))
        });
        // Webhook subscriptions, delivered from the log (service mode only, like it).
        let (subscriptions, deliveries) = match (&log, sealing) {
            (Some(log), Some(sealing)) => {
                let subscriptions = Arc::new(
                    Subscriptions::open(&settings.data_dir, redis.clone(), &sealing)
                        .map_err(|e| OpenError(e.to_string()))?,
                );
                let policy = Policy {
                    allow_http: settings
                        .subscriptions
                        .allow_http
                        .unwrap_or(sandbox.is_some()),
                    allow_private: settings
                        .subscriptions
                        .allow_private_networks
                        .unwrap_or(sandbox.is_some()),
                };
                let deliveries = Deliveries::start(
                    subscriptions.clone(),
                    log.clone(),
                    settings.subscriptions,
                    policy,
                    metrics.clone().into_inner(),
                )?;
                (Some(subscriptions), Some(deliveries))
            }
            _ => (None, None),
        };
        // The embedded sandbox reports its changes to this facade's own receiver, signed
        // with the configured secret or one made for this run: push works on `cargo run`.
        let mut webhook_settings = settings.webhooks.clone();
        if sandbox.is_some() && webhook_settings.secrets.is_empty() {
            webhook_settings.secrets = vec![Secret::new(format!(
                "{:032x}",
                uuid::Uuid::new_v4().as_u128()
            ))];
        }
        let webhooks = QpienWebhooks::new(
            &webhook_settings,
            redis.clone(),
            recorder.clone(),
            metrics.clone().into_inner(),
        )
        .map(web::Data::new);
        let client = web::Data::from(client);
        metrics
            .redis_configured
            .set(i64::from(settings.redis.is_some()));
        metrics
            .webhooks_configured
            .set(i64::from(webhooks.is_some()));
        let key_watch = keys.as_ref().map(|k| watch_caller_keys(k, metrics.clone()));
        let keys = keys.map(web::Data::from);
        let base = web::Data::new(PublicBaseUrl::for_settings(&settings));
        let docs = web::Data::new(openapi::Renderings::build());
        let feed_settings = web::Data::new(settings.event_log);
        let (closing, streams_closing) = tokio::sync::watch::channel(false);
        let streams_closing = web::Data::new(routes::StreamsClosing(streams_closing));
        let stream_slots = web::Data::from(routes::StreamSlots::new(
            settings.event_log.streams_per_key,
            metrics.clone().into_inner(),
        ));
        let connection = web::Data::new(ConnectionAuth::for_settings(&settings));

        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind((settings.host, settings.port))
            .map_err(|source| StartupError::Bind { address, source })?;
        let port = listener
            .local_addr()
            .expect("a bound listener has an address")
            .port();
        if let (Some(sandbox), Some(secret)) = (&sandbox, webhook_settings.secrets.first()) {
            let host = if settings.host.is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                settings.host
            };
            let receiver = format!(
                "http://{}/webhooks/qpien",
                std::net::SocketAddr::from((host, port))
            );
            sandbox
                .register_webhook_with_secret(&receiver, &WebhookEvent::ALL, secret.expose())
                .map_err(|e| StartupError::SandboxWebhook(e.to_string()))?;
        }

        let admin = settings
            .admin
            .map(|address| {
                let shared = admin::Shared {
                    client: client.clone(),
                    metrics: metrics.clone(),
                    keys: keys.clone(),
                    webhooks: webhooks.clone(),
                };
                admin::start(address, shared)
            })
            .transpose()?;
        let admin_apart = admin.is_some();

        let server = HttpServer::new(move || {
            let mut app = App::new()
                .wrap(TracingLogger::<RequestSpan>::new())
                .wrap(from_fn(metrics::record))
                .wrap(from_fn(request_context))
                .app_data(client.clone())
                .app_data(reads.clone())
                .app_data(metrics.clone())
                .app_data(base.clone())
                .app_data(feed_settings.clone())
                .app_data(stream_slots.clone())
                .app_data(streams_closing.clone());
            if let Some(keys) = &keys {
                app = app.app_data(keys.clone());
            }
            if let Some(webhooks) = &webhooks {
                app = app.app_data(webhooks.clone());
            }
            if let (Some(log), Some(recorder)) = (&log, &recorder) {
                app = app
                    .app_data(web::Data::from(log.clone()))
                    .app_data(web::Data::from(recorder.clone()));
            }
            if admin_apart {
                app = app.service(admin::withheld());
            }
            if let (Some(subscriptions), Some(deliveries)) = (&subscriptions, &deliveries) {
                app = app
                    .app_data(web::Data::from(subscriptions.clone()))
                    .app_data(web::Data::from(deliveries.clone()));
            }
            app.into_utoipa_app()
                .configure(routes::configure)
                .into_app()
                .configure(|cfg| openapi::configure(cfg, docs.clone(), connection.clone()))
                .route("/docs", web::get().to(|| async { redirect("/docs/") }))
                .route("/", web::get().to(|| async { redirect("/docs/") }))
                .default_service(web::to(routes::unmatched))
                // Outermost: preflights are answered before routing, and every answer,
                // problems included, carries the headers a page needs to read it.
                .wrap(Condition::new(
                    cors_origins != CorsOrigins::Off,
                    cors(&cors_origins),
                ))
        })
        .shutdown_timeout(settings.shutdown_drain.as_secs())
        // Signals are handled in `run_until_stopped`, which also ends the event streams.
        .disable_signals()
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            address: format!("port {port}"),
            source,
        })?
        .run();

        Ok(Self {
            port,
            server,
            upstream_url,
            service_mode,
            _sandbox: sandbox,
            key_watch,
            closing,
            admin,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port, with `ADMIN_PORT`.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|a| a.port)
    }

    pub fn upstream_url(&self) -> &Url {
        &self.upstream_url
    }

    pub fn is_service_mode(&self) -> bool {
        self.service_mode
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting, ends the event streams
    /// (their clients reconnect elsewhere with `Last-Event-ID`) and drains in-flight
    /// requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Self {
            server,
            _sandbox,
            key_watch,
            closing,
            admin,
            ..
        } = self;
        let handle = server.handle();
        let signals = tokio::spawn(async move {
            stop_signal().await;
            tracing::info!("stopping: no new connections; ending event streams, draining requests");
            let stopped = handle.stop(true);
            let _ = closing.send(true);
            stopped.await;
        });
        // The admin port keeps answering probes while the public one drains.
        let result = match admin {
            Some(admin) => admin.stop_after(server).await,
            None => server.await,
        };
        signals.abort();
        if let Some(watch) = key_watch {
            watch.abort();
        }
        if let Some(sandbox) = _sandbox {
            sandbox.stop().await;
        }
        result
    }
}

/// SIGTERM (an orchestrator stopping the service) or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM can be handled");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Request headers a page may send, beyond the CORS-safelisted ones.
const CORS_REQUEST_HEADERS: [&str; 7] = [
    "content-type",
    "if-match",
    "if-none-match",
    "authorization",
    "x-request-id",
    "x-api-key",
    // `EventSource` sends it when it reconnects to `/events`.
    "last-event-id",
];

/// Response headers a page may read, beyond the CORS-safelisted ones.
const CORS_EXPOSED_HEADERS: [&str; 12] = [
    "etag",
    "link",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
    "location",
    "cache-status",
    "age",
];

/// What pages of `origins` may do. No credentials mode: callers authenticate with a
/// header, never a cookie, so `*` stays a plain wildcard.
fn cors(origins: &CorsOrigins) -> Cors {
    let cors = Cors::default()
        .allowed_methods(registry::methods())
        .allowed_headers(CORS_REQUEST_HEADERS)
        .expose_headers(CORS_EXPOSED_HEADERS)
        .max_age(600);
    match origins {
        CorsOrigins::Off => cors,
        CorsOrigins::Any => cors.allow_any_origin().send_wildcard(),
        CorsOrigins::List(list) => list
            .iter()
            .fold(cors, |cors, origin| cors.allowed_origin(origin)),
    }
}

/// The caller keys of `API_KEYS_FILE`, read now: a broken file stops the start rather
/// than serving with no keys.
fn load_caller_keys(settings: &Settings) -> Result<Option<Arc<KeyStore>>, StartupError> {
    let Some(path) = &settings.api_keys_file else {
        if settings.is_service_mode() && !settings.host.is_loopback() {
            tracing::warn!(host = %settings.host, "serving callers without keys on a non-loopback address, as ALLOW_ANONYMOUS=true says");
        }
        return Ok(None);
    };
    let keys = KeyStore::load(path).map_err(|error| StartupError::Keys {
        path: path.display().to_string(),
        error,
    })?;
    tracing::info!(keys.file = %path.display(), keys.count = keys.current().len(), "caller keys loaded");
    if settings.allow_anonymous {
        tracing::warn!(
            "ALLOW_ANONYMOUS=true has no effect: API_KEYS_FILE is set, so every caller needs a key"
        );
    }
    Ok(Some(Arc::new(keys)))
}

/// Keeps `keys` equal to the file while the application runs, and the metrics told.
fn watch_caller_keys(
    keys: &Arc<KeyStore>,
    metrics: web::Data<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics.caller_keys.set(count(keys.current().len()));
    report_keys_health(keys, &metrics);
    let store = keys.clone();
    keys.clone().watch(move |outcome| {
        let outcome = match outcome {
            Reload::Unchanged => return,
            Reload::Reloaded(n) => {
                metrics.caller_keys.set(count(*n));
                "reloaded"
            }
            Reload::Kept(_) => "kept",
        };
        metrics
            .caller_keys_reloads
            .get_or_create(&metrics::OutcomeLabels { outcome })
            .inc();
        report_keys_health(&store, &metrics);
    })
}

fn report_keys_health(keys: &KeyStore, metrics: &Metrics) {
    let health = keys.health();
    let loaded = health
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    metrics.caller_keys_last_loaded.set(loaded);
    metrics
        .caller_keys_reload_failing
        .set(i64::from(health.failing.is_some()));
}

fn redirect(to: &'static str) -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, to))
        .finish()
}

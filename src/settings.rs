//! Settings, read once from the environment at start-up and checked there: a bad value
//! is a message written for the operator and a non-zero exit, never a panic later.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use qpien_sandbox::SandboxConfig;

mod subscriptions;
pub use subscriptions::SubscriptionSettings;

/// Everything the service can be told. Each field says its environment variable and default.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `HOST`: address to listen on. Default `127.0.0.1`; `0.0.0.0` in a container.
    pub host: IpAddr,
    /// `PORT`: port to listen on. Default `8080`; `0` picks a free port (tests).
    pub port: u16,
    /// `PUBLIC_BASE_URL`: the URL callers reach the service at, e.g.
    /// `https://qpien-rest.example.com`. Used for paging links and the OpenAPI `servers`.
    /// Default: unset, links are built from the request's `Host`.
    pub public_base_url: Option<Url>,
    /// `ADMIN_PORT` and `ADMIN_HOST`: where `/healthz`, `/readyz` and `/metrics` are
    /// served instead of the public port (which then answers 404 for them), so probes and
    /// scrapes can be let in apart from callers. `ADMIN_HOST` defaults to `HOST`: probes
    /// and scrapers usually come from outside the container, as callers do. Default:
    /// unset, they are on the public port.
    pub admin: Option<SocketAddr>,
    /// Where and how to reach Qpien.
    pub upstream: UpstreamSettings,
    /// The read cache: `READ_CACHE_TTL_MS` (default 5000; 0 turns it off),
    /// `READ_CACHE_STALE_IF_ERROR_SECS` (300), `READ_CACHE_MAX_ENTRIES` (10000) and
    /// `READ_CACHE_MAX_BYTES` (32 MiB).
    pub read_cache: CacheLimits,
    /// `API_KEYS_FILE`: the caller keys of a service-mode instance (one per line: id,
    /// SHA-256 of the key, scopes, share; see `callers`). Re-read when it changes.
    /// Default: unset, callers send no key (see `allow_anonymous`).
    pub api_keys_file: Option<PathBuf>,
    /// `ALLOW_ANONYMOUS`: `true` lets a service-mode instance without `API_KEYS_FILE`
    /// serve anyone on a non-loopback `HOST` (e.g. behind a gateway that authenticates).
    /// Default `false`: such an instance refuses to start.
    pub allow_anonymous: bool,
    /// `LOG_FORMAT`: `text` (default) or `json` (one JSON object per line).
    pub log_format: LogFormat,
    /// `SHUTDOWN_DRAIN_SECS`: on SIGTERM or SIGINT, how long in-flight requests may take
    /// to finish. Default 30.
    pub shutdown_drain: Duration,
    /// `CORS_ALLOWED_ORIGINS`: the web origins (`scheme://host[:port]`, comma-separated)
    /// whose pages may call the service from a browser, or `*` for any (pass-through mode
    /// only). Default: unset, no CORS headers at all.
    pub cors: CorsOrigins,
    /// Shared state for several replicas (`REDIS_*`, `QPIEN_REPLICAS`); `None` keeps
    /// everything in this process.
    pub redis: Option<RedisSettings>,
    /// Qpien's webhooks in (`QPIEN_WEBHOOK_*`).
    pub webhooks: WebhookSettings,
    /// `DATA_DIR`: the directory of the files the service keeps, today the event log
    /// (`events.sqlite3`, used when `REDIS_URL` is unset). Created at start-up if missing;
    /// a volume of its own in a container. Default `./data`.
    pub data_dir: PathBuf,
    /// The change feed's event log (`EVENT_LOG_*`).
    pub event_log: EventLogSettings,
    /// Webhook subscriptions (`SUBSCRIPTION_*`): delivery, retries, callback URLs.
    pub subscriptions: SubscriptionSettings,
    /// The embedded sandbox, used only when `QPIEN_API_URL` is unset:
    /// `SANDBOX_TOKEN_TTL_SECS` (default 3600), `SANDBOX_RATE_LIMIT_PER_MINUTE` (100),
    /// `SANDBOX_LATENCY_MS` (0), and `SANDBOX_ACTIVITY_PER_MINUTE`: how many changes a
    /// minute its seeded customers and agents make, each reported to the facade's own
    /// webhook receiver (default `EMBEDDED_ACTIVITY_PER_MINUTE`; 0 turns it off).
    pub sandbox: SandboxConfig,
}

#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// `QPIEN_API_URL`: Qpien's GraphQL endpoint, e.g. `https://api.qpien.com/api/v1`.
    /// Default: unset, the facade starts the embedded sandbox and talks to it.
    pub api_url: Option<Url>,
    /// `QPIEN_CLIENT_ID` and `QPIEN_CLIENT_SECRET`: service mode, the facade gets and renews
    /// its own token. Default: unset, pass-through mode (the caller's bearer is forwarded);
    /// with the embedded sandbox, its demo credentials.
    pub credentials: Option<ClientCredentials>,
    /// `QPIEN_CONNECT_TIMEOUT_MS`: TCP/TLS connect timeout. Default 2000.
    pub connect_timeout: Duration,
    /// `QPIEN_TIMEOUT_MS`: the most one request may spend on Qpien, token renewal,
    /// budget waits and retries included. Default 10000.
    pub request_timeout: Duration,
    /// `QPIEN_MAX_RETRIES`: retries of a read after a connection failure or 502/503/504,
    /// 0 to 2. Default 2.
    pub max_retries: u32,
    /// `QPIEN_RATE_LIMIT_PER_MINUTE`: requests per minute the facade sends for one
    /// credential. Default 100, Qpien's limit.
    pub rate_limit_per_minute: u32,
    /// `QPIEN_RATE_LIMIT_MAX_WAIT_MS`: how long a request may wait for budget before it is
    /// refused with 429. Default 1000.
    pub rate_limit_max_wait: Duration,
    /// `QPIEN_REPLICAS`: how many replicas share the Qpien account. Without Redis, or
    /// while it is out of reach, each replica sends at most its share: the limit divided
    /// by this. Default 1.
    pub replicas: u32,
    /// `QPIEN_RATE_LIMIT_WRITE_RESERVE`: requests of each minute's budget that reads never
    /// take, so updates (and token renewals) get through while pollers spend the rest.
    /// Default: a tenth of the limit, rounded down. Must be below the limit.
    pub write_reserve: Option<u32>,
    /// `QPIEN_BREAKER_FAILURES`: consecutive upstream failures that open the circuit
    /// breaker. Default 5.
    pub breaker_failures: u32,
    /// `QPIEN_BREAKER_COOLDOWN_MS`: how long the breaker stays open before one probe.
    /// Default 30000.
    pub breaker_cool_down: Duration,
    /// Pass-through mode's guard against junk bearers (`upstream::proofs`).
    pub bearers: BearerLimits,
}

/// Pass-through mode: what the facade spends on bearers Qpien has not yet accepted.
#[derive(Clone, Copy, Debug)]
pub struct BearerLimits {
    /// `REJECTED_CREDENTIALS_TTL_SECS`: how long a bearer Qpien refused is answered 401
    /// without asking Qpien again. Default 60.
    pub rejected_ttl: Duration,
    /// `UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT`: requests a minute one client address
    /// may make with bearers Qpien has not yet accepted. Default 60.
    pub unproven_per_client: u32,
    /// `UNPROVEN_CREDENTIALS_PER_MINUTE`: the same, for all client addresses together.
    /// Default 600.
    pub unproven_total: u32,
}

impl Default for BearerLimits {
    fn default() -> Self {
        Self {
            rejected_ttl: Duration::from_secs(60),
            unproven_per_client: 60,
            unproven_total: 600,
        }
    }
}

impl UpstreamSettings {
    /// The write reserve in force: the setting, else a tenth of the limit.
    pub fn write_reserve(&self) -> u32 {
        self.write_reserve
            .unwrap_or(self.rate_limit_per_minute / 10)
    }
}

/// The read cache's bounds.
#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    /// How long an answer is served without asking Qpien; zero turns the cache off.
    pub ttl: Duration,
    /// How long after that it may still stand in for an answer Qpien cannot give.
    pub stale_if_error: Duration,
    pub max_entries: u64,
    pub max_bytes: u64,
}

/// Changes a minute the embedded sandbox makes by default, as a quiet account would: every
/// few seconds a customer writes or an agent joins, so `cargo run` shows push at work
/// while a poll repeated within seconds is still usually a cache hit.
pub const EMBEDDED_ACTIVITY_PER_MINUTE: u32 = 6;

/// Qpien's webhook deliveries to `POST /webhooks/qpien`.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `QPIEN_WEBHOOK_SECRET`: the secret Qpien showed when the webhook was created;
    /// several, comma-separated, while one is being rotated (a delivery signed with any
    /// is accepted). Default: unset, the route answers 404 (with the embedded sandbox,
    /// `cargo run` registers a webhook of its own and uses its secret).
    pub secrets: Vec<Secret>,
    /// `QPIEN_WEBHOOK_MAX_BODY_BYTES`: the largest delivery taken; larger ones get 413
    /// before they are read whole. Default 262144 (256 KiB).
    pub max_body_bytes: usize,
    /// `QPIEN_WEBHOOK_DEDUP_SECS`: how long a delivery's id is remembered, so Qpien's
    /// retries of it are applied once. Default 86400.
    pub remember: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            max_body_bytes: 256 * 1024,
            remember: Duration::from_secs(86_400),
        }
    }
}

impl WebhookSettings {
    /// The `QPIEN_WEBHOOK_*` settings; each problem is pushed for the operator.
    fn parse(get: &impl Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Self {
        let mut settings = Self::default();
        if let Some(list) = get("QPIEN_WEBHOOK_SECRET") {
            settings.secrets = list
                .split(',')
                .map(str::trim)
                .filter(|secret| !secret.is_empty())
                .map(Secret::new)
                .collect();
            if settings.secrets.is_empty() {
                problems.push("QPIEN_WEBHOOK_SECRET is set but holds no secret: give the secret Qpien showed when the webhook was created (several, comma-separated, while rotating), or unset it".into());
            }
        }
        let mut number = |key: &str, range: std::ops::RangeInclusive<u64>| {
            whole_number(get, problems, key, range)
        };
        if let Some(n) = number("QPIEN_WEBHOOK_MAX_BODY_BYTES", 1_024..=16_777_216) {
            settings.max_body_bytes = n as usize;
        }
        if let Some(n) = number("QPIEN_WEBHOOK_DEDUP_SECS", 1..=604_800) {
            settings.remember = Duration::from_secs(n);
        }
        settings
    }
}

/// The durable event log under the change feed (`events::log`).
#[derive(Clone, Copy, Debug)]
pub struct EventLogSettings {
    /// `EVENT_LOG_RETENTION_SECS`: how long an event is kept; a cursor older than that is
    /// gone and its reader starts again from now. Default 604800 (7 days).
    pub retention: Duration,
    /// `EVENT_STREAMS_PER_KEY`: how many event streams (`GET /events`) one caller key (or,
    /// without keys, all anonymous callers together) may hold open on one replica.
    /// Default 20.
    pub streams_per_key: u32,
    /// `EVENT_STREAM_HEARTBEAT_SECS`: how often an idle stream sends a comment, so that
    /// proxies keep it open and clients notice a dead one. Default 15.
    pub heartbeat: Duration,
    /// `TRIGGER_POLL_SECS`: the `Retry-After` of the Power Automate trigger's answers
    /// while nothing is new. Default 60.
    pub trigger_poll: Duration,
}

impl Default for EventLogSettings {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(7 * 86_400),
            streams_per_key: 20,
            heartbeat: Duration::from_secs(15),
            trigger_poll: Duration::from_secs(60),
        }
    }
}

/// The whole number `key` is set to, when it is and lies in `range`; else a problem for
/// the operator, and `None`.
fn whole_number(
    get: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Option<u64> {
    let value = get(key)?;
    match value.parse::<u64>() {
        Ok(n) if range.contains(&n) => Some(n),
        _ => {
            problems.push(format!(
                "{key} must be a whole number from {} to {}, got {value:?}",
                range.start(),
                range.end()
            ));
            None
        }
    }
}

/// Where replicas share their rate budget, token and read cache.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `REDIS_URL`: `redis://[:password@]host:port[/db]`, or `rediss://` for TLS.
    /// Default: unset, nothing is shared.
    pub url: Secret,
    /// `REDIS_KEY_PREFIX`: the start of every key this service writes. Default
    /// `qpien-rest:`.
    pub key_prefix: String,
    /// `REDIS_TIMEOUT_MS`: the most one Redis command may take before the service goes on
    /// without Redis. Default 250.
    pub timeout: Duration,
    /// `REDIS_HASH_SECRET`: the key of the hashes that name credentials in Redis, the
    /// same on every replica. Default: derived from `QPIEN_CLIENT_SECRET` (service mode);
    /// required in pass-through mode.
    pub hash_secret: Option<Secret>,
}

#[derive(Clone, Debug)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
}

/// A string that never shows in `Debug` or `Display` output, so a settings dump or an
/// error chain cannot leak it into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Which web pages may call the service from a browser (CORS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers: browsers keep other sites' pages from reading answers.
    #[default]
    Off,
    /// Any origin (`*`): only where each caller brings their own credentials.
    Any,
    /// These origins, each as browsers send it: `https://tools.example.com:8443`.
    List(Vec<String>),
}

/// Why `CORS_ALLOWED_ORIGINS=*` cannot go with service mode; start-up refuses it.
pub const CORS_ANY_IN_SERVICE_MODE: &str = "CORS_ALLOWED_ORIGINS=* is refused in service mode: a page on any web site could then call this service and spend its Qpien API key. List the origins of your own tools instead, e.g. CORS_ALLOWED_ORIGINS=https://retool.example.com";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every problem found in the environment, so an operator fixes them all in one go.
#[derive(Debug)]
pub struct SettingsError(pub Vec<String>);

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.0 {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsError {}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            api_url: None,
            credentials: None,
            connect_timeout: Duration::from_millis(2_000),
            request_timeout: Duration::from_millis(10_000),
            max_retries: 2,
            rate_limit_per_minute: 100,
            rate_limit_max_wait: Duration::from_millis(1_000),
            replicas: 1,
            write_reserve: None,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_millis(30_000),
            bearers: BearerLimits::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            public_base_url: None,
            admin: None,
            upstream: UpstreamSettings::default(),
            read_cache: CacheLimits {
                ttl: Duration::from_millis(5_000),
                stale_if_error: Duration::from_secs(300),
                max_entries: 10_000,
                max_bytes: 32 * 1024 * 1024,
            },
            api_keys_file: None,
            allow_anonymous: false,
            log_format: LogFormat::Text,
            shutdown_drain: Duration::from_secs(30),
            cors: CorsOrigins::Off,
            redis: None,
            webhooks: WebhookSettings::default(),
            data_dir: PathBuf::from("./data"),
            event_log: EventLogSettings::default(),
            subscriptions: SubscriptionSettings::default(),
            sandbox: SandboxConfig::default(),
        }
    }
}

impl Settings {
    /// Service mode: the service calls Qpien with its own key, from `QPIEN_CLIENT_ID` and
    /// `QPIEN_CLIENT_SECRET`, or the embedded sandbox's demo key.
    pub fn is_service_mode(&self) -> bool {
        self.upstream.credentials.is_some() || self.upstream.api_url.is_none()
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Reads settings through `lookup`, so tests can pass a map instead of the environment.
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();
        let mut settings = Settings::default();

        if let Some(v) = get("HOST") {
            match v.parse() {
                Ok(ip) => settings.host = ip,
                Err(_) => problems.push(format!(
                    "HOST must be an IP address such as 127.0.0.1 or 0.0.0.0, got {v:?}"
                )),
            }
        }
        if let Some(v) = get("PORT") {
            match v.parse() {
                Ok(port) => settings.port = port,
                Err(_) => {
                    problems.push(format!("PORT must be a number from 0 to 65535, got {v:?}"))
                }
            }
        }
        settings.admin = admin_address(&get, &settings, &mut problems);
        if let Some(v) = get("PUBLIC_BASE_URL") {
            match parse_http_url(&v) {
                Ok(url) => settings.public_base_url = Some(url),
                Err(why) => problems.push(format!("PUBLIC_BASE_URL {why}, got {v:?}")),
            }
        }
        if let Some(v) = get("QPIEN_API_URL") {
            match parse_http_url(&v) {
                Ok(url) => settings.upstream.api_url = Some(url),
                Err(why) => problems.push(format!("QPIEN_API_URL {why}, got {v:?}")),
            }
        }
        match (get("QPIEN_CLIENT_ID"), get("QPIEN_CLIENT_SECRET")) {
            (Some(client_id), Some(secret)) => {
                settings.upstream.credentials = Some(ClientCredentials {
                    client_id,
                    client_secret: Secret::new(secret),
                })
            }
            (None, None) => {}
            (Some(_), None) => problems.push(
                "QPIEN_CLIENT_ID is set but QPIEN_CLIENT_SECRET is not: set both (service mode) or neither (pass-through mode)".into(),
            ),
            (None, Some(_)) => problems.push(
                "QPIEN_CLIENT_SECRET is set but QPIEN_CLIENT_ID is not: set both (service mode) or neither (pass-through mode)".into(),
            ),
        }
        let mut number = |key: &str, range: std::ops::RangeInclusive<u64>| {
            whole_number(&get, &mut problems, key, range)
        };
        let upstream = &mut settings.upstream;
        if let Some(ms) = number("QPIEN_CONNECT_TIMEOUT_MS", 1..=600_000) {
            upstream.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("QPIEN_TIMEOUT_MS", 1..=600_000) {
            upstream.request_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number("QPIEN_MAX_RETRIES", 0..=2) {
            upstream.max_retries = n as u32;
        }
        if let Some(n) = number("QPIEN_RATE_LIMIT_PER_MINUTE", 1..=1_000_000) {
            upstream.rate_limit_per_minute = n as u32;
        }
        if let Some(ms) = number("QPIEN_RATE_LIMIT_MAX_WAIT_MS", 0..=600_000) {
            upstream.rate_limit_max_wait = Duration::from_millis(ms);
        }
        // Each replica alone keeps to limit / replicas, which must leave it one request.
        let most = u64::from(upstream.rate_limit_per_minute).min(1_000);
        if let Some(n) = number("QPIEN_REPLICAS", 1..=most) {
            upstream.replicas = n as u32;
        }
        let limit = upstream.rate_limit_per_minute;
        if let Some(n) = number(
            "QPIEN_RATE_LIMIT_WRITE_RESERVE",
            0..=u64::from(limit.saturating_sub(1)),
        ) {
            upstream.write_reserve = Some(n as u32);
        }
        if let Some(n) = number("QPIEN_BREAKER_FAILURES", 1..=1_000) {
            upstream.breaker_failures = n as u32;
        }
        if let Some(ms) = number("QPIEN_BREAKER_COOLDOWN_MS", 1..=3_600_000) {
            upstream.breaker_cool_down = Duration::from_millis(ms);
        }
        let bearers = &mut upstream.bearers;
        if let Some(secs) = number("REJECTED_CREDENTIALS_TTL_SECS", 1..=3_600) {
            bearers.rejected_ttl = Duration::from_secs(secs);
        }
        if let Some(n) = number("UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT", 1..=1_000_000) {
            bearers.unproven_per_client = n as u32;
        }
        if let Some(n) = number("UNPROVEN_CREDENTIALS_PER_MINUTE", 1..=1_000_000) {
            bearers.unproven_total = n as u32;
        }
        let cache = &mut settings.read_cache;
        if let Some(ms) = number("READ_CACHE_TTL_MS", 0..=3_600_000) {
            cache.ttl = Duration::from_millis(ms);
        }
        if let Some(secs) = number("READ_CACHE_STALE_IF_ERROR_SECS", 0..=86_400) {
            cache.stale_if_error = Duration::from_secs(secs);
        }
        if let Some(n) = number("READ_CACHE_MAX_ENTRIES", 1..=10_000_000) {
            cache.max_entries = n;
        }
        if let Some(n) = number("READ_CACHE_MAX_BYTES", 1_048_576..=68_719_476_736) {
            cache.max_bytes = n;
        }
        if let Some(secs) = number("SHUTDOWN_DRAIN_SECS", 0..=3_600) {
            settings.shutdown_drain = Duration::from_secs(secs);
        }
        if let Some(secs) = number("EVENT_LOG_RETENTION_SECS", 60..=31_536_000) {
            settings.event_log.retention = Duration::from_secs(secs);
        }
        if let Some(n) = number("EVENT_STREAMS_PER_KEY", 1..=100_000) {
            settings.event_log.streams_per_key = n as u32;
        }
        if let Some(secs) = number("EVENT_STREAM_HEARTBEAT_SECS", 1..=300) {
            settings.event_log.heartbeat = Duration::from_secs(secs);
        }
        if let Some(secs) = number("TRIGGER_POLL_SECS", 1..=86_400) {
            settings.event_log.trigger_poll = Duration::from_secs(secs);
        }
        if let Some(v) = get("LOG_FORMAT") {
            match v.to_ascii_lowercase().as_str() {
                "text" => settings.log_format = LogFormat::Text,
                "json" => settings.log_format = LogFormat::Json,
                _ => problems.push(format!("LOG_FORMAT must be text or json, got {v:?}")),
            }
        }
        settings.redis = redis_settings(&get, &mut problems);
        settings.webhooks = WebhookSettings::parse(&get, &mut problems);
        settings.subscriptions = SubscriptionSettings::parse(&get, &mut problems);
        if let Some(redis) = &settings.redis
            && redis.hash_secret.is_none()
            && !settings.is_service_mode()
        {
            problems.push("REDIS_URL in pass-through mode needs REDIS_HASH_SECRET: the same random value on every replica (e.g. from `openssl rand -hex 32`), the key of the hashes that name callers' tokens in Redis".into());
        }
        if let Some(v) = get("CORS_ALLOWED_ORIGINS") {
            match parse_origins(&v) {
                Ok(origins) => settings.cors = origins,
                Err(why) => problems.push(format!("CORS_ALLOWED_ORIGINS {why}")),
            }
        }
        if settings.cors == CorsOrigins::Any && settings.is_service_mode() {
            problems.push(CORS_ANY_IN_SERVICE_MODE.to_owned());
        }
        if let Some(v) = get("DATA_DIR") {
            settings.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("API_KEYS_FILE") {
            settings.api_keys_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("ALLOW_ANONYMOUS") {
            match v.to_ascii_lowercase().as_str() {
                "true" => settings.allow_anonymous = true,
                "false" => settings.allow_anonymous = false,
                _ => problems.push(format!("ALLOW_ANONYMOUS must be true or false, got {v:?}")),
            }
        }
        let embedded = SandboxConfig {
            activity_per_minute: EMBEDDED_ACTIVITY_PER_MINUTE,
            ..SandboxConfig::default()
        };
        match SandboxConfig::from_lookup_over(embedded, get) {
            Ok(config) => settings.sandbox = config,
            Err(why) => problems.push(why),
        }

        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(SettingsError(problems))
        }
    }
}

/// `*`, or origins separated by commas, each `scheme://host[:port]` as a browser sends it
/// in `Origin` (no path, not even a trailing `/`).
fn parse_origins(value: &str) -> Result<CorsOrigins, String> {
    if value == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for raw in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let origin = parse_origin(raw).map_err(|why| {
            format!("must be * or origins like https://tools.example.com:8443, separated by commas; {raw:?} {why}")
        })?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    if origins.is_empty() {
        return Err(format!("names no origin, got {value:?}"));
    }
    Ok(CorsOrigins::List(origins))
}

fn parse_origin(raw: &str) -> Result<String, &'static str> {
    if raw == "*" {
        return Err("is a * among origins: use * alone");
    }
    let url = Url::parse(raw).map_err(|_| "is not scheme://host[:port]")?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("is not an http:// or https:// origin with a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("has a user name or password");
    }
    if url.path() != "/" || raw.ends_with('/') || url.query().is_some() || url.fragment().is_some()
    {
        return Err("has a path, query or fragment; an origin is only scheme://host[:port]");
    }
    Ok(url.origin().ascii_serialization())
}

impl Settings {
    /// Whether this combination may serve: checked before listening, not at parse time,
    /// so `healthcheck`, `openapi` and `keys` work in any environment.
    pub fn check_access(&self) -> Result<(), SettingsError> {
        let problem = if !self.is_service_mode() {
            self.api_keys_file.as_ref().map(|_| {
                "API_KEYS_FILE is set in pass-through mode, where Qpien checks each caller's own access token and caller keys have no place: unset API_KEYS_FILE, or set QPIEN_CLIENT_ID and QPIEN_CLIENT_SECRET for service mode".to_owned()
            })
        } else if self.api_keys_file.is_none() && !self.allow_anonymous && !self.host.is_loopback()
        {
            Some(format!(
                "HOST={} is reachable from other machines, and without API_KEYS_FILE anyone who reaches the port could read and change every conversation with this service's Qpien key: set API_KEYS_FILE to a caller keys file (create keys with `qpien-rest keys add --file F --id NAME --scopes read,write`), or set ALLOW_ANONYMOUS=true if something in front of the service (a gateway, a private network) decides who may call it",
                self.host
            ))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(SettingsError(vec![problem])),
            None => Ok(()),
        }
    }
}

/// `ADMIN_PORT` on `ADMIN_HOST`, else on `HOST` (already read into `settings`).
fn admin_address(
    get: &impl Fn(&str) -> Option<String>,
    settings: &Settings,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let host = match get("ADMIN_HOST").map(|v| (v.parse::<IpAddr>(), v)) {
        None => settings.host,
        Some((Ok(ip), _)) => ip,
        Some((Err(_), v)) => {
            problems.push(format!(
                "ADMIN_HOST must be an IP address such as 127.0.0.1 or 0.0.0.0, got {v:?}"
            ));
            return None;
        }
    };
    let Some(v) = get("ADMIN_PORT") else {
        if get("ADMIN_HOST").is_some() {
            problems.push("ADMIN_HOST is set without ADMIN_PORT: set ADMIN_PORT too, or unset ADMIN_HOST to keep the probes and metrics on the public port".into());
        }
        return None;
    };
    match v.parse::<u16>() {
        Ok(port) if port != 0 && port == settings.port => {
            problems.push(format!(
                "ADMIN_PORT must differ from PORT ({port}): the admin routes are served apart from the public ones"
            ));
            None
        }
        Ok(port) => Some(SocketAddr::new(host, port)),
        Err(_) => {
            problems.push(format!(
                "ADMIN_PORT must be a number from 0 to 65535, got {v:?}"
            ));
            None
        }
    }
}

/// `REDIS_URL` and the settings that only mean something with it.
fn redis_settings(
    get: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) -> Option<RedisSettings> {
    let url = get("REDIS_URL")?;
    match Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") && parsed.host().is_some() => {}
        // The value may hold a password: never echo it.
        _ => problems.push(
            "REDIS_URL must be redis://[:password@]host[:port][/db] or rediss://… for TLS".into(),
        ),
    }
    let mut redis = RedisSettings {
        url: Secret::new(url),
        key_prefix: get("REDIS_KEY_PREFIX").unwrap_or_else(|| "qpien-rest:".into()),
        timeout: Duration::from_millis(250),
        hash_secret: get("REDIS_HASH_SECRET").map(Secret::new),
    };
    if redis.key_prefix.len() > 64 || redis.key_prefix.chars().any(char::is_whitespace) {
        problems.push("REDIS_KEY_PREFIX must be at most 64 characters without white space".into());
    }
    match get("REDIS_TIMEOUT_MS").map(|v| v.parse::<u64>()) {
        Some(Ok(ms)) if (1..=10_000).contains(&ms) => redis.timeout = Duration::from_millis(ms),
        Some(_) => problems.push("REDIS_TIMEOUT_MS must be a whole number from 1 to 10000".into()),
        None => {}
    }
    if redis
        .hash_secret
        .as_ref()
        .is_some_and(|s| s.expose().len() < 16)
    {
        problems.push("REDIS_HASH_SECRET must be at least 16 characters".into());
    }
    Some(redis)
}

fn parse_http_url(value: &str) -> Result<Url, &'static str> {
    let url = Url::parse(value).map_err(|_| "must be an absolute URL")?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err("must be an http:// or https:// URL with a host"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn the_admin_listener_is_on_host_unless_admin_host_says_otherwise() {
        let admin = |pairs: &[(&str, &str)]| settings(pairs).map(|s| s.admin);

        assert_eq!(admin(&[]).unwrap(), None);
        assert_eq!(
            admin(&[("HOST", "0.0.0.0"), ("ADMIN_PORT", "9090")]).unwrap(),
            Some("0.0.0.0:9090".parse().unwrap())
        );
        assert_eq!(
            admin(&[("ADMIN_HOST", "127.0.0.1"), ("ADMIN_PORT", "9090")]).unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
        for refused in [
            &[("ADMIN_PORT", "8080")][..],
            &[("ADMIN_PORT", "x")],
            &[("ADMIN_HOST", "127.0.0.1")],
            &[("ADMIN_HOST", "admin"), ("ADMIN_PORT", "9090")],
        ] {
            assert!(admin(refused).unwrap_err().to_string().contains("ADMIN_"));
        }
    }

    #[test]
    fn no_environment_gives_the_documented_defaults() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.port, 8080);
        assert_eq!(s.host.to_string(), "127.0.0.1");
        assert!(s.upstream.api_url.is_none());
        assert!(s.upstream.credentials.is_none());
        assert_eq!(s.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.upstream.request_timeout, Duration::from_secs(10));
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.event_log.retention, Duration::from_secs(604_800));
    }

    #[test]
    fn the_event_log_is_kept_where_and_as_long_as_told() {
        let s = settings(&[
            ("DATA_DIR", "/var/lib/qpien-rest"),
            ("EVENT_LOG_RETENTION_SECS", "3600"),
        ])
        .unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/qpien-rest"));
        assert_eq!(s.event_log.retention, Duration::from_secs(3_600));
        let err = settings(&[("EVENT_LOG_RETENTION_SECS", "0")]).unwrap_err();
        assert!(err.to_string().contains("EVENT_LOG_RETENTION_SECS"));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let err = settings(&[
            ("PORT", "eighty"),
            ("QPIEN_API_URL", "api.qpien.com"),
            ("QPIEN_CLIENT_ID", "abc"),
            ("QPIEN_TIMEOUT_MS", "0"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        let text = err.to_string();
        for key in [
            "PORT",
            "QPIEN_API_URL",
            "QPIEN_CLIENT_SECRET",
            "QPIEN_TIMEOUT_MS",
            "LOG_FORMAT",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
    }

    #[test]
    fn cors_origins_are_read_as_browsers_send_them() {
        let s = settings(&[(
            "CORS_ALLOWED_ORIGINS",
            "https://Retool.example.com, http://127.0.0.1:3000,https://retool.example.com:443",
        )])
        .unwrap();
        assert_eq!(
            s.cors,
            CorsOrigins::List(vec![
                "https://retool.example.com".into(),
                "http://127.0.0.1:3000".into()
            ])
        );
        assert_eq!(settings(&[]).unwrap().cors, CorsOrigins::Off);
    }

    #[test]
    fn an_origin_with_a_path_or_another_scheme_is_refused() {
        for bad in [
            "https://tools.example.com/",
            "https://tools.example.com/app",
            "ftp://tools.example.com",
            "tools.example.com",
            "https://a.example.com,*",
            " , ",
        ] {
            let err = settings(&[("CORS_ALLOWED_ORIGINS", bad)]).unwrap_err();
            assert!(
                err.to_string().contains("CORS_ALLOWED_ORIGINS"),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn any_origin_is_allowed_in_pass_through_mode_only() {
        let upstream = ("QPIEN_API_URL", "https://api.qpien.com/api/v1");
        let pass_through = settings(&[upstream, ("CORS_ALLOWED_ORIGINS", "*")]).unwrap();
        assert_eq!(pass_through.cors, CorsOrigins::Any);

        let service = settings(&[
            upstream,
            ("QPIEN_CLIENT_ID", "id-1"),
            ("QPIEN_CLIENT_SECRET", "secret"),
            ("CORS_ALLOWED_ORIGINS", "*"),
        ]);
        let sandbox = settings(&[("CORS_ALLOWED_ORIGINS", "*")]);
        for refused in [service, sandbox] {
            let text = refused.unwrap_err().to_string();
            assert!(text.contains("refused in service mode"), "{text}");
        }
    }

    #[test]
    fn a_service_mode_instance_serves_anonymous_callers_only_on_loopback_or_when_allowed() {
        let check = |pairs: &[(&str, &str)]| settings(pairs).unwrap().check_access();

        assert!(check(&[]).is_ok(), "cargo run");
        assert!(check(&[("HOST", "::1")]).is_ok());
        let refused = check(&[("HOST", "0.0.0.0")]).unwrap_err().to_string();
        assert!(refused.contains("API_KEYS_FILE") && refused.contains("ALLOW_ANONYMOUS=true"));
        assert!(check(&[("HOST", "0.0.0.0"), ("ALLOW_ANONYMOUS", "true")]).is_ok());
        assert!(check(&[("HOST", "0.0.0.0"), ("API_KEYS_FILE", "/etc/keys")]).is_ok());
        assert!(settings(&[("ALLOW_ANONYMOUS", "yes")]).is_err());
    }

    #[test]
    fn caller_keys_in_pass_through_mode_are_refused_and_anonymous_pass_through_is_fine() {
        let pass_through = [
            ("QPIEN_API_URL", "https://api.qpien.com/api/v1"),
            ("HOST", "0.0.0.0"),
        ];
        let mut with_keys = pass_through.to_vec();
        with_keys.push(("API_KEYS_FILE", "/etc/keys"));

        assert!(settings(&pass_through).unwrap().check_access().is_ok());
        let refused = settings(&with_keys).unwrap().check_access().unwrap_err();
        assert!(refused.to_string().contains("pass-through mode"));
    }

    #[test]
    fn redis_settings_are_checked_and_a_password_never_echoed() {
        let shared = settings(&[
            ("REDIS_URL", "rediss://:pw@redis.internal:6380/2"),
            ("REDIS_KEY_PREFIX", "facade-a:"),
            ("REDIS_TIMEOUT_MS", "100"),
            ("QPIEN_REPLICAS", "3"),
        ])
        .unwrap();
        let redis = shared.redis.unwrap();
        assert_eq!(
            (redis.key_prefix.as_str(), redis.timeout),
            ("facade-a:", Duration::from_millis(100))
        );
        assert_eq!(shared.upstream.replicas, 3);

        let err = settings(&[
            ("REDIS_URL", "http://:hunter2@redis:6379"),
            ("REDIS_TIMEOUT_MS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("REDIS_URL") && err.contains("REDIS_TIMEOUT_MS"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");

        let pass_through = [
            ("QPIEN_API_URL", "https://api.qpien.com/api/v1"),
            ("REDIS_URL", "redis://r:6379"),
        ];
        let err = settings(&pass_through).unwrap_err().to_string();
        assert!(err.contains("REDIS_HASH_SECRET"), "{err}");
    }

    #[test]
    fn the_caps_on_unproven_bearers_are_read_and_checked() {
        let bearers = settings(&[
            ("REJECTED_CREDENTIALS_TTL_SECS", "30"),
            ("UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT", "10"),
            ("UNPROVEN_CREDENTIALS_PER_MINUTE", "100"),
        ])
        .unwrap()
        .upstream
        .bearers;
        assert_eq!(bearers.rejected_ttl, Duration::from_secs(30));
        assert_eq!(
            (bearers.unproven_per_client, bearers.unproven_total),
            (10, 100)
        );

        let err = settings(&[
            ("REJECTED_CREDENTIALS_TTL_SECS", "0"),
            ("UNPROVEN_CREDENTIALS_PER_MINUTE", "many"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("REJECTED_CREDENTIALS_TTL_SECS")
                && err.contains("UNPROVEN_CREDENTIALS_PER_MINUTE"),
            "{err}"
        );
    }

    #[test]
    fn the_client_secret_never_shows_in_debug_output() {
        let s = settings(&[
            ("QPIEN_CLIENT_ID", "id-1"),
            ("QPIEN_CLIENT_SECRET", "s3cr3t-value"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t-value"));
    }
}

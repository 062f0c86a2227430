//! The sandbox's settings: [`SandboxConfig`] (what the facade embeds and the standalone
//! binary reads, `SANDBOX_*` variables) and [`WebhookRegistration`] (the standalone
//! binary's own registration of a webhook endpoint at start-up).

use std::time::Duration;

use crate::events::WebhookEvent;

/// Tunables of a sandbox; the defaults are Qpien's documented values, with no activity.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    /// Requests per client per fixed 60-second window.
    pub rate_limit_per_minute: u32,
    /// Time every GraphQL operation takes before it answers, as a remote API's would;
    /// lets tests and benchmarks see requests that overlap.
    pub latency: Duration,
    /// Steps of the activity generator a minute (customers writing, agents writing and
    /// joining); 0, the default, turns it off.
    pub activity_per_minute: u32,
    /// Seed of the generator's choices: the same seed gives the same activity.
    pub activity_seed: u64,
    /// Steps after which the generator stops; None runs it as long as the sandbox.
    pub activity_limit: Option<u64>,
    /// A webhook endpoint that has not answered within this has failed (Qpien: 10 s).
    pub webhook_timeout: Duration,
    /// The wait before the first retry of a delivery; it doubles with each failure.
    pub webhook_retry_base: Duration,
    /// The longest wait between two attempts of a delivery.
    pub webhook_retry_cap: Duration,
    /// Attempts before a delivery is dropped; None retries as long as the sandbox runs.
    pub webhook_max_attempts: Option<u32>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(3600),
            rate_limit_per_minute: 100,
            latency: Duration::ZERO,
            activity_per_minute: 0,
            activity_seed: 1,
            activity_limit: None,
            webhook_timeout: Duration::from_secs(10),
            webhook_retry_base: Duration::from_secs(1),
            webhook_retry_cap: Duration::from_secs(60),
            webhook_max_attempts: None,
        }
    }
}

fn whole<T: std::str::FromStr + PartialOrd>(
    name: &str,
    raw: &str,
    range: std::ops::RangeInclusive<T>,
    shown: &str,
) -> Result<T, String> {
    match raw.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} must be a whole number {shown}, got {raw:?}"
        )),
    }
}

impl SandboxConfig {
    /// Reads SANDBOX_TOKEN_TTL_SECS and SANDBOX_RATE_LIMIT_PER_MINUTE (integers >= 1),
    /// SANDBOX_LATENCY_MS (0 to 60000), SANDBOX_ACTIVITY_PER_MINUTE (0 to 60000),
    /// SANDBOX_ACTIVITY_SEED and SANDBOX_WEBHOOK_MAX_ATTEMPTS (>= 1), all optional;
    /// Err(message for an operator) on a bad value — never panics.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// [`Self::from_env`] over any source of settings, so it can be tested without
    /// touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        Self::from_lookup_over(Self::default(), lookup)
    }

    /// [`Self::from_lookup`] with other defaults for what is not set (the embedded
    /// sandbox turns its activity on unless told otherwise).
    pub fn from_lookup_over(
        defaults: Self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut config = defaults;
        let at_least_one = "of at least 1";
        if let Some(raw) = lookup("SANDBOX_TOKEN_TTL_SECS") {
            let secs = whole("SANDBOX_TOKEN_TTL_SECS", &raw, 1..=u64::MAX, at_least_one)?;
            config.token_ttl = Duration::from_secs(secs);
        }
        if let Some(raw) = lookup("SANDBOX_RATE_LIMIT_PER_MINUTE") {
            config.rate_limit_per_minute = whole(
                "SANDBOX_RATE_LIMIT_PER_MINUTE",
                &raw,
                1..=u32::MAX,
                at_least_one,
            )?;
        }
        if let Some(raw) = lookup("SANDBOX_LATENCY_MS") {
            let ms = whole("SANDBOX_LATENCY_MS", &raw, 0..=60_000, "from 0 to 60000")?;
            config.latency = Duration::from_millis(ms);
        }
        if let Some(raw) = lookup("SANDBOX_ACTIVITY_PER_MINUTE") {
            config.activity_per_minute = whole(
                "SANDBOX_ACTIVITY_PER_MINUTE",
                &raw,
                0..=60_000,
                "from 0 to 60000",
            )?;
        }
        if let Some(raw) = lookup("SANDBOX_ACTIVITY_SEED") {
            config.activity_seed =
                whole("SANDBOX_ACTIVITY_SEED", &raw, 0..=u64::MAX, "(0 or more)")?;
        }
        if let Some(raw) = lookup("SANDBOX_WEBHOOK_MAX_ATTEMPTS") {
            config.webhook_max_attempts = Some(whole(
                "SANDBOX_WEBHOOK_MAX_ATTEMPTS",
                &raw,
                1..=u32::MAX,
                at_least_one,
            )?);
        }
        Ok(config)
    }
}

/// A webhook endpoint the standalone binary registers at start-up, as an operator
/// would in Qpien's app: SANDBOX_WEBHOOK_URL, SANDBOX_WEBHOOK_SECRET (required with the
/// URL: the receiver must know it beforehand) and SANDBOX_WEBHOOK_EVENTS
/// (comma-separated; default every type the sandbox emits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRegistration {
    pub url: String,
    pub secret: String,
    pub events: Vec<WebhookEvent>,
}

impl WebhookRegistration {
    /// None when SANDBOX_WEBHOOK_URL is unset; Err(message for an operator) on a bad value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(url) = lookup("SANDBOX_WEBHOOK_URL").map(|u| u.trim().to_owned()) else {
            if lookup("SANDBOX_WEBHOOK_SECRET").is_some() {
                return Err("SANDBOX_WEBHOOK_SECRET is set but SANDBOX_WEBHOOK_URL is not".into());
            }
            return Ok(None);
        };
        let secret = lookup("SANDBOX_WEBHOOK_SECRET")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or("SANDBOX_WEBHOOK_URL is set: SANDBOX_WEBHOOK_SECRET must be set too")?;
        let events = match lookup("SANDBOX_WEBHOOK_EVENTS") {
            None => WebhookEvent::ALL.to_vec(),
            Some(list) => {
                let mut events = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    events.push(WebhookEvent::parse(name).ok_or_else(|| {
                        let known: Vec<_> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
                        format!(
                            "SANDBOX_WEBHOOK_EVENTS: unknown event type {name:?} (known: {})",
                            known.join(", ")
                        )
                    })?);
                }
                if events.is_empty() {
                    return Err("SANDBOX_WEBHOOK_EVENTS names no event type".into());
                }
                events
            }
        };
        Ok(Some(Self {
            url,
            secret,
            events,
        }))
    }
}

//! The `SUBSCRIPTION_*` settings: how the facade calls its subscribers (`events::delivery`)
//! and which callback URLs it accepts (`events::callback_url`).

use std::time::Duration;

use super::whole_number;

/// Webhook subscriptions: delivery, retries and the callback URL policy.
#[derive(Clone, Copy, Debug)]
pub struct SubscriptionSettings {
    /// `SUBSCRIPTIONS_PER_KEY`: how many subscriptions one caller key (or, without keys,
    /// all anonymous callers together) may hold. Default 50.
    pub per_key: u32,
    /// `SUBSCRIPTION_TIMEOUT_MS`: the most one delivery may take, connecting included,
    /// before it counts as failed and is retried. Default 10000.
    pub timeout: Duration,
    /// `SUBSCRIPTION_RETRY_BASE_MS`: the wait after a first failed delivery; each further
    /// failure doubles it (with jitter), up to `retry_max`. Default 5000.
    pub retry_base: Duration,
    /// `SUBSCRIPTION_RETRY_MAX_SECS`: the longest wait between two attempts (a receiver's
    /// `Retry-After` may ask for longer, within the horizon). Default 3600.
    pub retry_max: Duration,
    /// `SUBSCRIPTION_RETRY_HORIZON_SECS`: how long a subscription may fail before it is
    /// disabled (its events are kept for it until the log's retention). Default 86400.
    pub horizon: Duration,
    /// `SUBSCRIPTION_SECRET_GRACE_SECS`: after a secret rotation, how long deliveries
    /// carry the previous secret's signature beside the new one. Default 86400.
    pub secret_grace: Duration,
    /// `SUBSCRIPTION_LEASE_MS` (with `REDIS_URL`): how long a replica holds the right
    /// to deliver a subscription without renewing it (it renews every third of it). A
    /// replica that dies leaves its subscriptions to the others this long after. At
    /// least three times the timeout keeps a slow delivery within one lease. Default 30000.
    pub lease: Duration,
    /// `SUBSCRIPTION_ALLOW_HTTP`: accept `http://` callback URLs. Default `false`
    /// (`true` with the embedded sandbox of `cargo run`, so the demo works).
    pub allow_http: Option<bool>,
    /// `SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS`: accept callbacks to loopback, private,
    /// link-local, shared (CGNAT) and unique-local addresses. Default `false` (`true`
    /// with the embedded sandbox). Cloud metadata (`169.254.169.254`, `fd00:ec2::254`),
    /// multicast, broadcast and unspecified addresses are refused whatever it says.
    pub allow_private_networks: Option<bool>,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self {
            per_key: 50,
            timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3_600),
            horizon: Duration::from_secs(86_400),
            secret_grace: Duration::from_secs(86_400),
            lease: Duration::from_secs(30),
            allow_http: None,
            allow_private_networks: None,
        }
    }
}

impl SubscriptionSettings {
    pub(super) fn parse(get: &impl Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Self {
        let mut settings = Self::default();
        let mut number = |key: &str, range: std::ops::RangeInclusive<u64>| {
            whole_number(get, problems, key, range)
        };
        if let Some(n) = number("SUBSCRIPTIONS_PER_KEY", 1..=100_000) {
            settings.per_key = n as u32;
        }
        if let Some(ms) = number("SUBSCRIPTION_TIMEOUT_MS", 100..=120_000) {
            settings.timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = number("SUBSCRIPTION_RETRY_BASE_MS", 1..=3_600_000) {
            settings.retry_base = Duration::from_millis(ms);
        }
        if let Some(secs) = number("SUBSCRIPTION_RETRY_MAX_SECS", 1..=86_400) {
            settings.retry_max = Duration::from_secs(secs);
        }
        if let Some(secs) = number("SUBSCRIPTION_RETRY_HORIZON_SECS", 1..=2_592_000) {
            settings.horizon = Duration::from_secs(secs);
        }
        if let Some(secs) = number("SUBSCRIPTION_SECRET_GRACE_SECS", 0..=2_592_000) {
            settings.secret_grace = Duration::from_secs(secs);
        }
        if let Some(ms) = number("SUBSCRIPTION_LEASE_MS", 300..=600_000) {
            settings.lease = Duration::from_millis(ms);
        }
        for (key, field) in [
            ("SUBSCRIPTION_ALLOW_HTTP", &mut settings.allow_http),
            (
                "SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS",
                &mut settings.allow_private_networks,
            ),
        ] {
            if let Some(v) = get(key) {
                match v.to_ascii_lowercase().as_str() {
                    "true" => *field = Some(true),
                    "false" => *field = Some(false),
                    _ => problems.push(format!("{key} must be true or false, got {v:?}")),
                }
            }
        }
        settings
    }
}

//! Webhook subscriptions (issue 19): who wants which events delivered where, and how
//! far delivery has got. A subscription is two records kept apart so that neither
//! writer overwrites the other: its `Config` (written by the routes: created, secret
//! rotated) and its `DeliveryState` (written by the one delivery worker that holds it:
//! the durable cursor `delivered_through`, retries, the last attempts, the status).
//! The store is chosen at start-up like the event log's: an embedded SQLite file
//! (`DATA_DIR/subscriptions.sqlite3`) or Redis with `REDIS_URL`. Signing secrets must
//! be recoverable to sign, so they are stored encrypted (AES-256-GCM under a key
//! derived by HKDF from the service's secret, the subscription id as associated data)
//! and never logged.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::log::{Cursor, EventKind, Filter};
use crate::settings::Secret;
use crate::state::redis::RedisState;
use crate::state::sealing::Sealer;
use crate::state::subscriptions_redis::RedisSubscriptions;
use crate::state::subscriptions_sqlite::SqliteSubscriptions;

/// The prefix of a Standard Webhooks signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The last delivery attempts a subscription remembers.
pub const ATTEMPTS_KEPT: usize = 10;
/// The owner of subscriptions created without a caller key.
pub const ANONYMOUS: &str = "anonymous";

/// What the routes write: where to deliver what, and with which secrets.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub id: String,
    pub url: String,
    pub types: Vec<EventKind>,
    pub conversation_id: Option<String>,
    pub description: String,
    /// The caller key id that created it, or [`ANONYMOUS`].
    pub owner: String,
    pub created_at: DateTime<Utc>,
    /// The sealed [`Secrets`], base64.
    pub secrets: String,
}

impl Config {
    pub fn filter(&self) -> Filter {
        Filter {
            types: self.types.clone(),
            conversation_id: self.conversation_id.clone(),
        }
    }
}

/// The signing secrets: the current one and, for a grace period after a rotation, the
/// previous one (deliveries then carry both signatures).
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secrets {
    pub current: String,
    pub previous: Option<String>,
    pub previous_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets([redacted])")
    }
}

impl Secrets {
    /// The secrets to sign with at `now`: the current one, and the previous one while
    /// its grace period lasts.
    pub fn signing(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut keys = vec![self.current.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous, self.previous_until)
            && now < until
        {
            keys.push(previous);
        }
        keys
    }
}

/// A new secret, `whsec_` and 32 random bytes in base64, as Standard Webhooks has them.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// Whether deliveries go out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Status {
    Active,
    /// Failed for the whole retry horizon (or disabled for another `reason`); its
    /// cursor stays where it was, so re-enabling resumes there.
    Disabled {
        since: DateTime<Utc>,
        reason: String,
    },
}

/// One delivery attempt, as `GET /subscriptions/{id}` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When it started.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// The event it delivered (`webhook-id`).
    #[schema(example = "00000000000000000042")]
    pub event_id: String,
    /// The receiver's HTTP status; `null` when there was none (timeout, refused).
    #[schema(example = 200)]
    pub status: Option<u16>,
    /// Why it failed without a status (e.g. `timeout`, `connection refused`).
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// What the delivery worker writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryState {
    pub status: Status,
    /// The last event delivered (or passed over by the filter): delivery resumes after it.
    pub delivered_through: Cursor,
    /// No attempt before this (a backoff, or the receiver's `Retry-After`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Since when every attempt has failed; `None` while deliveries succeed.
    pub failing_since: Option<DateTime<Utc>>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// The last attempts, newest last.
    pub attempts: VecDeque<Attempt>,
}

impl DeliveryState {
    pub fn starting_after(cursor: Cursor) -> Self {
        Self {
            status: Status::Active,
            delivered_through: cursor,
            next_attempt_at: None,
            failing_since: None,
            failures: 0,
            attempts: VecDeque::new(),
        }
    }

    pub fn record(&mut self, attempt: Attempt) {
        if self.attempts.len() >= ATTEMPTS_KEPT {
            self.attempts.pop_front();
        }
        self.attempts.push_back(attempt);
    }
}

/// A subscription as stored.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub config: Config,
    pub state: DeliveryState,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the subscription store is unavailable: {0}")]
    Unavailable(String),
}

/// The subscriptions, over the store chosen at start-up, with the key that seals their
/// secrets.
pub struct Subscriptions {
    store: Store,
    sealer: Sealer,
}

enum Store {
    Sqlite(SqliteSubscriptions),
    Redis(RedisSubscriptions),
}

macro_rules! each {
    ($self:ident, $store:ident => $call:expr) => {
        match &$self.store {
            Store::Sqlite($store) => $call,
            Store::Redis($store) => $call,
        }
    };
}

impl Subscriptions {
    /// In Redis when `redis` is given, else in `data_dir/subscriptions.sqlite3`;
    /// `sealing`: the service's secret that the secrets' key is derived from.
    pub fn open(
        data_dir: &std::path::Path,
        redis: Option<Arc<RedisState>>,
        sealing: &Secret,
    ) -> Result<Self, StoreError> {
        let store = match redis {
            Some(redis) => Store::Redis(RedisSubscriptions::new(redis)),
            None => Store::Sqlite(SqliteSubscriptions::open(
                &data_dir.join("subscriptions.sqlite3"),
            )?),
        };
        Ok(Self {
            store,
            sealer: Sealer::derive(sealing, b"qpien-rest subscription secrets v1"),
        })
    }

    /// The Redis store, whose leases spread deliveries over replicas.
    pub fn redis(&self) -> Option<&RedisSubscriptions> {
        match &self.store {
            Store::Redis(store) => Some(store),
            Store::Sqlite(_) => None,
        }
    }

    pub async fn create(&self, subscription: &Subscription) -> Result<(), StoreError> {
        each!(self, s => s.create(subscription).await)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        each!(self, s => s.get(id).await)
    }

    /// Every subscription, of every owner.
    pub async fn all(&self) -> Result<Vec<Subscription>, StoreError> {
        each!(self, s => s.all().await)
    }

    /// Replaces the config of `id`, if it still exists.
    pub async fn put_config(&self, config: &Config) -> Result<bool, StoreError> {
        each!(self, s => s.put_config(config).await)
    }

    /// Replaces the delivery state of `id`, if it still exists (a deleted subscription
    /// is never brought back by a delivery that was under way).
    pub async fn put_state(&self, id: &str, state: &DeliveryState) -> Result<bool, StoreError> {
        each!(self, s => s.put_state(id, state).await)
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        each!(self, s => s.delete(id).await)
    }

    /// `secrets` sealed for subscription `id`: nonce ‖ AES-256-GCM(JSON), base64.
    pub fn seal(&self, id: &str, secrets: &Secrets) -> String {
        let plain = serde_json::to_vec(secrets).expect("secrets serialise");
        STANDARD.encode(self.sealer.seal(&plain, id.as_bytes()))
    }

    /// The secrets of `config`; `None` when they cannot be opened with this service's
    /// secret (it changed since they were sealed) or were tampered with.
    pub fn open_secrets(&self, config: &Config) -> Option<Secrets> {
        let stored = STANDARD.decode(&config.secrets).ok()?;
        let plain = self.sealer.open(&stored, config.id.as_bytes()).ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: &str, subscriptions: &Subscriptions, secrets: &Secrets) -> Config {
        Config {
            id: id.into(),
            url: "https://hooks.example.com/x".into(),
            types: vec![EventKind::Updated],
            conversation_id: None,
            description: String::new(),
            owner: ANONYMOUS.into(),
            created_at: Utc::now(),
            secrets: subscriptions.seal(id, secrets),
        }
    }

    #[tokio::test]
    async fn secrets_are_sealed_per_subscription_and_state_never_revives_a_deleted_one() {
        let dir = tempfile::tempdir().unwrap();
        let subscriptions =
            Subscriptions::open(dir.path(), None, &Secret::new("service secret")).unwrap();
        let secrets = Secrets {
            current: new_secret(),
            previous: None,
            previous_until: None,
        };
        let config = config("s1", &subscriptions, &secrets);
        assert!(
            !config
                .secrets
                .contains(&secrets.current[SECRET_PREFIX.len()..])
        );
        let subscription = Subscription {
            config: config.clone(),
            state: DeliveryState::starting_after(Cursor::new("0")),
        };
        subscriptions.create(&subscription).await.unwrap();

        let back = subscriptions.get("s1").await.unwrap().unwrap();
        let opened = subscriptions.open_secrets(&back.config).unwrap();
        let mut moved = config.clone();
        moved.id = "s2".into();
        let other_key =
            Subscriptions::open(dir.path(), None, &Secret::new("another secret")).unwrap();

        assert_eq!(opened.current, secrets.current);
        assert!(subscriptions.open_secrets(&moved).is_none());
        assert!(other_key.open_secrets(&back.config).is_none());
        assert!(subscriptions.delete("s1").await.unwrap());
        let revived = subscriptions
            .put_state("s1", &subscription.state)
            .await
            .unwrap();
        assert!(!revived);
        assert!(subscriptions.get("s1").await.unwrap().is_none());
    }

    #[test]
    fn the_previous_secret_signs_only_during_its_grace() {
        let now = Utc::now();
        let secrets = Secrets {
            current: "whsec_new".into(),
            previous: Some("whsec_old".into()),
            previous_until: Some(now + chrono::Duration::seconds(5)),
        };
        assert_eq!(secrets.signing(now), ["whsec_new", "whsec_old"]);
        assert_eq!(
            secrets.signing(now + chrono::Duration::seconds(6)),
            ["whsec_new"]
        );
    }
}

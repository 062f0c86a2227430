//! Changes the facade learns of: Qpien's webhook deliveries, verified against their
//! signature, and the facade's own updates. A delivery becomes an exact invalidation of
//! the read cache (`reads::invalidate`), applied once however often Qpien delivers it,
//! and (in service mode) one event in the durable `log` that the change feed, the live
//! stream and the triggers read. Nothing here knows HTTP; `routes::webhooks` is the door.

pub mod callback_url;
pub mod delivery;
pub mod log;
pub mod qpien;
pub mod subscriptions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::Utc;

use self::log::{EventKind, EventLog, LogError, NewEvent};
use self::qpien::Delivery;
use crate::domain::ConversationId;
use crate::metrics::Metrics;
use crate::reads::CachedConversations;
use crate::reads::invalidate::Changed;
use crate::settings::WebhookSettings;
use crate::state::redis::RedisState;

/// What became of a delivery Qpien should not send again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Its change was recorded.
    Applied,
    /// Its change was recorded, though its type is not one the facade knows.
    UnknownType,
    /// It had been applied already (a retry by Qpien).
    Duplicate,
}

impl Accepted {
    pub fn as_str(self) -> &'static str {
        match self {
            Accepted::Applied => "applied",
            Accepted::UnknownType => "unknown-type",
            Accepted::Duplicate => "duplicate",
        }
    }
}

/// Why a delivery was refused; nothing of it was applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No signature, or not one of the body under any current secret.
    BadSignature,
    /// Signed, but not a JSON object.
    Malformed(String),
    /// Redis did not take the change, so other replicas would not see it, or the
    /// event log did not: Qpien should deliver it again.
    NotRecorded,
}

/// The receiver of Qpien's webhook deliveries.
pub struct QpienWebhooks {
    secrets: Vec<Vec<u8>>,
    max_body_bytes: usize,
    remember: Duration,
    /// Deliveries applied, by id, without Redis (or while it is away).
    seen: moka::sync::Cache<String, ()>,
    shared: Option<Arc<RedisState>>,
    /// Where each change becomes an event (service mode).
    recorder: Option<Arc<Recorder>>,
    last_verified_ms: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Delivery ids remembered in this process at most; older ones go first.
const SEEN_CAPACITY: u64 = 100_000;

impl QpienWebhooks {
    /// `None` when no secret is set: the route then answers 404.
    pub fn new(
        settings: &WebhookSettings,
        shared: Option<Arc<RedisState>>,
        recorder: Option<Arc<Recorder>>,
        metrics: Arc<Metrics>,
    ) -> Option<Self> {
        if settings.secrets.is_empty() {
            return None;
        }
        Some(Self {
            secrets: settings
                .secrets
                .iter()
                .map(|s| s.expose().as_bytes().to_vec())
                .collect(),
            max_body_bytes: settings.max_body_bytes,
            remember: settings.remember,
            seen: moka::sync::Cache::builder()
                .max_capacity(SEEN_CAPACITY)
                .time_to_live(settings.remember)
                .build(),
            shared,
            recorder,
            last_verified_ms: AtomicU64::new(0),
            metrics,
        })
    }

    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// A delivery refused for its size, before it was read.
    pub fn too_large(&self) {
        self.metrics.webhook("none", "too-large");
    }

    /// When the last delivery with a valid signature arrived.
    pub fn last_verified(&self) -> Option<SystemTime> {
        match self.last_verified_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// Checks `body` against `signature` (the header's value) before reading it, then
    /// records the change it reports, once per delivery id.
    pub async fn accept(
        &self,
        body: &[u8],
        signature: Option<&[u8]>,
        conversations: &CachedConversations,
    ) -> Result<Accepted, Refused> {
        if !signature.is_some_and(|s| qpien::verify(&self.secrets, body, s)) {
            self.metrics.webhook("none", "bad-signature");
            return Err(Refused::BadSignature);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_verified_ms
            .fetch_max(now.as_millis() as u64, Ordering::AcqRel);
        self.metrics.webhook_last_verified.set(now.as_secs() as i64);
        let delivery = Delivery::parse(body).map_err(|why| {
            self.metrics.webhook("none", "malformed");
            Refused::Malformed(why)
        })?;
        let kind = delivery.kind_label();
        if !self.first_arrival(&delivery.id).await? {
            self.metrics.webhook(kind, "duplicate");
            return Ok(Accepted::Duplicate);
        }
        let changed = match &delivery.conversation {
            Some(id) => Changed::Conversation(id.clone()),
            None => Changed::Everything,
        };
        if conversations.changed(&changed).await.is_err() {
            self.forget(&delivery.id).await;
            self.metrics.webhook(kind, "not-recorded");
            return Err(Refused::NotRecorded);
        }
        if let Some(recorder) = &self.recorder
            && let Err(error) = recorder.qpien_delivery(&delivery).await
        {
            tracing::warn!(%error, webhook.delivery = %delivery.id, "a Qpien webhook delivery could not be recorded in the event log; Qpien will deliver it again");
            self.metrics.event("qpien", "failed");
            self.forget(&delivery.id).await;
            self.metrics.webhook(kind, "not-recorded");
            return Err(Refused::NotRecorded);
        }
        let scope = match changed {
            Changed::Conversation(_) => "conversation",
            Changed::Everything => "everything",
        };
        self.metrics
            .invalidations
            .get_or_create(&crate::metrics::ScopeLabels { scope })
            .inc();
        let accepted = if delivery.is_known() {
            Accepted::Applied
        } else {
            tracing::info!(
                webhook.event = delivery.kind.as_deref().unwrap_or("(none)"),
                webhook.delivery = %delivery.id,
                "a Qpien webhook event of a type the facade does not know: applied as a change of {scope}"
            );
            Accepted::UnknownType
        };
        self.metrics.webhook(kind, accepted.as_str());
        Ok(accepted)
    }

    /// Whether delivery `id` arrives for the first time, here and, with Redis, on
    /// every replica.
    async fn first_arrival(&self, id: &str) -> Result<bool, Refused> {
        if let Some(redis) = &self.shared {
            return match redis.first_delivery(id, self.remember).await {
                Some(first) => Ok(first),
                None => {
                    self.metrics.webhook("none", "not-recorded");
                    Err(Refused::NotRecorded)
                }
            };
        }
        let mut first = false;
        self.seen.get_with(id.to_owned(), || first = true);
        Ok(first)
    }

    async fn forget(&self, id: &str) {
        match &self.shared {
            Some(redis) => redis.forget_delivery(id).await,
            None => self.seen.invalidate(id),
        }
    }
}

/// The event a verified delivery reports.
fn qpien_event(delivery: &Delivery) -> NewEvent {
    NewEvent {
        kind: EventKind::from_qpien(delivery.kind.as_deref()),
        qpien_type: delivery.kind.clone(),
        occurred_at: delivery.occurred_at.unwrap_or_else(Utc::now),
        conversation_id: delivery
            .conversation
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        data: delivery.data.clone(),
    }
}

/// How long the state an update left is remembered, to tell a report of it again.
const STATES_KEPT: Duration = Duration::from_secs(600);
/// Conversations whose last recorded state is remembered at most.
const STATES_CAPACITY: u64 = 100_000;

/// Where changes become events: the durable log, and a short memory of the state each
/// conversation's last `conversation.updated` event showed. Qpien reports every update,
/// those made through the facade too, and its report can arrive before or after the
/// facade records its own: whichever comes second shows the same state and is not
/// recorded again, so one update is one event.
pub struct Recorder {
    log: Arc<EventLog>,
    /// Conversation id → fingerprint of the state its last update event showed; with
    /// Redis, the same is kept there for every replica.
    states: moka::sync::Cache<String, u64>,
    shared: Option<Arc<RedisState>>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    pub fn new(log: Arc<EventLog>, shared: Option<Arc<RedisState>>, metrics: Arc<Metrics>) -> Self {
        Self {
            log,
            states: moka::sync::Cache::builder()
                .max_capacity(STATES_CAPACITY)
                .time_to_live(STATES_KEPT)
                .build(),
            shared,
            metrics,
        }
    }

    /// Records an update made through the facade: `representation` is the updated
    /// conversation's JSON, as the `PATCH` answers it. Qpien has the change whatever
    /// happens here, so a failure is logged and counted, not returned.
    pub async fn own_update(&self, id: &ConversationId, representation: &[u8]) {
        let conversation: serde_json::Value =
            serde_json::from_slice(representation).unwrap_or_default();
        let event = NewEvent {
            kind: EventKind::Updated,
            qpien_type: None,
            occurred_at: Utc::now(),
            conversation_id: Some(id.as_str().to_owned()),
            data: serde_json::json!({ "conversation": conversation }),
        };
        if let Err(error) = self.record("facade", event).await {
            tracing::warn!(%error, conversation.id = %id.as_str(), "an update made through the facade could not be recorded in the event log");
        }
    }

    /// Records what a verified delivery reports.
    async fn qpien_delivery(&self, delivery: &Delivery) -> Result<(), LogError> {
        self.record("qpien", qpien_event(delivery)).await
    }

    /// Appends `event`, unless it is an update showing the state its conversation's
    /// last update event showed. The state is claimed before the append, so of two
    /// reports of one update arriving together, one is recorded.
    async fn record(&self, source: &'static str, event: NewEvent) -> Result<(), LogError> {
        let state = match (&event.conversation_id, &event.data["conversation"]) {
            (Some(id), conversation)
                if event.kind == EventKind::Updated && conversation.is_object() =>
            {
                Some((id.clone(), fingerprint(conversation)))
            }
            _ => None,
        };
        if let Some((id, seen)) = &state
            && !self.claim(id, *seen).await
        {
            self.metrics.event(source, "same-state");
            return Ok(());
        }
        if let Err(error) = self.log.append(event).await {
            if let Some((id, _)) = &state {
                self.release(id).await;
            }
            self.metrics.event(source, "failed");
            return Err(error);
        }
        self.metrics.event(source, "recorded");
        Ok(())
    }

    /// Makes `seen` the last state of conversation `id`; `false` when it was already.
    async fn claim(&self, id: &str, seen: u64) -> bool {
        let mut new = true;
        self.states
            .entry(id.to_owned())
            .and_compute_with(|current| {
                if current.is_some_and(|c| c.into_value() == seen) {
                    new = false;
                    moka::ops::compute::Op::Nop
                } else {
                    moka::ops::compute::Op::Put(seen)
                }
            });
        match &self.shared {
            // Another replica may have recorded the other report: Redis decides.
            Some(redis) => match redis.swap_state(id, seen, STATES_KEPT).await {
                Some(previous) => previous != Some(seen),
                None => new,
            },
            None => new,
        }
    }

    /// Forgets the state claimed for `id`, whose event could not be recorded.
    async fn release(&self, id: &str) {
        self.states.invalidate(id);
        if let Some(redis) = &self.shared {
            redis.forget_state(id).await;
        }
    }
}

/// A digest of a conversation's REST representation, the same for the same state.
fn fingerprint(conversation: &serde_json::Value) -> u64 {
    let bytes = serde_json::to_vec(conversation).expect("a JSON value serialises");
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

//! Qpien's webhook feature, as the sandbox plays it: endpoints registered with a list of
//! event types and a secret shown once; every event is queued for each active endpoint
//! that asked for its type and delivered signed, in order, one at a time per endpoint,
//! retried until the endpoint answers `200 OK` (`delivery.rs`). `http.rs` serves the
//! registration as Qpien's app would offer it; [`crate::Sandbox::register_webhook`] is the
//! same for code.

mod delivery;
pub(crate) mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::events::{Event, EventIds, WebhookEvent};

pub(crate) use delivery::RetryPolicy;

/// Whether an endpoint is sent events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum WebhookStatus {
    Active,
    Disabled,
}

/// A registered endpoint, as listed (without its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookEndpoint {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "endpointUrl")]
    pub endpoint_url: String,
    pub events: Vec<String>,
    pub status: WebhookStatus,
}

/// What a registration answers: the endpoint and its signing secret, shown only here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RegisteredWebhook {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    pub secret: String,
}

/// Counters of deliveries, served in `/stats` as `webhookDeliveries`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStats {
    /// Events emitted, by type (whether or not an endpoint asked for them).
    pub events: BTreeMap<String, u64>,
    /// POSTs sent to endpoints, retries included.
    pub attempted: u64,
    /// POSTs answered `200 OK`.
    pub succeeded: u64,
    /// POSTs answered otherwise, or not answered in time.
    pub failed: u64,
    /// Deliveries queued or being retried (one per event and endpoint).
    pub pending: u64,
    /// Deliveries dropped after the configured number of attempts.
    pub abandoned: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    events: Mutex<BTreeMap<String, u64>>,
    attempted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError(pub String);

impl std::fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RegistrationError {}

struct Endpoint {
    listed: WebhookEndpoint,
    kinds: Vec<WebhookEvent>,
    queue: mpsc::UnboundedSender<Arc<Event>>,
    pending: Arc<AtomicU64>,
    worker: tokio::task::AbortHandle,
}

/// The endpoints of one sandbox and the events queued for them.
pub(crate) struct Webhooks {
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
    policy: RetryPolicy,
    ids: EventIds,
    endpoints: Mutex<Vec<Endpoint>>,
    counters: Arc<Counters>,
}

/// 16 random bytes as 32 lowercase hex digits, like the secrets Qpien's app shows.
fn new_secret() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex(&bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Webhooks {
    /// Deliveries run on `runtime` (the one the sandbox was started on), whichever thread
    /// registers an endpoint or emits an event.
    pub(crate) fn new(runtime: tokio::runtime::Handle, policy: RetryPolicy) -> Self {
        Self {
            runtime,
            client: delivery::client(),
            policy,
            ids: EventIds::new(),
            endpoints: Mutex::new(Vec::new()),
            counters: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an endpoint; `secret` None draws a new one.
    pub(crate) fn register(
        &self,
        endpoint_url: &str,
        kinds: &[WebhookEvent],
        status: WebhookStatus,
        secret: Option<String>,
    ) -> Result<RegisteredWebhook, RegistrationError> {
        let url = reqwest::Url::parse(endpoint_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                RegistrationError(format!(
                    "endpointUrl must be an absolute http or https URL, got {endpoint_url:?}"
                ))
            })?;
        if kinds.is_empty() {
            return Err(RegistrationError(
                "events must name at least one event type".into(),
            ));
        }
        let secret = match secret {
            Some(s) if s.is_empty() || s.chars().any(char::is_whitespace) => {
                return Err(RegistrationError(
                    "the secret must be non-empty and without spaces".into(),
                ));
            }
            Some(s) => s,
            None => new_secret(),
        };
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let listed = WebhookEndpoint {
            id: self.ids.next_object_id(),
            endpoint_url: endpoint_url.to_owned(),
            events: kinds.iter().map(|k| k.as_str().to_owned()).collect(),
            status,
        };
        let (queue, receiver) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicU64::new(0));
        let worker = self
            .runtime
            .spawn(delivery::deliver_in_order(
                receiver,
                delivery::Target {
                    url,
                    secret: secret.clone(),
                },
                self.client.clone(),
                self.policy.clone(),
                self.counters.clone(),
                pending.clone(),
            ))
            .abort_handle();
        tracing::info!(id = %listed.id, url = %listed.endpoint_url, events = ?listed.events, "sandbox: webhook registered");
        self.lock().push(Endpoint {
            listed: listed.clone(),
            kinds,
            queue,
            pending,
            worker,
        });
        Ok(RegisteredWebhook {
            endpoint: listed,
            secret,
        })
    }

    pub(crate) fn list(&self) -> Vec<WebhookEndpoint> {
        self.lock().iter().map(|e| e.listed.clone()).collect()
    }

    /// Removes an endpoint and drops what was queued for it; false if there was none.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut endpoints = self.lock();
        let Some(at) = endpoints.iter().position(|e| e.listed.id == id) else {
            return false;
        };
        let endpoint = endpoints.remove(at);
        endpoint.worker.abort();
        tracing::info!(id, "sandbox: webhook removed");
        true
    }

    /// Queues the event for every active endpoint that asked for its type. The caller
    /// has already changed the store, so a read made once the delivery arrives sees it.
    pub(crate) fn emit(&self, kind: WebhookEvent, data: Value) {
        let event = Arc::new(self.ids.event(kind, data));
        *self
            .counters
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind.as_str().to_owned())
            .or_default() += 1;
        tracing::debug!(id = %event.id, event = %kind, "sandbox: event");
        for endpoint in self.lock().iter() {
            if endpoint.listed.status == WebhookStatus::Active && endpoint.kinds.contains(&kind) {
                endpoint.pending.fetch_add(1, Ordering::Relaxed);
                // Fails only once the worker has been aborted, i.e. the endpoint removed.
                let _ = endpoint.queue.send(event.clone());
            }
        }
    }

    pub(crate) fn stats(&self) -> DeliveryStats {
        let c = &self.counters;
        DeliveryStats {
            events: c.events.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            attempted: c.attempted.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            pending: self
                .lock()
                .iter()
                .map(|e| e.pending.load(Ordering::Relaxed))
                .sum(),
            abandoned: c.abandoned.load(Ordering::Relaxed),
        }
    }

    /// Stops every delivery (the sandbox is stopping).
    pub(crate) fn shut_down(&self) {
        for endpoint in self.lock().drain(..) {
            endpoint.worker.abort();
        }
    }
}

//! Delivering one endpoint's events: signed POSTs, one at a time and in order, each
//! retried with exponential backoff and jitter until the endpoint answers `200 OK`,
//! with the same `_id` and the same body bytes every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::{Counters, hex};
use crate::events::Event;

/// The header carrying the signature, as Qpien documents it.
pub const SIGNATURE_HEADER: &str = "X-Qpien-Signature";
const AGENT: &str = "qpien-sandbox-webhooks/1";

/// How deliveries are retried.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    /// An answer not received within this counts as a failure.
    pub timeout: Duration,
    /// The wait after the first failure; it doubles after each further one.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub cap: Duration,
    /// Attempts before a delivery is dropped; None retries as long as the sandbox runs.
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1): the exponential delay, of which
    /// a random half is taken off so that endpoints failing together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(31)))
            .min(self.cap);
        exponential / 2 + exponential.mul_f64(fastrand::f64() / 2.0)
    }
}

pub(crate) struct Target {
    pub url: reqwest::Url,
    pub secret: String,
}

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
pub(crate) fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// The client deliveries are sent with: no redirects followed (Qpien's success is a
/// `200` from the registered URL itself).
pub(crate) fn client() -> reqwest::Client {
    // reqwest is built without a bundled TLS provider; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the webhook HTTP client builds")
}

/// Runs until the endpoint is removed (the task is aborted) or the sandbox stops.
pub(crate) async fn deliver_in_order(
    mut queue: mpsc::UnboundedReceiver<Arc<Event>>,
    target: Target,
    client: reqwest::Client,
    policy: RetryPolicy,
    counters: Arc<Counters>,
    pending: Arc<AtomicU64>,
) {
    while let Some(event) = queue.recv().await {
        let signature = sign(&target.secret, &event.body);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            counters.attempted.fetch_add(1, Ordering::Relaxed);
            let answer = client
                .post(target.url.clone())
                .header(CONTENT_TYPE, "application/json")
                .header(USER_AGENT, AGENT)
                .header(SIGNATURE_HEADER, &signature)
                .timeout(policy.timeout)
                .body(event.body.clone())
                .send()
                .await;
            let failure = match answer {
                Ok(response) if response.status() == reqwest::StatusCode::OK => None,
                Ok(response) => Some(format!("answered {}", response.status().as_u16())),
                Err(e) if e.is_timeout() => Some("no answer in time".to_owned()),
                Err(e) => Some(format!("unreachable: {e}")),
            };
            let Some(why) = failure else {
                counters.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id = %event.id, event = %event.kind, attempt, "sandbox: webhook delivered");
                break;
            };
            counters.failed.fetch_add(1, Ordering::Relaxed);
            if policy.max_attempts.is_some_and(|most| attempt >= most) {
                counters.abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %event.id, event = %event.kind, attempt, why, "sandbox: webhook delivery given up");
                break;
            }
            let wait = policy.backoff(attempt);
            tracing::info!(id = %event.id, event = %event.kind, attempt, why, retry_in_ms = wait.as_millis() as u64, "sandbox: webhook delivery failed");
            tokio::time::sleep(wait).await;
        }
        pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_under_it() {
        let policy = RetryPolicy {
            timeout: Duration::from_secs(10),
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: None,
        };
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let full = Duration::from_secs(full);
            for _ in 0..50 {
                let wait = policy.backoff(attempt);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "attempt {attempt}: {wait:?}"
                );
            }
        }
    }
}

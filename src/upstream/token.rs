//! Service mode's access token: fetched once, shared by all requests, renewed shortly
//! before it expires. The lock is held while a renewal runs, so a crowd of requests that
//! meets an old token causes exactly one `generate` call; the rest wait and reuse it.

use std::sync::Mutex as SyncMutex;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::UpstreamError;
use crate::settings::{ClientCredentials, Secret};

/// Renew when less than this share of the lifetime is left (capped at one minute), so a
/// request never starts with a token about to expire.
const RENEW_SHARE: u32 = 10;
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(60);

pub struct TokenCache {
    pub credentials: ClientCredentials,
    current: Mutex<Option<Cached>>,
    /// When the held token expires, readable without waiting on a renewal (for `/readyz`).
    expires_at: SyncMutex<Option<Instant>>,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    renew_at: Instant,
}

impl TokenCache {
    pub fn new(credentials: ClientCredentials) -> Self {
        Self {
            credentials,
            current: Mutex::new(None),
            expires_at: SyncMutex::new(None),
        }
    }

    /// The current token, or a new one from `generate` (token and lifetime) when there is
    /// none or it is due for renewal.
    pub async fn token(
        &self,
        generate: impl AsyncFnOnce(&ClientCredentials) -> Result<(Secret, Duration), UpstreamError>,
    ) -> Result<Secret, UpstreamError> {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref()
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let (token, lifetime) = generate(&self.credentials).await?;
        let now = Instant::now();
        let margin = (lifetime / RENEW_SHARE).min(MAX_RENEW_MARGIN);
        *current = Some(Cached {
            token: token.clone(),
            renew_at: now + lifetime - margin,
        });
        *self.expires_at.lock().expect("not poisoned") = Some(now + lifetime);
        Ok(token)
    }

    /// Forgets `stale` after the upstream called it expired, unless another request has
    /// already replaced it.
    pub async fn discard(&self, stale: &Secret) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|c| &c.token == stale) {
            *current = None;
            *self.expires_at.lock().expect("not poisoned") = None;
        }
    }

    pub fn holds_valid_token(&self) -> bool {
        self.expires_at
            .lock()
            .expect("not poisoned")
            .is_some_and(|at| Instant::now() < at)
    }
}

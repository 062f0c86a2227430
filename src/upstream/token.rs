//! Service mode's access token: fetched once, shared by all requests, renewed shortly
//! before it expires. The lock is held while a renewal runs, so a crowd of requests that
//! meets an old token causes exactly one `generate` call; the rest wait and reuse it.
//!
//! With Redis (`state::SharedToken`) the token is shared by the replicas too: a replica
//! first looks there, and only the one that takes the renewal lock asks Qpien; the
//! others wait for its token, but no longer than the lock may be held (counted across
//! requests, as each one gives up at its own deadline): a lock held past that (a replica
//! gone, or a value planted in Redis) is ignored and this replica renews alone, storing
//! what it got for the others. Without Redis, or while it is down, each replica keeps
//! its own.

use std::sync::Mutex as SyncMutex;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::UpstreamError;
use crate::settings::{ClientCredentials, Secret};
use crate::state::{SharedToken, StoredToken};

/// Renew when less than this share of the lifetime is left (capped at one minute), so a
/// request never starts with a token about to expire.
const RENEW_SHARE: u32 = 10;
const MAX_RENEW_MARGIN: Duration = Duration::from_secs(60);
/// How often a replica waiting for another's renewal looks for the new token.
const WAIT_STEP: Duration = Duration::from_millis(50);

pub struct TokenCache {
    pub credentials: ClientCredentials,
    current: Mutex<Option<Cached>>,
    /// When the held token expires, readable without waiting on a renewal (for `/readyz`).
    expires_at: SyncMutex<Option<Instant>>,
    shared: Option<SharedToken>,
    /// Names this process as the holder of the shared renewal lock.
    holder: String,
    /// Since when this replica has found another's renewal lock in its way, with no
    /// usable token: the wait outlives the requests that give up on it.
    blocked_since: SyncMutex<Option<Instant>>,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    renew_at: Instant,
    /// As stored in Redis, to name it when it must be thrown away.
    stored: Option<Vec<u8>>,
}

fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / RENEW_SHARE).min(MAX_RENEW_MARGIN)
}

impl TokenCache {
    pub fn new(credentials: ClientCredentials, shared: Option<SharedToken>) -> Self {
        let mut holder = [0u8; 16];
        getrandom::fill(&mut holder).expect("the operating system provides randomness");
        Self {
            credentials,
            current: Mutex::new(None),
            expires_at: SyncMutex::new(None),
            shared,
            holder: holder.iter().map(|b| format!("{b:02x}")).collect(),
            blocked_since: SyncMutex::new(None),
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
        if let Some(shared) = &self.shared {
            let stale = current.as_ref().and_then(|c| c.stored.clone());
            loop {
                match shared.read().await {
                    None => break,
                    Some(Some(stored)) if usable(&stored, stale.as_deref()) => {
                        return Ok(self.keep(&mut current, adopt(stored)));
                    }
                    Some(_) => {}
                }
                match shared.lock(&self.holder).await {
                    None => break,
                    Some(true) => {
                        *self.blocked_since.lock().expect("not poisoned") = None;
                        // Another replica may have stored a token between our look and
                        // taking the lock, and let it go since.
                        if let Some(Some(stored)) = shared.read().await
                            && usable(&stored, stale.as_deref())
                        {
                            shared.unlock(&self.holder).await;
                            return Ok(self.keep(&mut current, adopt(stored)));
                        }
                        let result = self.renew_shared(shared, &mut current, generate).await;
                        shared.unlock(&self.holder).await;
                        return result;
                    }
                    // Another replica is asking Qpien: wait for its token, as long as
                    // a renewal may hold the lock.
                    Some(false) if self.blocked_for() < shared.lock_hold() => {
                        tokio::time::sleep(WAIT_STEP).await;
                    }
                    Some(false) => {
                        tracing::warn!(
                            "the shared token renewal lock is held longer than a renewal may take: renewing without it"
                        );
                        return self.renew_shared(shared, &mut current, generate).await;
                    }
                }
            }
        }
        let (token, lifetime) = generate(&self.credentials).await?;
        Ok(self.keep(&mut current, fresh(token, lifetime, None)))
    }

    /// A token from Qpien, stored in Redis for the other replicas.
    async fn renew_shared(
        &self,
        shared: &SharedToken,
        current: &mut Option<Cached>,
        generate: impl AsyncFnOnce(&ClientCredentials) -> Result<(Secret, Duration), UpstreamError>,
    ) -> Result<Secret, UpstreamError> {
        let (token, lifetime) = generate(&self.credentials).await?;
        let stored = shared.write(&token, lifetime).await;
        Ok(self.keep(current, fresh(token, lifetime, stored)))
    }

    /// How long this replica has found the renewal lock held by another (0 the first
    /// time); `keep` ends the wait.
    fn blocked_for(&self) -> Duration {
        self.blocked_since
            .lock()
            .expect("not poisoned")
            .get_or_insert_with(Instant::now)
            .elapsed()
    }

    fn keep(
        &self,
        current: &mut Option<Cached>,
        (cached, expires_at): (Cached, Instant),
    ) -> Secret {
        let token = cached.token.clone();
        *current = Some(cached);
        *self.blocked_since.lock().expect("not poisoned") = None;
        *self.expires_at.lock().expect("not poisoned") = Some(expires_at);
        token
    }

    /// Forgets `stale` after the upstream called it expired, unless another request has
    /// already replaced it; in Redis too, once, whichever replica saw it first.
    pub async fn discard(&self, stale: &Secret) {
        let mut current = self.current.lock().await;
        if let Some(cached) = current.as_ref().filter(|c| &c.token == stale) {
            if let (Some(shared), Some(stored)) = (&self.shared, &cached.stored) {
                shared.discard(stored).await;
            }
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

/// A token this process got from Qpien, due for renewal at 90 % of its life.
fn fresh(token: Secret, lifetime: Duration, stored: Option<Vec<u8>>) -> (Cached, Instant) {
    let now = Instant::now();
    let cached = Cached {
        token,
        renew_at: now + lifetime - renew_margin(lifetime),
        stored,
    };
    (cached, now + lifetime)
}

/// A token from Redis is usable unless it is the one just thrown away or near its end.
fn usable(stored: &StoredToken, stale: Option<&[u8]>) -> bool {
    let left = stored
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    stale != Some(stored.stored.as_slice()) && left > renew_margin(stored.lifetime)
}

/// A token another replica stored, on this process's clock.
fn adopt(stored: StoredToken) -> (Cached, Instant) {
    let left = stored
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let now = Instant::now();
    let cached = Cached {
        renew_at: now + left - renew_margin(stored.lifetime),
        token: stored.token,
        stored: Some(stored.stored),
    };
    (cached, now + left)
}

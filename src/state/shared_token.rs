//! Service mode's access token in Redis, one for every replica. It is stored encrypted
//! (AES-256-GCM, a key derived from the client secret by HKDF-SHA-256, the key's name as
//! associated data), so whoever reads Redis gets nothing usable without the secret.
//! Renewal is single-flight across replicas: a lock with an expiry, taken by one replica
//! while it asks Qpien; the others wait for the new token and read it, no longer than
//! the lock's own hold (`upstream::token`), then renew alone. A stored token that does
//! not open, or says it lives longer than it was given, is counted and renewed over.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::redis::RedisState;
use super::sealing::Sealer;
use super::trust::{CLOCK_SKEW, Rejected};
use crate::settings::Secret;

pub struct SharedToken {
    redis: Arc<RedisState>,
    token_key: String,
    lock_key: String,
    sealer: Sealer,
    /// How long a renewal may hold the lock before another replica may take over.
    lock_hold: Duration,
}

/// A token as stored: the token, when it expires and how long it lived, and the stored
/// bytes (which name it when it must be thrown away).
pub struct StoredToken {
    pub token: Secret,
    pub expires_at: SystemTime,
    pub lifetime: Duration,
    pub stored: Vec<u8>,
}

impl SharedToken {
    /// `name`: what names the service's credential (a keyed hash of its client id);
    /// `lock_hold`: the longest a renewal may take.
    pub fn new(
        redis: Arc<RedisState>,
        name: &str,
        client_secret: &Secret,
        lock_hold: Duration,
    ) -> Self {
        Self {
            token_key: redis.key("token", name),
            lock_key: redis.key("token-lock", name),
            sealer: Sealer::derive(client_secret, b"qpien-rest token encryption v1"),
            redis,
            lock_hold,
        }
    }

    /// How long a renewal may hold the lock: the longest another replica waits on it.
    pub fn lock_hold(&self) -> Duration {
        self.lock_hold
    }

    /// The token in Redis: `None` when Redis cannot say, `Some(None)` when there is none
    /// (or it cannot be read with this secret: another key's, or tampered with; or it
    /// claims a longer life than it was given: counted, and renewed over).
    pub async fn read(&self) -> Option<Option<StoredToken>> {
        let key = self.token_key.clone();
        let stored: Option<Vec<u8>> = self
            .redis
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Some(stored.and_then(|stored| {
            self.open(stored)
                .map_err(|reason| self.redis.reject("token", reason))
                .ok()
        }))
    }

    /// Stores `token`, which lives `lifetime` from now; `None` when Redis cannot.
    pub async fn write(&self, token: &Secret, lifetime: Duration) -> Option<Vec<u8>> {
        let expires_at = SystemTime::now() + lifetime;
        let stored = self.seal(token, expires_at, lifetime);
        let (key, value) = (self.token_key.clone(), stored.clone());
        let ms = lifetime.as_millis().max(1) as u64;
        self.redis
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        Some(stored)
    }

    /// Throws the token away if Redis still holds `stored`: a token Qpien called expired
    /// is removed once, however many replicas saw it.
    pub async fn discard(&self, stored: &[u8]) {
        self.redis
            .delete_if_same(self.token_key.clone(), stored.to_vec())
            .await;
    }

    /// Takes the renewal lock for `holder`: `Some(true)` taken, `Some(false)` another
    /// replica holds it, `None` Redis cannot say.
    pub async fn lock(&self, holder: &str) -> Option<bool> {
        self.redis
            .take_lock(self.lock_key.clone(), holder, self.lock_hold)
            .await
    }

    pub async fn unlock(&self, holder: &str) {
        self.redis
            .delete_if_same(self.lock_key.clone(), holder.as_bytes().to_vec())
            .await;
    }

    /// nonce ‖ AES-256-GCM(expiry in ms ‖ lifetime in ms ‖ token), bound to the key's name.
    fn seal(&self, token: &Secret, expires_at: SystemTime, lifetime: Duration) -> Vec<u8> {
        let expiry = expires_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut plain = Vec::with_capacity(16 + token.expose().len());
        plain.extend_from_slice(&expiry.to_be_bytes());
        plain.extend_from_slice(&(lifetime.as_millis() as u64).to_be_bytes());
        plain.extend_from_slice(token.expose().as_bytes());
        self.sealer.seal(&plain, self.token_key.as_bytes())
    }

    fn open(&self, stored: Vec<u8>) -> Result<StoredToken, Rejected> {
        let plain = self.sealer.open(&stored, self.token_key.as_bytes())?;
        let (expiry, rest) = plain.split_at_checked(8).ok_or(Rejected::Malformed)?;
        let (lifetime, token) = rest.split_at_checked(8).ok_or(Rejected::Malformed)?;
        let ms = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().expect("8 bytes"));
        let expires_at = UNIX_EPOCH + Duration::from_millis(ms(expiry));
        let lifetime = Duration::from_millis(ms(lifetime));
        // Stored when it was fetched: it cannot have more life left than it was given.
        let left = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left > lifetime + CLOCK_SKEW {
            return Err(Rejected::Future);
        }
        Ok(StoredToken {
            token: Secret::new(String::from_utf8(token.to_vec()).map_err(|_| Rejected::Malformed)?),
            expires_at,
            lifetime,
            stored,
        })
    }
}

//! Webhook subscriptions shared by every replica (`REDIS_URL`): a hash per subscription
//! (`subscription:<id>`, fields `config` and `state`) and a set of their ids. Delivery
//! leases (`subscription-lease:<id>`, `SET NX PX`) make one replica at a time deliver a
//! subscription; a replica that dies stops renewing its leases, and once they expire
//! another replica takes the subscription over from its durable cursor.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::redis::RedisState;
use super::subscriptions_sqlite::from_rows;
use crate::events::subscriptions::{Config, DeliveryState, StoreError, Subscription};

/// Sets a field only while the hash exists: a delivery that was under way when its
/// subscription was deleted does not bring it back.
static SET_IF_EXISTS: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1 end return 0",
    )
});

/// Extends a lease only while `holder` still holds it.
static RENEW_IF_HELD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
    )
});

pub struct RedisSubscriptions {
    redis: Arc<RedisState>,
    index: String,
}

fn down() -> StoreError {
    StoreError::Unavailable("Redis does not answer".into())
}

impl RedisSubscriptions {
    pub fn new(redis: Arc<RedisState>) -> Self {
        Self {
            index: redis.key("subscriptions", "all"),
            redis,
        }
    }

    fn key(&self, id: &str) -> String {
        self.redis.key("subscription", id)
    }

    pub async fn create(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let key = self.key(&subscription.config.id);
        let config = serde_json::to_string(&subscription.config).expect("serialises");
        let state = serde_json::to_string(&subscription.state).expect("serialises");
        let (index, id) = (self.index.clone(), subscription.config.id.clone());
        self.redis
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .hset_multiple(&key, &[("config", config), ("state", state)])
                    .sadd(index, id)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
            .ok_or_else(down)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let key = self.key(id);
        let (config, state): (Option<String>, Option<String>) = self
            .redis
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(key)
                    .arg("config")
                    .arg("state")
                    .query_async(&mut c)
                    .await
            })
            .await
            .ok_or_else(down)?;
        Ok(config.zip(state).and_then(|(c, s)| from_rows(&c, &s)))
    }

    pub async fn all(&self) -> Result<Vec<Subscription>, StoreError> {
        let index = self.index.clone();
        let ids: Vec<String> = self
            .redis
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await })
            .await
            .ok_or_else(down)?;
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(subscription) = self.get(&id).await? {
                found.push(subscription);
            }
        }
        found.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        Ok(found)
    }

    async fn set_if_exists(
        &self,
        id: &str,
        field: &str,
        value: String,
    ) -> Result<bool, StoreError> {
        let (key, field) = (self.key(id), field.to_owned());
        let set: i64 = self
            .redis
            .run(|mut c| async move {
                SET_IF_EXISTS
                    .key(key)
                    .arg(field)
                    .arg(value)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .ok_or_else(down)?;
        Ok(set == 1)
    }

    pub async fn put_config(&self, config: &Config) -> Result<bool, StoreError> {
        let json = serde_json::to_string(config).expect("serialises");
        self.set_if_exists(&config.id, "config", json).await
    }

    pub async fn put_state(&self, id: &str, state: &DeliveryState) -> Result<bool, StoreError> {
        let json = serde_json::to_string(state).expect("serialises");
        self.set_if_exists(id, "state", json).await
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let (key, index, id) = (self.key(id), self.index.clone(), id.to_owned());
        let (removed, _): (i64, i64) = self
            .redis
            .run(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .del(key)
                    .srem(index, id)
                    .query_async(&mut c)
                    .await
            })
            .await
            .ok_or_else(down)?;
        Ok(removed == 1)
    }

    /// Takes the delivery lease of `id` for `holder`, or extends it if `holder` has it;
    /// `false` when another replica holds it or Redis cannot say.
    pub async fn lease(&self, id: &str, holder: &str, hold: Duration) -> bool {
        let key = self.redis.key("subscription-lease", id);
        if self.redis.take_lock(key.clone(), holder, hold).await == Some(true) {
            return true;
        }
        let holder = holder.to_owned();
        let renewed: Option<i64> = self
            .redis
            .run(|mut c| async move {
                RENEW_IF_HELD
                    .key(key)
                    .arg(holder)
                    .arg(hold.as_millis().max(1) as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        renewed == Some(1)
    }

    /// Gives the lease of `id` up, if `holder` still holds it.
    pub async fn release(&self, id: &str, holder: &str) {
        let key = self.redis.key("subscription-lease", id);
        self.redis
            .delete_if_same(key, holder.as_bytes().to_vec())
            .await;
    }
}

//! Webhook deliveries already applied, shared by the replicas: Qpien retries until it
//! gets a 200, so the same delivery can reach two replicas.

use std::time::Duration;

use super::redis::RedisState;

impl RedisState {
    /// Marks delivery `id` as taken for `keep`: `Some(true)` when this is its first
    /// arrival, `Some(false)` when it was taken already, `None` when Redis cannot say.
    pub async fn first_delivery(&self, id: &str, keep: Duration) -> Option<bool> {
        let key = self.key("webhook-delivery", id);
        let ms = keep.as_millis().max(1) as u64;
        let set: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Some(set.is_some())
    }

    /// Forgets delivery `id`, whose effect could not be recorded: its retry is applied.
    pub async fn forget_delivery(&self, id: &str) {
        let key = self.key("webhook-delivery", id);
        let _: Option<u8> = self
            .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await;
    }
}

impl RedisState {
    /// Makes `fingerprint` the state the last update event of conversation `id`
    /// showed, for `keep`: the one it replaced (`Some(None)`: none), or `None` when Redis
    /// cannot say.
    pub async fn swap_state(
        &self,
        id: &str,
        fingerprint: u64,
        keep: Duration,
    ) -> Option<Option<u64>> {
        let key = self.key("conversation-state", id);
        let ms = keep.as_millis().max(1) as u64;
        let previous: Option<Option<String>> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(fingerprint.to_string())
                    .arg("PX")
                    .arg(ms)
                    .arg("GET")
                    .query_async(&mut c)
                    .await
            })
            .await;
        previous.map(|p| p.and_then(|v| v.parse().ok()))
    }

    pub async fn forget_state(&self, id: &str) {
        let key = self.key("conversation-state", id);
        let _: Option<u8> = self
            .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await;
    }
}

//! The read cache's shared tier in Redis: answers by name, kept as long as they may be
//! served (fresh, then stale on trouble); a per-credential generation that an update
//! moves on, so every replica stops finding that credential's list pages at once; and a
//! short lock per flight, so replicas that miss the same answer together ask Qpien once.

use std::sync::LazyLock;
use std::time::Duration;

use super::redis::RedisState;

/// Stores ARGV[1] under KEYS[1] for ARGV[3] ms unless the answer there is newer: each
/// value starts with the ms it was fetched at and a colon (ARGV[2]).
static PUT_IF_NEWER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local current = redis.call('GET', KEYS[1])
         if current then
           local at = tonumber(string.match(current, '^(%d+):'))
           if at and at > tonumber(ARGV[2]) then return 0 end
         end
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
         return 1",
    )
});

impl RedisState {
    /// The generation of a credential's list pages (0 before any update).
    pub async fn generation(&self, credential: &str) -> Option<u64> {
        let key = self.key("generation", credential);
        let value: Option<u64> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Some(value.unwrap_or(0))
    }

    /// Moves a credential's generation on; kept a day after its last update, longer than
    /// any page it names.
    pub async fn next_generation(&self, credential: &str) -> Option<u64> {
        let key = self.key("generation", credential);
        self.run(|mut c| async move {
            let (generation, _): (u64, u8) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, 86_400)
                .query_async(&mut c)
                .await?;
            Ok(generation)
        })
        .await
    }

    /// The answer stored under `name`: `None` when Redis cannot say.
    pub async fn entry(&self, name: &str) -> Option<Option<Vec<u8>>> {
        let key = self.key("read", name);
        self.run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    /// Stores `value` (fetched at `fetched_ms`, its first field) for `keep`, unless a newer
    /// answer is there.
    pub async fn put_entry(&self, name: &str, value: Vec<u8>, fetched_ms: u64, keep: Duration) {
        let key = self.key("read", name);
        let ms = keep.as_millis().max(1) as u64;
        let _: Option<u8> = self
            .run(|mut c| async move {
                PUT_IF_NEWER
                    .key(key)
                    .arg(value)
                    .arg(fetched_ms)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
    }

    pub async fn forget_entry(&self, name: &str) {
        let key = self.key("read", name);
        let _: Option<u8> = self
            .run(|mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await })
            .await;
    }

    /// Takes the flight for `name` for at most `hold`: `Some(false)` when another
    /// replica holds it, `None` when Redis cannot say.
    pub async fn take_flight(&self, name: &str, holder: &str, hold: Duration) -> Option<bool> {
        self.take_lock(self.key("flight", name), holder, hold).await
    }

    /// Whether another replica's flight for `name` is still under way.
    pub async fn flight_under_way(&self, name: &str) -> Option<bool> {
        let key = self.key("flight", name);
        self.run(|mut c| async move { redis::cmd("EXISTS").arg(key).query_async(&mut c).await })
            .await
    }

    pub async fn land_flight(&self, name: &str, holder: &str) {
        self.delete_if_same(self.key("flight", name), holder.as_bytes().to_vec())
            .await;
    }

    /// Updates of conversation `id` one at a time across replicas: `Some(false)` while
    /// another holds it.
    pub async fn take_update(&self, id: &str, holder: &str, hold: Duration) -> Option<bool> {
        self.take_lock(self.key("update", id), holder, hold).await
    }

    pub async fn end_update(&self, id: &str, holder: &str) {
        self.delete_if_same(self.key("update", id), holder.as_bytes().to_vec())
            .await;
    }
}

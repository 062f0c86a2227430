//! The read cache's shared tier in Redis: answers by name, kept as long as they may be
//! served (fresh, then stale on trouble); a per-credential generation that an update
//! moves on, so every replica stops finding that credential's list pages at once; the
//! sequence of changes Qpien reported and the last one recorded against each
//! conversation, the lists and everything (`reads::invalidate`); and a short lock per
//! flight, so replicas that miss the same answer together ask Qpien once.

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

/// Records a change: takes the next number of the sequence (KEYS[1]) and records it
/// against what changed (KEYS[2], kept ARGV[1] ms when ARGV[1] is not 0) and the lists
/// (KEYS[3]). A number only ever grows, so records never go back.
static RECORD_CHANGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local n = redis.call('INCR', KEYS[1])
         if tonumber(ARGV[1]) > 0 then
           redis.call('SET', KEYS[2], n, 'PX', ARGV[1])
         else
           redis.call('SET', KEYS[2], n)
         end
         redis.call('SET', KEYS[3], n)
         return n",
    )
});

/// Where a change is recorded, and what a read compares its answer's number with.
pub enum ChangeRecord<'a> {
    Conversation(&'a str),
    Lists,
    Everything,
}

impl RedisState {
    fn change_key(&self, record: ChangeRecord) -> String {
        match record {
            ChangeRecord::Conversation(id) => self.key("changed", &format!("c:{id}")),
            ChangeRecord::Lists => self.key("changed", "lists"),
            ChangeRecord::Everything => self.key("changed", "all"),
        }
    }

    /// The answer stored under `name`, the sequence's current number, and the last
    /// change recorded against `record` or everything, in one round trip; `None` when
    /// Redis cannot say.
    pub async fn entry_and_changes(
        &self,
        name: &str,
        record: ChangeRecord<'_>,
    ) -> Option<(Option<Vec<u8>>, u64, u64)> {
        let keys = [
            self.key("read", name),
            self.key("changes", "sequence"),
            self.change_key(ChangeRecord::Everything),
            self.change_key(record),
        ];
        let (entry, now, everything, own): (
            Option<Vec<u8>>,
            Option<u64>,
            Option<u64>,
            Option<u64>,
        ) = self
            .run(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        let level = everything.unwrap_or(0).max(own.unwrap_or(0));
        Some((entry, now.unwrap_or(0), level))
    }

    /// The sequence's current number; `None` when Redis cannot say.
    pub async fn changes_now(&self) -> Option<u64> {
        let key = self.key("changes", "sequence");
        let now: Option<u64> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        Some(now.unwrap_or(0))
    }

    /// Records a change against `record` (a conversation's record kept `keep`, longer
    /// than any answer it outdates) and the lists; its number, `None` when Redis did not
    /// take it.
    pub async fn record_change(&self, record: ChangeRecord<'_>, keep: Duration) -> Option<u64> {
        let ms = match record {
            ChangeRecord::Conversation(_) => keep.as_millis().max(1) as u64,
            _ => 0,
        };
        let keys = [
            self.key("changes", "sequence"),
            self.change_key(record),
            self.change_key(ChangeRecord::Lists),
        ];
        self.run(|mut c| async move {
            let [sequence, changed, lists] = keys;
            RECORD_CHANGE
                .key(sequence)
                .key(changed)
                .key(lists)
                .arg(ms)
                .invoke_async(&mut c)
                .await
        })
        .await
    }

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

//! The read cache's shared tier in Redis: answers by name, kept as long as they may be
//! served (fresh, then stale on trouble); a per-credential generation that an update
//! moves on, so every replica stops finding that credential's list pages at once; the
//! sequence of changes Qpien reported and the last one recorded against each
//! conversation, the lists and everything (`reads::invalidate`); and a short lock per
//! flight, so replicas that miss the same answer together ask Qpien once.
//!
//! Answers carry a MAC (`trust.rs`) and are refused without it. Counters and change
//! records are bare numbers, checked for consistency instead: a record ahead of the
//! sequence it was numbered from was not written by a replica and stands for a change
//! at an unknown time (everything cached before now is outdated); a counter that is not
//! a number is moved on past any number it gave out.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::redis::RedisState;
use super::trust::{CLOCK_SKEW, Rejected, number};

/// Stores ARGV[1] under KEYS[1] for ARGV[3] ms unless the answer there is newer: each
/// value starts with the ms it was fetched at and a colon (ARGV[2]). One dated past
/// ARGV[4] (the writer's clock plus the skew allowed) was never a good answer, and
/// gives way.
static PUT_IF_NEWER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local current = redis.call('GET', KEYS[1])
         if current then
           local at = tonumber(string.match(current, '^(%d+):'))
           if at and at > tonumber(ARGV[2]) and at <= tonumber(ARGV[4]) then return 0 end
         end
         redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
         return 1",
    )
});

/// INCR of KEYS[1], or when what it holds is no counter, a number past any it gave out:
/// the clock in µs (unless changes came a million a second since the last repair).
/// Leaves `n` and `repaired` (1 when it was not a counter) to the script's rest.
const LUA_NEXT: &str = "local ok, n = pcall(redis.call, 'INCR', KEYS[1])
 local repaired = 0
 if not ok then
   local t = redis.call('TIME')
   local text = t[1] .. string.format('%06d', tonumber(t[2]))
   redis.call('SET', KEYS[1], text)
   n, repaired = tonumber(text), 1
 end
";

/// Records a change: takes the next number of the sequence (KEYS[1]) and records it
/// against what changed (KEYS[2], kept ARGV[1] ms when ARGV[1] is not 0) and the lists
/// (KEYS[3]). A number only ever grows, so records never go back. {n, repaired}.
static RECORD_CHANGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_NEXT}
         if tonumber(ARGV[1]) > 0 then
           redis.call('SET', KEYS[2], n, 'PX', ARGV[1])
         else
           redis.call('SET', KEYS[2], n)
         end
         redis.call('SET', KEYS[3], n)
         return {{n, repaired}}"
    ))
});

/// Moves a generation (KEYS[1]) on and keeps it a day. {n, repaired}.
static NEXT_GENERATION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_NEXT}
         redis.call('EXPIRE', KEYS[1], 86400)
         return {{n, repaired}}"
    ))
});

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

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

    /// The answer stored under `name` (its MAC checked: a value without a good one is
    /// counted, removed and a miss), the sequence's current number, and the last change
    /// recorded against `record` or everything, in one round trip; `None` when Redis
    /// cannot say.
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
        let entry_key = keys[0].clone();
        let values: Vec<Option<Vec<u8>>> = self
            .run(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        let [entry, now, everything, own]: [Option<Vec<u8>>; 4] = values.try_into().ok()?;
        let entry = match entry {
            Some(sealed) => match self.open("read", &entry_key, &sealed) {
                Some(value) => Some(value),
                None => {
                    // Out of the way of the next answer, unless a good one replaced it.
                    self.delete_if_same(entry_key, sealed).await;
                    None
                }
            },
            None => None,
        };
        let Ok(now) = now.as_deref().map_or(Ok(0), number) else {
            // No change can be numbered until it is repaired: nothing found stands.
            self.reject("change", Rejected::Malformed);
            return Some((None, 0, 0));
        };
        let level = [everything, own]
            .iter()
            .map(|record| match record.as_deref().map_or(Ok(0), number) {
                Ok(n) if n <= now => n,
                Ok(_) => {
                    self.reject("change", Rejected::Future);
                    now
                }
                Err(reason) => {
                    self.reject("change", reason);
                    now
                }
            })
            .max()
            .unwrap_or(0);
        Some((entry, now, level))
    }

    /// The sequence's current number; `None` when Redis cannot say.
    pub async fn changes_now(&self) -> Option<u64> {
        let key = self.key("changes", "sequence");
        let now: Option<Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        match now.as_deref().map_or(Ok(0), number) {
            Ok(now) => Some(now),
            Err(reason) => {
                self.reject("change", reason);
                // An answer numbered 0 is outdated by any change recorded.
                Some(0)
            }
        }
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
        let (n, repaired): (u64, u8) = self
            .run(|mut c| async move {
                let [sequence, changed, lists] = keys;
                RECORD_CHANGE
                    .key(sequence)
                    .key(changed)
                    .key(lists)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if repaired == 1 {
            self.reject("change", Rejected::Malformed);
        }
        Some(n)
    }

    /// The generation of a credential's list pages (0 before any update); one that is not
    /// a number is moved on.
    pub async fn generation(&self, credential: &str) -> Option<u64> {
        let key = self.key("generation", credential);
        let value: Option<Vec<u8>> = self
            .run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        match value.as_deref().map_or(Ok(0), number) {
            Ok(generation) => Some(generation),
            Err(reason) => {
                self.reject("generation", reason);
                self.next_generation(credential).await
            }
        }
    }

    /// Moves a credential's generation on; kept a day after its last update, longer than
    /// any page it names.
    pub async fn next_generation(&self, credential: &str) -> Option<u64> {
        let key = self.key("generation", credential);
        let (generation, repaired): (u64, u8) = self
            .run(|mut c| async move { NEXT_GENERATION.key(key).invoke_async(&mut c).await })
            .await?;
        if repaired == 1 {
            self.reject("generation", Rejected::Malformed);
        }
        Some(generation)
    }

    /// Stores `value` (fetched at `fetched_ms`, its first field) with its MAC for `keep`,
    /// unless a newer answer is there.
    pub async fn put_entry(&self, name: &str, value: Vec<u8>, fetched_ms: u64, keep: Duration) {
        let key = self.key("read", name);
        let value = self.seal(&key, &value);
        let ms = keep.as_millis().max(1) as u64;
        let latest = unix_ms() + CLOCK_SKEW.as_millis() as u64;
        let _: Option<u8> = self
            .run(|mut c| async move {
                PUT_IF_NEWER
                    .key(key)
                    .arg(value)
                    .arg(fetched_ms)
                    .arg(ms)
                    .arg(latest)
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

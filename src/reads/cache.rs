//! The read cache: answers kept per credential, fresh for `READ_CACHE_TTL_MS`, then
//! kept `READ_CACHE_STALE_IF_ERROR_SECS` longer for when Qpien cannot answer. Bounded
//! in entries and bytes (moka: TinyLFU admission, expiry by time-to-live).
//!
//! List pages are keyed by a per-credential generation that an update of that
//! credential moves on: every page cached before the update becomes unreachable at
//! once, and a page fetched by a flight that started before it can never be found
//! again. Items are replaced in place, by the newer of two answers.
//!
//! Every entry carries the number of the change sequence current when its read looked
//! here (`invalidate`): an entry older than the last change recorded against it is not
//! found at all, neither fresh nor stale.
//!
//! With Redis, answers, generations and changes live there too, shared by the replicas,
//! and Redis is the truth while it answers: this process's copy only stands in while it
//! does not, so a write made through one replica is what every replica reads next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use moka::ops::compute::Op;
use tokio::time::Instant;

use super::etag::ETag;
use super::invalidate::{Changed, Epoch, Invalidations};
use crate::domain::{ConversationId, ListQuery};
pub use crate::settings::CacheLimits;
use crate::state::redis::RedisState;
use crate::state::shared_reads::ChangeRecord;
use crate::state::trust::{CLOCK_SKEW, Rejected};
use crate::upstream::CredentialId;

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// What a read asks for, under whose credential.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReadKey {
    pub credential: CredentialId,
    pub read: Read,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Read {
    Conversation(ConversationId),
    List {
        query: ListQuery,
        generation: Generation,
    },
}

/// Whose count a list generation is: Redis's, or this process's while Redis is away.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Generation {
    Shared(u64),
    Local(u64),
}

/// One answer, as its JSON: a conversation, or the `items` of a page.
#[derive(Debug)]
pub struct Entry {
    pub json: Bytes,
    /// The tag of `json`: a conversation's `ETag`; for a page, part of one.
    pub etag: ETag,
    /// `etag` as the `ETag` field sends it, made once for every answer from this entry.
    pub etag_header: HeaderValue,
    /// For a page: the conversations matching, over all pages.
    pub total_items: u64,
    /// When Qpien was asked (for an update: when it answered), for age and for which
    /// of two answers is newer.
    pub fetched_at: Instant,
    /// The change sequence's number when its read looked in the cache, before Qpien was
    /// asked: the entry stands until a later change is recorded against it.
    pub epoch: Epoch,
}

/// What a look in the cache found: a usable entry, if any; the change sequence's number
/// now, for the answer a miss will fetch; and the last change recorded against the key,
/// which a flight's answer must not be older than.
pub struct Looked {
    pub entry: Option<Arc<Entry>>,
    pub now: Epoch,
    pub level: u64,
}

impl Read {
    /// Where changes that outdate this read are recorded in Redis.
    fn record(&self) -> ChangeRecord<'_> {
        match self {
            Read::Conversation(id) => ChangeRecord::Conversation(id.as_str()),
            Read::List { .. } => ChangeRecord::Lists,
        }
    }
}

impl ReadKey {
    /// The key's name in Redis: the credential, then what was read, in a fixed spelling.
    pub fn name(&self) -> String {
        let credential = self.credential.to_hex();
        match &self.read {
            Read::Conversation(id) => format!("{credential}:c:{id}"),
            Read::List { query, generation } => {
                // A page counted while Redis was away never meets a shared one.
                let generation = match generation {
                    Generation::Shared(n) => format!("g{n}"),
                    Generation::Local(n) => format!("local{n}"),
                };
                let f = &query.filter;
                let text = |v: Option<&str>| v.unwrap_or("").to_owned();
                let mut name = url::form_urlencoded::Serializer::new(String::new());
                name.append_pair("status", &text(f.status.map(|v| v.as_str())))
                    .append_pair("priority", &text(f.priority.map(|v| v.as_str())))
                    .append_pair(
                        "starred",
                        &f.starred.map_or(String::new(), |v| v.to_string()),
                    )
                    .append_pair("type", &text(f.kind.map(|v| v.as_str())))
                    .append_pair("tag", &text(f.tag.as_deref()))
                    .append_pair("page", &query.page.to_string())
                    .append_pair("pageSize", &query.page_size.to_string());
                format!("{credential}:l:{generation}:{}", name.finish())
            }
        }
    }
}

impl Entry {
    /// For Redis: `<fetched, ms since 1970>:<epoch>:<total items>:<json>`, fetched first
    /// so a script can keep the newer of two answers. An entry numbered by this process's
    /// sequence goes in as 0: older than any change.
    pub fn encode(&self) -> (Vec<u8>, u64) {
        let fetched_ms = unix_ms(SystemTime::now()).saturating_sub(self.age().as_millis() as u64);
        let epoch = match self.epoch {
            Epoch::Shared(n) => n,
            Epoch::Local(_) => 0,
        };
        let mut value = format!("{fetched_ms}:{epoch}:{}:", self.total_items).into_bytes();
        value.extend_from_slice(&self.json);
        (value, fetched_ms)
    }

    /// What `encode` made; refused when it is anything else, or dated ahead of this
    /// replica's clock by more than the skew allowed (it would stay fresh for ever).
    pub fn decode(value: &[u8]) -> Result<Self, Rejected> {
        let mut parts = value.splitn(4, |b| *b == b':');
        let mut number = || {
            let part = parts.next().ok_or(Rejected::Malformed)?;
            crate::state::trust::number(part)
        };
        let (fetched_ms, epoch, total_items) = (number()?, number()?, number()?);
        let json = Bytes::copy_from_slice(parts.next().ok_or(Rejected::Malformed)?);
        let now = unix_ms(SystemTime::now());
        if fetched_ms > now.saturating_add(CLOCK_SKEW.as_millis() as u64) {
            return Err(Rejected::Future);
        }
        let age = now.saturating_sub(fetched_ms);
        let fetched_at = Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now);
        Ok(Self::new(
            json,
            total_items,
            fetched_at,
            Epoch::Shared(epoch),
        ))
    }

    pub fn new(json: Bytes, total_items: u64, fetched_at: Instant, epoch: Epoch) -> Self {
        let etag = ETag::of(&json);
        Self {
            etag,
            etag_header: etag.header_value(),
            json,
            total_items,
            fetched_at,
            epoch,
        }
    }

    pub fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }
}

/// The `Cache-Control` of answers read through the cache: private, as they depend on the
/// caller's credential, and fresh for as long as the cache keeps them fresh.
fn cache_control(limits: &CacheLimits) -> HeaderValue {
    if limits.ttl.is_zero() {
        HeaderValue::from_static("private, no-cache")
    } else {
        HeaderValue::try_from(format!("private, max-age={}", limits.ttl.as_secs())).expect("digits")
    }
}

pub struct ReadCache {
    limits: CacheLimits,
    cache_control: HeaderValue,
    entries: moka::sync::Cache<ReadKey, Arc<Entry>>,
    generations: moka::sync::Cache<CredentialId, u64>,
    next_generation: AtomicU64,
    changes: Invalidations,
    shared: Option<Arc<RedisState>>,
}

/// What each entry costs besides its JSON: the key, the `Arc`, moka's bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;

impl ReadCache {
    pub fn new(limits: CacheLimits, shared: Option<Arc<RedisState>>) -> Self {
        // Weighing every entry at least `max_bytes / max_entries` bounds both at once:
        // the total weight stays under `max_bytes`, so the count under `max_entries`.
        let floor = (limits.max_bytes / limits.max_entries.max(1)).max(1);
        let lifetime = (limits.ttl + limits.stale_if_error).max(Duration::from_millis(1));
        Self {
            limits,
            cache_control: cache_control(&limits),
            entries: moka::sync::Cache::builder()
                .max_capacity(limits.max_bytes)
                .weigher(move |_, entry: &Arc<Entry>| {
                    let bytes = entry.json.len() as u64 + ENTRY_OVERHEAD;
                    u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
                })
                .time_to_live(lifetime)
                .build(),
            // Outlives every entry it names; forgotten, a credential starts afresh
            // from a number never used before, so no old page comes back.
            generations: moka::sync::Cache::builder()
                .max_capacity(limits.max_entries)
                .time_to_idle(lifetime + Duration::from_secs(60))
                .build(),
            next_generation: AtomicU64::new(1),
            changes: Invalidations::new(lifetime, limits.max_entries),
            shared,
        }
    }

    /// How long a conversation's change record is kept: longer than any entry it outdates.
    fn record_lifetime(&self) -> Duration {
        self.limits.ttl + self.limits.stale_if_error + Duration::from_secs(60)
    }

    /// Redis, while it answers and the cache is on.
    fn redis(&self) -> Option<&RedisState> {
        self.shared
            .as_deref()
            .filter(|redis| redis.is_up() && self.enabled())
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// The `Cache-Control` of answers read through the cache, made once.
    pub fn cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }

    pub fn enabled(&self) -> bool {
        !self.limits.ttl.is_zero()
    }

    /// The generation of `credential`'s list pages.
    pub async fn generation(&self, credential: CredentialId) -> Generation {
        if let Some(redis) = self.redis()
            && let Some(generation) = redis.generation(&credential.to_hex()).await
        {
            return Generation::Shared(generation);
        }
        Generation::Local(self.generations.get_with(credential, || {
            self.next_generation.fetch_add(1, Ordering::Relaxed)
        }))
    }

    /// Makes every list page of `credential` cached so far unreachable, on every replica.
    pub async fn forget_lists(&self, credential: CredentialId) {
        let next = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.generations.insert(credential, next);
        if let Some(redis) = self.redis() {
            redis.next_generation(&credential.to_hex()).await;
        }
    }

    /// The answer for `key`, unless a change outdated it: Redis's while it answers,
    /// else this process's.
    pub async fn get(&self, key: &ReadKey) -> Looked {
        if let Some(redis) = self.redis()
            && let Some((stored, now, level)) = redis
                .entry_and_changes(&key.name(), key.read.record())
                .await
        {
            let entry = stored
                .and_then(|value| {
                    Entry::decode(&value)
                        .map_err(|reason| redis.reject("read", reason))
                        .ok()
                })
                .filter(|entry| matches!(entry.epoch, Epoch::Shared(n) if n >= level))
                .map(Arc::new);
            if let Some(entry) = &entry {
                self.keep_here(key.clone(), Arc::clone(entry));
            }
            return Looked {
                entry,
                now: Epoch::Shared(now),
                level,
            };
        }
        let level = self.local_level(&key.read);
        let entry = self.entries.get(key).filter(|entry| match entry.epoch {
            Epoch::Local(n) => n >= level,
            // Redis's numbers say nothing of this process's: such an entry stands only
            // while no change was recorded here against it (Redis away since).
            Epoch::Shared(_) => level == 0,
        });
        Looked {
            entry,
            now: Epoch::Local(self.changes.now()),
            level,
        }
    }

    fn local_level(&self, read: &Read) -> u64 {
        match read {
            Read::Conversation(id) => self.changes.of_conversation(id),
            Read::List { .. } => self.changes.of_lists(),
        }
    }

    /// The change sequence's number now, for an answer not read through `get`.
    pub async fn epoch_now(&self) -> Epoch {
        if let Some(redis) = self.redis()
            && let Some(now) = redis.changes_now().await
        {
            return Epoch::Shared(now);
        }
        Epoch::Local(self.changes.now())
    }

    /// Records a change here and, with Redis, there: after `Ok`, no replica reading
    /// through Redis finds an answer older than it. `Err` when Redis is configured but
    /// did not take it (this replica still drops its own).
    pub async fn record(&self, changed: &Changed) -> Result<(), ()> {
        self.changes.record(changed);
        let Some(redis) = self.shared.as_deref() else {
            return Ok(());
        };
        let record = match changed {
            Changed::Conversation(id) => ChangeRecord::Conversation(id.as_str()),
            Changed::Everything => ChangeRecord::Everything,
        };
        match redis.record_change(record, self.record_lifetime()).await {
            Some(_) => Ok(()),
            None => Err(()),
        }
    }

    /// Keeps `entry` unless the cache already holds a newer answer for `key` (an update
    /// that finished while this read was under way).
    pub async fn put(&self, key: ReadKey, entry: Arc<Entry>) {
        if !self.enabled() {
            return;
        }
        if let Some(redis) = self.redis() {
            let keep = self.limits.ttl + self.limits.stale_if_error;
            let (value, fetched_ms) = entry.encode();
            redis.put_entry(&key.name(), value, fetched_ms, keep).await;
        }
        self.keep_here(key, entry);
    }

    fn keep_here(&self, key: ReadKey, entry: Arc<Entry>) {
        self.entries
            .entry(key)
            .and_compute_with(|current| match current {
                Some(current) if current.value().fetched_at > entry.fetched_at => Op::Nop,
                _ => Op::Put(entry),
            });
    }

    pub async fn forget(&self, key: &ReadKey) {
        self.entries.invalidate(key);
        if let Some(redis) = self.redis() {
            redis.forget_entry(&key.name()).await;
        }
    }

    /// Redis, for a flight that would rather wait for another replica's answer.
    pub fn shared(&self) -> Option<&RedisState> {
        self.redis()
    }

    /// Redis while it answers, cache on or off: updates take their turn there.
    pub fn shared_even_uncached(&self) -> Option<&RedisState> {
        self.shared.as_deref().filter(|redis| redis.is_up())
    }

    pub fn is_fresh(&self, entry: &Entry) -> bool {
        entry.age() < self.limits.ttl
    }

    /// Whether `entry` may still stand in for an answer Qpien cannot give.
    pub fn may_serve_stale(&self, entry: &Entry) -> bool {
        entry.age() < self.limits.ttl + self.limits.stale_if_error
    }
}

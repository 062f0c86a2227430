//! The read cache: answers kept per credential, fresh for `READ_CACHE_TTL_MS`, then
//! kept `READ_CACHE_STALE_IF_ERROR_SECS` longer for when Qpien cannot answer. Bounded
//! in entries and bytes (moka: TinyLFU admission, expiry by time-to-live).
//!
//! List pages are keyed by a per-credential generation that an update of that
//! credential moves on: every page cached before the update becomes unreachable at
//! once, and a page fetched by a flight that started before it can never be found
//! again. Items are replaced in place, by the newer of two answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header::HeaderValue;
use actix_web::web::Bytes;
use moka::ops::compute::Op;
use tokio::time::Instant;

use super::etag::ETag;
use crate::domain::{ConversationId, ListQuery};
use crate::upstream::CredentialId;

/// What a read asks for, under whose credential.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReadKey {
    pub credential: CredentialId,
    pub read: Read,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Read {
    Conversation(ConversationId),
    List { query: ListQuery, generation: u64 },
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
}

impl Entry {
    pub fn new(json: Bytes, total_items: u64, fetched_at: Instant) -> Self {
        let etag = ETag::of(&json);
        Self {
            etag,
            etag_header: etag.header_value(),
            json,
            total_items,
            fetched_at,
        }
    }

    pub fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CacheLimits {
    /// How long an answer is served without asking Qpien; zero turns the cache off.
    pub ttl: Duration,
    /// How long after that it may still stand in for an answer Qpien cannot give.
    pub stale_if_error: Duration,
    pub max_entries: u64,
    pub max_bytes: u64,
}

impl CacheLimits {
    /// The `Cache-Control` of answers read through the cache: private, as they depend on
    /// the caller's credential, and fresh for as long as the cache keeps them fresh.
    fn cache_control(&self) -> HeaderValue {
        if self.ttl.is_zero() {
            HeaderValue::from_static("private, no-cache")
        } else {
            HeaderValue::try_from(format!("private, max-age={}", self.ttl.as_secs()))
                .expect("digits")
        }
    }
}

pub struct ReadCache {
    limits: CacheLimits,
    cache_control: HeaderValue,
    entries: moka::sync::Cache<ReadKey, Arc<Entry>>,
    generations: moka::sync::Cache<CredentialId, u64>,
    next_generation: AtomicU64,
}

/// What each entry costs besides its JSON: the key, the `Arc`, moka's bookkeeping.
const ENTRY_OVERHEAD: u64 = 256;

impl ReadCache {
    pub fn new(limits: CacheLimits) -> Self {
        // Weighing every entry at least `max_bytes / max_entries` bounds both at once:
        // the total weight stays under `max_bytes`, so the count under `max_entries`.
        let floor = (limits.max_bytes / limits.max_entries.max(1)).max(1);
        let lifetime = (limits.ttl + limits.stale_if_error).max(Duration::from_millis(1));
        Self {
            limits,
            cache_control: limits.cache_control(),
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
        }
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    /// `CacheLimits::cache_control`, made once.
    pub fn cache_control(&self) -> &HeaderValue {
        &self.cache_control
    }

    pub fn enabled(&self) -> bool {
        !self.limits.ttl.is_zero()
    }

    /// The generation of `credential`'s list pages.
    pub fn generation(&self, credential: CredentialId) -> u64 {
        self.generations.get_with(credential, || {
            self.next_generation.fetch_add(1, Ordering::Relaxed)
        })
    }

    /// Makes every list page of `credential` cached so far unreachable.
    pub fn forget_lists(&self, credential: CredentialId) {
        let next = self.next_generation.fetch_add(1, Ordering::Relaxed);
        self.generations.insert(credential, next);
    }

    pub fn get(&self, key: &ReadKey) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    /// Keeps `entry` unless the cache already holds a newer answer for `key` (an update
    /// that finished while this read was under way).
    pub fn put(&self, key: ReadKey, entry: Arc<Entry>) {
        if !self.enabled() {
            return;
        }
        self.entries
            .entry(key)
            .and_compute_with(|current| match current {
                Some(current) if current.value().fetched_at > entry.fetched_at => Op::Nop,
                _ => Op::Put(entry),
            });
    }

    pub fn forget(&self, key: &ReadKey) {
        self.entries.invalidate(key);
    }

    pub fn is_fresh(&self, entry: &Entry) -> bool {
        entry.age() < self.limits.ttl
    }

    /// Whether `entry` may still stand in for an answer Qpien cannot give.
    pub fn may_serve_stale(&self, entry: &Entry) -> bool {
        entry.age() < self.limits.ttl + self.limits.stale_if_error
    }
}

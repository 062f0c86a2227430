//! The read layer, between the routes and the upstream client: a read is answered from
//! the cache while fresh, else by one flight to Qpien shared by every identical read
//! under way, else (when Qpien cannot answer) from a stale entry. Updates go through
//! here too, so the cache never shows a caller older data than its own write.
//!
//! Everything is keyed by the caller's `CredentialId`: one credential's answers are
//! never served to another.

pub mod cache;
mod coalesce;
pub mod etag;

use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use serde::Serialize;
use tokio::time::Instant;

use self::cache::{CacheLimits, Entry, Read, ReadCache, ReadKey};
use self::coalesce::{Flights, Role};
use self::etag::{Condition, ETag};
use crate::domain::{ConversationId, ConversationPatch, ListQuery};
use crate::metrics::Metrics;
use crate::state::redis::RedisState;
use crate::upstream::{BudgetWait, Credential, QpienClient, UpstreamError};

/// Whether a cached answer may be used as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Yes, while it is fresh.
    Cached,
    /// No: the caller asked (`Cache-Control: no-cache`) for Qpien's answer.
    Revalidate,
}

/// An answer and where it came from.
pub struct Served {
    pub entry: Arc<Entry>,
    pub source: Source,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// From the cache, fresh.
    Hit,
    /// From Qpien, by a flight this request started.
    Miss,
    /// From Qpien, by a flight another request had started.
    Coalesced,
    /// From the cache, past its freshness, because Qpien could not answer.
    Stale(StaleReason),
}

/// Why a stale answer was served: the `detail` of `Cache-Status`, and Qpien's HTTP
/// status when it answered one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleReason {
    pub detail: &'static str,
    pub upstream_status: Option<u16>,
}

impl StaleReason {
    /// The failures a stale answer may hide: Qpien out of reach, failing or limiting, or
    /// our own budget or breaker holding calls back. Never an answer about the caller
    /// (a refused token, a missing scope, a missing conversation).
    fn of(error: &UpstreamError) -> Option<Self> {
        let (detail, upstream_status) = match error {
            UpstreamError::RateLimited { .. } => ("upstream-rate-limited", Some(429)),
            UpstreamError::BudgetExhausted { .. } => ("budget-exhausted", None),
            UpstreamError::CircuitOpen { .. } => ("circuit-open", None),
            UpstreamError::Timeout => ("upstream-timeout", None),
            UpstreamError::Unreachable(_) => ("upstream-unreachable", None),
            UpstreamError::BadStatus { status } => ("upstream-error", Some(*status)),
            UpstreamError::InvalidResponse(_) => ("upstream-invalid-answer", None),
            _ => return None,
        };
        Some(Self {
            detail,
            upstream_status,
        })
    }
}

/// Why an update was not made.
#[derive(Debug)]
pub enum UpdateError {
    Upstream(UpstreamError),
    /// `If-Match` named no tag of the conversation as Qpien has it; its current tag.
    PreconditionFailed(ETag),
}

impl From<UpstreamError> for UpdateError {
    fn from(error: UpstreamError) -> Self {
        Self::Upstream(error)
    }
}

type Answer = Result<Arc<Entry>, UpstreamError>;

/// Updates of one conversation run one at a time; ids share these locks by hash.
const UPDATE_LOCKS: usize = 64;

pub struct Reads {
    client: Arc<QpienClient>,
    cache: Arc<ReadCache>,
    flights: Flights<ReadKey, Answer>,
    update_locks: Box<[tokio::sync::Mutex<()>]>,
    metrics: Arc<Metrics>,
}

impl Reads {
    /// `shared`: the Redis the replicas share their cache through, if any.
    pub fn new(
        client: Arc<QpienClient>,
        limits: CacheLimits,
        shared: Option<Arc<RedisState>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            cache: Arc::new(ReadCache::new(limits, shared)),
            flights: Flights::new(),
            update_locks: (0..UPDATE_LOCKS).map(|_| Default::default()).collect(),
            metrics,
        }
    }

    pub fn client(&self) -> &QpienClient {
        &self.client
    }

    pub fn limits(&self) -> CacheLimits {
        self.cache.limits()
    }

    /// The `Cache-Control` of every read's answer.
    pub fn cache_control(&self) -> &actix_web::http::header::HeaderValue {
        self.cache.cache_control()
    }

    pub async fn conversation(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        freshness: Freshness,
    ) -> Result<Served, UpstreamError> {
        let read = Read::Conversation(id.clone());
        self.read(credential, request_id, read, freshness).await
    }

    /// A page; its entry's JSON is the `items` array.
    pub async fn list(
        &self,
        credential: &Credential,
        request_id: &str,
        query: &ListQuery,
        freshness: Freshness,
    ) -> Result<Served, UpstreamError> {
        let read = Read::List {
            query: query.clone(),
            generation: self.cache.generation(credential.id()).await,
        };
        self.read(credential, request_id, read, freshness).await
    }

    async fn read(
        &self,
        credential: &Credential,
        request_id: &str,
        read: Read,
        freshness: Freshness,
    ) -> Result<Served, UpstreamError> {
        let kind = read.kind();
        let key = ReadKey {
            credential: credential.id(),
            read,
        };
        // A cache that is off holds nothing: no lookup.
        let cached = if self.cache.enabled() {
            self.cache.get(&key).await
        } else {
            None
        };
        if let Some(entry) = &cached
            && freshness == Freshness::Cached
            && self.cache.is_fresh(entry)
        {
            self.metrics.read(kind, "hit");
            return Ok(Served {
                entry: Arc::clone(entry),
                source: Source::Hit,
            });
        }
        let stale = cached.filter(|entry| self.cache.may_serve_stale(entry));
        // With a stale answer at hand, a read does not queue for budget: it gets that
        // answer now rather than a fresh one a second later.
        let wait = if stale.is_some() {
            BudgetWait::No
        } else {
            BudgetWait::Allowed
        };
        let had = stale.as_ref().map(|entry| entry.fetched_at);
        let (flight, role) = self.flights.join(&key, || {
            self.fetch(key.clone(), credential, request_id, wait)
                .shared(had)
        });
        match (flight.await, stale) {
            (Ok(entry), _) => {
                let source = match role {
                    Role::Leader => Source::Miss,
                    Role::Follower => Source::Coalesced,
                };
                self.metrics.read(kind, source.label());
                Ok(Served { entry, source })
            }
            (Err(error), Some(entry)) if StaleReason::of(&error).is_some() => {
                let reason = StaleReason::of(&error).expect("checked");
                self.metrics.read(kind, "stale");
                Ok(Served {
                    entry,
                    source: Source::Stale(reason),
                })
            }
            (Err(error), _) => Err(error),
        }
    }

    fn fetch(
        &self,
        key: ReadKey,
        credential: &Credential,
        request_id: &str,
        wait: BudgetWait,
    ) -> Fetch {
        Fetch {
            client: Arc::clone(&self.client),
            cache: Arc::clone(&self.cache),
            key,
            credential: credential.clone(),
            request_id: request_id.to_owned(),
            wait,
        }
    }

    /// Applies `patch` under `condition` (`If-Match`), one update of a conversation at a
    /// time in this process. A list of tags is checked against the conversation as Qpien
    /// has it now, read afresh (never from the cache, nor from a read already under way,
    /// which may have started before an earlier update landed).
    pub async fn update(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        patch: &ConversationPatch,
        condition: Option<&Condition>,
    ) -> Result<Arc<Entry>, UpdateError> {
        let lock = &self.update_locks[BuildHasherDefault::<std::hash::DefaultHasher>::default()
            .hash_one(id) as usize
            % UPDATE_LOCKS];
        let _one_at_a_time = lock.lock().await;
        let Some(redis) = self.cache.shared_even_uncached() else {
            return self
                .update_alone(credential, request_id, id, patch, condition)
                .await;
        };
        // And one at a time across replicas, while Redis answers.
        let holder = format!("{:016x}", fastrand::u64(..));
        let hold = self.client.timeout();
        let until = Instant::now() + hold;
        while redis.take_update(id.as_str(), &holder, hold).await == Some(false) {
            if Instant::now() >= until {
                return Err(UpstreamError::Timeout.into());
            }
            tokio::time::sleep(FLIGHT_POLL).await;
        }
        let result = self
            .update_alone(credential, request_id, id, patch, condition)
            .await;
        redis.end_update(id.as_str(), &holder).await;
        result
    }

    /// `update` once this is the only update of `id` under way.
    async fn update_alone(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        patch: &ConversationPatch,
        condition: Option<&Condition>,
    ) -> Result<Arc<Entry>, UpdateError> {
        let key = ReadKey {
            credential: credential.id(),
            read: Read::Conversation(id.clone()),
        };
        if let Some(condition @ Condition::Tags(_)) = condition {
            let current = self
                .fetch(key.clone(), credential, request_id, BudgetWait::Allowed)
                .run()
                .await;
            match current {
                Ok(entry) if condition.matches(entry.etag) => {}
                Ok(entry) => return Err(UpdateError::PreconditionFailed(entry.etag)),
                // A missing conversation is a 404 with or without If-Match: RFC 9110
                // §13.2.1 has preconditions ignored when the answer would not be 2xx.
                Err(error) => return Err(error.into()),
            }
        }
        let result = self
            .client
            .update_conversation(credential, request_id, id, patch)
            .await;
        match result {
            Ok(conversation) => {
                let entry = Arc::new(Entry::new(to_json(&conversation), 0, Instant::now()));
                self.cache.put(key, Arc::clone(&entry)).await;
                self.cache.forget_lists(credential.id()).await;
                Ok(entry)
            }
            Err(error) => {
                // Qpien may have applied an update whose answer was lost: keep nothing
                // that could be older than it.
                if error.is_upstream_fault() {
                    self.cache.forget(&key).await;
                    self.cache.forget_lists(credential.id()).await;
                }
                Err(error.into())
            }
        }
    }
}

/// One read of Qpien for a key: what it needs to run in a task of its own.
struct Fetch {
    client: Arc<QpienClient>,
    cache: Arc<ReadCache>,
    key: ReadKey,
    credential: Credential,
    request_id: String,
    wait: BudgetWait,
}

/// How often a replica waiting on another's flight looks for its answer.
const FLIGHT_POLL: Duration = Duration::from_millis(25);

impl Fetch {
    /// Qpien's answer for the key, kept in the cache. With Redis, a replica that finds
    /// another replica's flight for the same answer waits for it (`had`: the answer it
    /// already holds, which does not count) instead of asking again.
    async fn shared(self, had: Option<Instant>) -> Answer {
        let Some(redis) = self.cache.shared() else {
            return self.run().await;
        };
        let name = self.key.name();
        let holder = format!("{:016x}", fastrand::u64(..));
        let hold = self.client.timeout();
        match redis.take_flight(&name, &holder, hold).await {
            Some(true) => {
                let cache = Arc::clone(&self.cache);
                let answer = self.run().await;
                if let Some(redis) = cache.shared() {
                    redis.land_flight(&name, &holder).await;
                }
                answer
            }
            Some(false) => match self.other_flight(&name, had, hold).await {
                Some(entry) => Ok(entry),
                None => self.run().await,
            },
            None => self.run().await,
        }
    }

    /// The answer another replica's flight stores, or `None` when it ends without one.
    async fn other_flight(
        &self,
        name: &str,
        had: Option<Instant>,
        hold: Duration,
    ) -> Option<Arc<Entry>> {
        let until = Instant::now() + hold;
        while Instant::now() < until {
            tokio::time::sleep(FLIGHT_POLL).await;
            let redis = self.cache.shared()?;
            if let Some(entry) = self.cache.get(&self.key).await
                && had.is_none_or(|had| entry.fetched_at > had)
            {
                return Some(entry);
            }
            if redis.flight_under_way(name).await != Some(true) {
                return None;
            }
        }
        None
    }

    /// One call to Qpien, its answer kept in the cache.
    async fn run(self) -> Answer {
        let Self {
            client,
            cache,
            key,
            credential,
            request_id,
            wait,
        } = self;
        let asked_at = Instant::now();
        let entry = match &key.read {
            Read::Conversation(id) => {
                let conversation = client
                    .get_conversation(&credential, &request_id, id, wait)
                    .await?;
                Entry::new(to_json(&conversation), 0, asked_at)
            }
            Read::List { query, .. } => {
                let page = client
                    .list_conversations(&credential, &request_id, query, wait)
                    .await?;
                Entry::new(to_json(&page.items), page.total_items, asked_at)
            }
        };
        let entry = Arc::new(entry);
        cache.put(key, Arc::clone(&entry)).await;
        Ok(entry)
    }
}

fn to_json(value: &impl Serialize) -> Bytes {
    // A conversation is about a kilobyte: one allocation rather than a few reallocations.
    let mut json = Vec::with_capacity(1024);
    serde_json::to_writer(&mut json, value).expect("the representation serialises");
    Bytes::from(json)
}

impl Read {
    fn kind(&self) -> &'static str {
        match self {
            Read::Conversation(_) => "conversation",
            Read::List { .. } => "list",
        }
    }
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Hit => "hit",
            Source::Miss => "miss",
            Source::Coalesced => "coalesced",
            Source::Stale(_) => "stale",
        }
    }
}

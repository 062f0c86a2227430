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

use actix_web::web::Bytes;
use serde::Serialize;
use tokio::time::Instant;

use self::cache::{CacheLimits, Entry, Read, ReadCache, ReadKey};
use self::coalesce::{Flights, Role};
use self::etag::{Condition, ETag};
use crate::domain::{ConversationId, ConversationPatch, ListQuery};
use crate::metrics::Metrics;
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
    /// `If-Match` named no tag of the conversation as Qpien has it; its current tag,
    /// if it exists.
    PreconditionFailed(Option<ETag>),
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
    pub fn new(client: Arc<QpienClient>, limits: CacheLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            cache: Arc::new(ReadCache::new(limits)),
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
            generation: self.cache.generation(credential.id()),
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
        let cached = self.cache.enabled().then(|| self.cache.get(&key)).flatten();
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
        let (flight, role) = self.flights.join(&key, || {
            fetch(
                Arc::clone(&self.client),
                Arc::clone(&self.cache),
                key.clone(),
                credential.clone(),
                request_id.to_owned(),
                wait,
            )
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
        let key = ReadKey {
            credential: credential.id(),
            read: Read::Conversation(id.clone()),
        };
        if let Some(condition @ Condition::Tags(_)) = condition {
            let current = fetch(
                Arc::clone(&self.client),
                Arc::clone(&self.cache),
                key.clone(),
                credential.clone(),
                request_id.to_owned(),
                BudgetWait::Allowed,
            )
            .await;
            match current {
                Ok(entry) if condition.matches(entry.etag) => {}
                Ok(entry) => return Err(UpdateError::PreconditionFailed(Some(entry.etag))),
                Err(UpstreamError::NotFound { .. }) => {
                    return Err(UpdateError::PreconditionFailed(None));
                }
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
                self.cache.put(key, Arc::clone(&entry));
                self.cache.forget_lists(credential.id());
                Ok(entry)
            }
            Err(error) => {
                // Qpien may have applied an update whose answer was lost: keep nothing
                // that could be older than it.
                if error.is_upstream_fault() {
                    self.cache.forget(&key);
                    self.cache.forget_lists(credential.id());
                }
                Err(error.into())
            }
        }
    }
}

/// One call to Qpien for `key`, its answer kept in the cache. `'static`, as it runs in
/// a task of its own.
async fn fetch(
    client: Arc<QpienClient>,
    cache: Arc<ReadCache>,
    key: ReadKey,
    credential: Credential,
    request_id: String,
    wait: BudgetWait,
) -> Answer {
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
    cache.put(key, Arc::clone(&entry));
    Ok(entry)
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

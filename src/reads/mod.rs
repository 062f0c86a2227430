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
mod fetch;
pub mod invalidate;
mod locks;
mod update;

use std::sync::Arc;

use self::cache::{CacheLimits, Entry, Looked, Read, ReadCache, ReadKey};
use self::coalesce::{Flights, Role};
use self::fetch::Fetch;
use self::invalidate::{Changed, Epoch};
use self::locks::KeyedLocks;
use crate::domain::{ConversationId, ListQuery};
use crate::metrics::Metrics;
use crate::state::redis::RedisState;
use crate::upstream::{BudgetWait, Credential, CredentialId, QpienClient, UpstreamError};

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
    const BUDGET_EXHAUSTED: Self = Self {
        detail: "budget-exhausted",
        upstream_status: None,
    };

    /// The failures a stale answer may hide: Qpien out of reach, failing or limiting, or
    /// our own budget or breaker holding calls back. Never an answer about the caller
    /// (a refused token, a missing scope, a missing conversation).
    fn of(error: &UpstreamError) -> Option<Self> {
        let (detail, upstream_status) = match error {
            UpstreamError::RateLimited { .. } => ("upstream-rate-limited", Some(429)),
            UpstreamError::BudgetExhausted { .. } => return Some(Self::BUDGET_EXHAUSTED),
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

pub use update::UpdateError;

type Answer = Result<Arc<Entry>, UpstreamError>;

/// A flight answers one key, and only reads that found no change recorded against the
/// key since it started may join it.
type FlightKey = (ReadKey, u64);

/// Conversations as the routes get them: read through the cache and coalescing, and
/// updated through it too, so the cache never shows a caller older data than its own
/// write.
pub struct CachedConversations {
    client: Arc<QpienClient>,
    cache: Arc<ReadCache>,
    flights: Flights<FlightKey, Answer>,
    /// Updates of one conversation under one credential run one at a time.
    update_locks: KeyedLocks<(CredentialId, ConversationId)>,
    metrics: Arc<Metrics>,
}

impl CachedConversations {
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
            update_locks: KeyedLocks::new(),
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
        let Looked {
            entry: cached,
            now,
            level,
        } = if self.cache.enabled() {
            self.cache.get(&key).await
        } else {
            Looked {
                entry: None,
                now: Epoch::Local(0),
                level: 0,
            }
        };
        let flight = (key, level);
        if let Some(entry) = &cached
            && freshness == Freshness::Cached
            && self.cache.is_fresh(entry)
        {
            self.metrics.read(kind, "hit");
            self.client.vouch_for(credential);
            return Ok(Served {
                entry: Arc::clone(entry),
                source: Source::Hit,
            });
        }
        let stale = cached.filter(|entry| self.cache.may_serve_stale(entry));
        // With the read budget spent and no flight under way, a flight would only be
        // refused: the stale answer goes out at once, without one. This is what polling
        // costs once the budget is spent, so it should cost about what a hit does.
        if let Some(entry) = &stale
            && self.client.read_budget_spent(credential)
            && !self.flights.under_way(&flight)
        {
            self.metrics.read(kind, "stale");
            return Ok(Served {
                entry: Arc::clone(entry),
                source: Source::Stale(StaleReason::BUDGET_EXHAUSTED),
            });
        }
        // With a stale answer at hand, a read does not queue for budget: it gets that
        // answer now rather than a fresh one a second later.
        let wait = if stale.is_some() {
            BudgetWait::No
        } else {
            BudgetWait::Allowed
        };
        let had = stale.as_ref().map(|entry| entry.fetched_at);
        let (answer, role) = self.flights.join(&flight, || {
            let deadline = self.client.deadline();
            self.fetch(
                flight.0.clone(),
                credential,
                request_id,
                wait,
                now,
                deadline,
            )
            .shared(had)
        });
        match (answer.await, stale) {
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
        epoch: Epoch,
        deadline: tokio::time::Instant,
    ) -> Fetch {
        Fetch {
            client: Arc::clone(&self.client),
            cache: Arc::clone(&self.cache),
            key,
            credential: credential.clone(),
            request_id: request_id.to_owned(),
            wait,
            epoch,
            deadline,
        }
    }

    /// Records a change Qpien reported: from now on no read, on any replica reading
    /// through Redis, is answered from before it. `Err` when Redis is configured and did
    /// not take the record (the caller should have the change reported again).
    pub async fn changed(&self, changed: &Changed) -> Result<(), ()> {
        self.cache.record(changed).await
    }
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

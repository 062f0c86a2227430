//! One read of Qpien for a key, run by a flight in a task of its own; with Redis, a
//! replica that finds another replica's flight for the same answer waits for it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use serde::Serialize;
use tokio::time::Instant;

use super::Answer;
use super::cache::{Entry, Read, ReadCache, ReadKey};
use super::invalidate::Epoch;
use crate::upstream::{BudgetWait, Credential, QpienClient};

/// One read of Qpien for a key: what it needs to run in a task of its own.
pub(super) struct Fetch {
    pub client: Arc<QpienClient>,
    pub cache: Arc<ReadCache>,
    pub key: ReadKey,
    pub credential: Credential,
    pub request_id: String,
    pub wait: BudgetWait,
    /// The change sequence's number when the read looked in the cache.
    pub epoch: Epoch,
    /// By when it is over, waits for another replica's flight included.
    pub deadline: Instant,
}

/// How often a replica waiting on another's flight looks for its answer.
pub(super) const FLIGHT_POLL: Duration = Duration::from_millis(25);

impl Fetch {
    /// Qpien's answer for the key, kept in the cache. With Redis, a replica that finds
    /// another replica's flight for the same answer waits for it (`had`: the answer it
    /// already holds, which does not count) instead of asking again.
    pub async fn shared(self, had: Option<Instant>) -> Answer {
        let Some(redis) = self.cache.shared() else {
            return self.run().await;
        };
        let name = self.key.name();
        let holder = format!("{:016x}", fastrand::u64(..));
        // Held no longer than this read may take.
        let hold = self.deadline.saturating_duration_since(Instant::now());
        match redis.take_flight(&name, &holder, hold).await {
            Some(true) => {
                let cache = Arc::clone(&self.cache);
                let answer = self.run().await;
                if let Some(redis) = cache.shared() {
                    redis.land_flight(&name, &holder).await;
                }
                answer
            }
            Some(false) => match self.other_flight(&name, had).await {
                Some(entry) => Ok(entry),
                None => self.run().await,
            },
            None => self.run().await,
        }
    }

    /// The answer another replica's flight stores, or `None` when it ends without one
    /// (or the deadline comes first: the call that follows then ends at once in a 504).
    async fn other_flight(&self, name: &str, had: Option<Instant>) -> Option<Arc<Entry>> {
        while Instant::now() < self.deadline {
            tokio::time::sleep(FLIGHT_POLL).await;
            let redis = self.cache.shared()?;
            if let Some(entry) = self.cache.get(&self.key).await.entry
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
    pub async fn run(self) -> Answer {
        let Self {
            client,
            cache,
            key,
            credential,
            request_id,
            wait,
            epoch,
            deadline,
        } = self;
        let asked_at = Instant::now();
        let entry = match &key.read {
            Read::Conversation(id) => {
                let conversation = client
                    .get_conversation(&credential, &request_id, id, wait, deadline)
                    .await?;
                Entry::new(to_json(&conversation), 0, asked_at, epoch)
            }
            Read::List { query, .. } => {
                let page = client
                    .list_conversations(&credential, &request_id, query, wait, deadline)
                    .await?;
                Entry::new(to_json(&page.items), page.total_items, asked_at, epoch)
            }
        };
        let entry = Arc::new(entry);
        cache.put(key, Arc::clone(&entry)).await;
        Ok(entry)
    }
}

pub(super) fn to_json(value: &impl Serialize) -> Bytes {
    // A conversation is about a kilobyte: one allocation rather than a few reallocations.
    let mut json = Vec::with_capacity(1024);
    serde_json::to_writer(&mut json, value).expect("the representation serialises");
    Bytes::from(json)
}

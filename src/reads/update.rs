//! Updates through the read layer: one at a time per conversation (in this process, and
//! across replicas while Redis answers), `If-Match` checked against Qpien, and the cache
//! left holding nothing older than the update.

use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;

use tokio::time::Instant;

use super::cache::{Entry, Read, ReadKey};
use super::etag::{Condition, ETag};
use super::fetch::{FLIGHT_POLL, to_json};
use super::{CachedConversations, UPDATE_LOCKS};
use crate::domain::{ConversationId, ConversationPatch};
use crate::upstream::{BudgetWait, Credential, UpstreamError};

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

impl CachedConversations {
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
        // Taken before Qpien is asked: what it answers is no older than this.
        let epoch = self.cache.epoch_now().await;
        if let Some(condition @ Condition::Tags(_)) = condition {
            let current = self
                .fetch(
                    key.clone(),
                    credential,
                    request_id,
                    BudgetWait::Allowed,
                    epoch,
                )
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
                let entry = Arc::new(Entry::new(to_json(&conversation), 0, Instant::now(), epoch));
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

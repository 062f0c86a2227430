//! Updates through the read layer: one at a time per credential and conversation (in
//! this process, and across replicas while Redis answers), all by the request's
//! deadline, `If-Match` checked against Qpien, and the cache left holding nothing older
//! than the update.

use std::sync::Arc;

use tokio::time::Instant;

use super::CachedConversations;
use super::cache::{Entry, Read, ReadKey};
use super::etag::{Condition, ETag};
use super::fetch::{FLIGHT_POLL, to_json};
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
    /// Applies `patch` under `condition` (`If-Match`), one update of a conversation per
    /// credential at a time (in this process, and across replicas while Redis answers).
    /// A list of tags is checked against the conversation as Qpien has it now, read
    /// afresh (never from the cache, nor from a read already under way, which may have
    /// started before an earlier update landed).
    ///
    /// Everything, the waits for the locks included, happens by one deadline,
    /// `QPIEN_TIMEOUT_MS` from now: past it the update is a timeout, never a longer wait.
    /// The locks are per credential and conversation, so an update waits only for those
    /// of its own credential: bearers Qpien has not even seen cannot hold it back.
    pub async fn update(
        &self,
        credential: &Credential,
        request_id: &str,
        id: &ConversationId,
        patch: &ConversationPatch,
        condition: Option<&Condition>,
    ) -> Result<Arc<Entry>, UpdateError> {
        let deadline = self.client.deadline();
        let key = (credential.id(), id.clone());
        let Some(_one_at_a_time) = self.update_locks.lock(&key, deadline).await else {
            return Err(UpstreamError::Timeout.into());
        };
        let Some(redis) = self.cache.shared_even_uncached() else {
            return self
                .update_alone(credential, request_id, id, patch, condition, deadline)
                .await;
        };
        // And one at a time across replicas, while Redis answers, held no longer than
        // this update may take.
        let name = format!("{}:{id}", credential.id().to_hex());
        let holder = format!("{:016x}", fastrand::u64(..));
        loop {
            let hold = deadline.saturating_duration_since(Instant::now());
            if hold.is_zero() {
                return Err(UpstreamError::Timeout.into());
            }
            if redis.take_update(&name, &holder, hold).await != Some(false) {
                break;
            }
            tokio::time::sleep(FLIGHT_POLL.min(hold)).await;
        }
        let result = self
            .update_alone(credential, request_id, id, patch, condition, deadline)
            .await;
        redis.end_update(&name, &holder).await;
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
        deadline: Instant,
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
                    deadline,
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
            .update_conversation(credential, request_id, id, patch, deadline)
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

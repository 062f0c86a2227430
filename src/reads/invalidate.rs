//! Exact invalidation, in O(1) whatever the number of cached answers or credentials.
//!
//! Every change the facade is told of (a verified Qpien webhook delivery) takes the next
//! number of a sequence and records it against what it touched: the conversation it
//! names (or everything, when it names none) and every list, whose order and filters
//! any change can affect. Each cached answer carries the sequence number that was current
//! when the read that made it looked in the cache, before Qpien was asked. An answer is
//! usable only while its number is at least the last change recorded against it, so an
//! answer that Qpien gave before a change, even one whose flight landed after it, is
//! never served again, for any credential, not even as a stale answer.
//!
//! With Redis the sequence and the records live there (`state::shared_reads`), read in
//! the same round trip as the answer itself, so a change recorded by one replica holds
//! on every replica before the receiver answers Qpien. This file is the in-process half,
//! used without Redis and by a replica that cannot reach it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::notification::RemovalCause;

use crate::domain::ConversationId;

/// The sequence an entry's number was taken from: Redis's, or this process's while it
/// has no Redis. Numbers of the two never meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epoch {
    Shared(u64),
    Local(u64),
}

/// What a change touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// One conversation (and so every list).
    Conversation(ConversationId),
    /// Anything: a change whose conversation is not known.
    Everything,
}

/// The in-process record of changes.
pub struct Invalidations {
    sequence: AtomicU64,
    everything: AtomicU64,
    lists: AtomicU64,
    conversations: moka::sync::Cache<ConversationId, u64>,
    /// The highest number of a record dropped for room before it expired: every
    /// conversation counts as changed at least then, so a dropped record never lets an
    /// older answer back.
    dropped: Arc<AtomicU64>,
}

impl Invalidations {
    /// `lifetime`: the longest any cached answer is kept; a record outlives it.
    pub fn new(lifetime: Duration, capacity: u64) -> Self {
        let dropped = Arc::new(AtomicU64::new(0));
        let floor = Arc::clone(&dropped);
        Self {
            sequence: AtomicU64::new(0),
            everything: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            conversations: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(lifetime + Duration::from_secs(1))
                .eviction_listener(move |_, number: u64, cause| {
                    if cause == RemovalCause::Size {
                        floor.fetch_max(number, Ordering::AcqRel);
                    }
                })
                .build(),
            dropped,
        }
    }

    /// The current number, for an answer about to be asked of Qpien.
    pub fn now(&self) -> u64 {
        self.sequence.load(Ordering::Acquire)
    }

    /// The last change recorded against a conversation.
    pub fn of_conversation(&self, id: &ConversationId) -> u64 {
        let own = self.conversations.get(id).unwrap_or(0);
        own.max(self.everything.load(Ordering::Acquire))
            .max(self.dropped.load(Ordering::Acquire))
    }

    /// The last change recorded against the lists.
    pub fn of_lists(&self) -> u64 {
        self.lists
            .load(Ordering::Acquire)
            .max(self.everything.load(Ordering::Acquire))
    }

    /// Records a change; its number.
    pub fn record(&self, changed: &Changed) -> u64 {
        let number = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        match changed {
            Changed::Conversation(id) => {
                self.conversations
                    .entry(id.clone())
                    .and_upsert_with(|current| current.map_or(number, |c| number.max(*c.value())));
            }
            Changed::Everything => {
                self.everything.fetch_max(number, Ordering::AcqRel);
            }
        }
        self.lists.fetch_max(number, Ordering::AcqRel);
        number
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ConversationId {
        ConversationId::parse(&format!("6650a10000000000000000{n:02x}")).unwrap()
    }

    #[test]
    fn a_change_outdates_answers_about_its_conversation_and_every_list_only() {
        let changes = Invalidations::new(Duration::from_secs(60), 100);
        let before = changes.now();

        changes.record(&Changed::Conversation(id(1)));

        assert!(changes.of_conversation(&id(1)) > before);
        assert!(changes.of_lists() > before);
        assert!(changes.of_conversation(&id(2)) <= before);
        assert!(changes.of_conversation(&id(1)) <= changes.now());
    }

    #[test]
    fn a_change_of_unknown_scope_outdates_everything() {
        let changes = Invalidations::new(Duration::from_secs(60), 100);
        let before = changes.now();

        changes.record(&Changed::Everything);

        assert!(changes.of_conversation(&id(7)) > before);
        assert!(changes.of_lists() > before);
    }

    #[test]
    fn a_record_dropped_for_room_outdates_every_conversation_older_than_it() {
        let changes = Invalidations::new(Duration::from_secs(60), 4);
        let before = changes.now();
        for n in 0..64 {
            changes.record(&Changed::Conversation(id(n)));
        }
        changes.conversations.run_pending_tasks();

        // Whichever records moka kept or dropped, no conversation reads as unchanged.
        for n in 0..64 {
            assert!(changes.of_conversation(&id(n)) > before, "conversation {n}");
        }
    }
}

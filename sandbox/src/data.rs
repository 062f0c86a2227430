//! The sandbox's conversations: a deterministic demo seed and the in-memory store the
//! resolvers read and change.
//!
//! Everything is derived from the conversation's index with simple arithmetic and a fixed
//! base date, so every run (and every test) sees the same data, and the seed covers every
//! status × priority pair, every conversation type, starred and unstarred, and several
//! channel kinds.

use std::sync::Mutex;

use async_graphql::ID;
use chrono::{DateTime, Duration, Utc};

use super::types::{
    ChannelTypeEnum, ChannelTypeOutput, ConversationListFilterInput, ConversationStatusEnum,
    ConversationTypeEnum, Date, ExternalConversation, LastMessageType, Tag, TicketPriority,
    UpdateConversationInput,
};

pub(crate) const CONVERSATION_COUNT: usize = 72;
/// The tenant every seeded conversation belongs to.
pub(crate) const CUSTOMER_ID: &str = "6650a0000000000000000001";
/// Last messages are spread over the three weeks before this instant (not "now", so
/// that the data does not depend on when it is seeded).
const BASE_DATE: &str = "2026-11-01T12:00:00Z";

const STATUSES: [ConversationStatusEnum; 4] = [
    ConversationStatusEnum::Open,
    ConversationStatusEnum::Pending,
    ConversationStatusEnum::Resolved,
    ConversationStatusEnum::Closed,
];
const PRIORITIES: [TicketPriority; 4] = [
    TicketPriority::Low,
    TicketPriority::Medium,
    TicketPriority::High,
    TicketPriority::Urgent,
];
const TYPES: [ConversationTypeEnum; 3] = [
    ConversationTypeEnum::Direct,
    ConversationTypeEnum::Group,
    ConversationTypeEnum::Channel,
];
const TAGS: [(&str, &str); 6] = [
    ("vip", "#D4AF37"),
    ("billing", "#1E88E5"),
    ("bug", "#E53935"),
    ("refund", "#FB8C00"),
    ("onboarding", "#43A047"),
    ("feature-request", "#8E24AA"),
];
const CHANNELS: [(ChannelTypeEnum, &str); 6] = [
    (ChannelTypeEnum::Whatsapp, "+90 555 010 00 01"),
    (ChannelTypeEnum::Email, "support@demo-shop.example"),
    (ChannelTypeEnum::LiveChat, "demo-shop.example live chat"),
    (ChannelTypeEnum::Instagram, "@demoshop"),
    (ChannelTypeEnum::Messenger, "Demo Shop"),
    (ChannelTypeEnum::Telegram, "@demoshop_bot"),
];
const MESSAGES: [&str; 8] = [
    "Hi, where is my order?",
    "Can I get a refund for order #1042?",
    "The app crashes when I open the cart.",
    "Thanks, that solved it!",
    "Could you add dark mode?",
    "How do I invite my team?",
    "My invoice shows the wrong VAT number.",
    "We will get back to you within the day.",
];

/// A 24-hex-digit id (MongoDB ObjectId-like): a 6-digit prefix naming the kind of
/// object, then the number.
pub(crate) fn object_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:018x}")
}

/// The seeded agents (joined persons) are numbered from 1 to this.
pub(crate) const AGENT_COUNT: usize = 3;

/// The id of agent `n` (from 1).
pub(crate) fn agent_id(n: usize) -> String {
    object_id("6650a3", n)
}

pub(crate) fn is_object_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn tag_catalogue() -> Vec<Tag> {
    TAGS.iter()
        .enumerate()
        .map(|(i, (name, color))| Tag {
            id: ID(object_id("6650a2", i + 1)),
            name: (*name).to_owned(),
            color: Some((*color).to_owned()),
        })
        .collect()
}

fn channel(k: usize) -> ChannelTypeOutput {
    let (channel_type, name) = CHANNELS[k % CHANNELS.len()];
    ChannelTypeOutput {
        id: ID(object_id("6650a4", k % CHANNELS.len() + 1)),
        name: Some(name.to_owned()),
        channel_type,
    }
}

fn seed_conversation(i: usize, catalogue: &[Tag], base: DateTime<Utc>) -> ExternalConversation {
    let kind = TYPES[i % TYPES.len()];
    // Offsets chosen so the attributes do not all move in lockstep with the index.
    let tag_count = (i * 5 + i / 6) % 4;
    let tags = (0..tag_count)
        .map(|k| Some(catalogue[(i + k * 2) % catalogue.len()].clone()))
        .collect();
    let primary = (i + i / 6) % CHANNELS.len();
    let mut channels = vec![Some(channel(primary))];
    if i % 4 == 1 {
        channels.push(Some(channel(primary + 1)));
    }
    let sent_at = base - Duration::hours(7 * i as i64) - Duration::minutes(((i * 13) % 60) as i64);
    let content = if i % 13 == 5 {
        String::new()
    } else {
        MESSAGES[i % MESSAGES.len()].to_owned()
    };
    ExternalConversation {
        id: ID(object_id("6650a1", i + 1)),
        customer: Some(ID(CUSTOMER_ID.to_owned())),
        joined_person: (i % 6 != 5).then(|| ID(agent_id(i % AGENT_COUNT + 1))),
        joined_c_person: Some(ID(object_id("6650a6", i + 1))),
        is_starred: Some(i.is_multiple_of(5) || i % 7 == 3),
        status: Some(STATUSES[i % STATUSES.len()]),
        is_group_or_channel: Some(kind != ConversationTypeEnum::Direct),
        last_message: Some(LastMessageType {
            id: ID(object_id("6650a5", i + 1)),
            content: Some(content),
            channel_type: Some(CHANNELS[primary].0),
            is_incoming: Some(i % 3 != 2),
            created_at: Some(Date(sent_at)),
        }),
        last_received_message_channel: Some(channel(primary).id),
        tags: Some(tags),
        channels: Some(channels),
        kind: Some(kind),
        priority: Some(PRIORITIES[(i / STATUSES.len()) % PRIORITIES.len()]),
    }
}

/// Why a store operation was refused; mapped to GraphQL error codes by the schema.
#[derive(Debug)]
pub(crate) enum StoreError {
    NotFound,
    BadInput(String),
}

/// A conversation as an update left it, and whether another person joined it.
pub(crate) struct Updated {
    pub conversation: ExternalConversation,
    pub joined: bool,
}

/// The conversations of one sandbox instance.
pub(crate) struct Store {
    tags: Vec<Tag>,
    conversations: Mutex<Vec<ExternalConversation>>,
}

fn has_tag(c: &ExternalConversation, name: &str) -> bool {
    c.tags.iter().flatten().flatten().any(|t| t.name == name)
}

fn matches(c: &ExternalConversation, f: &ConversationListFilterInput) -> bool {
    f.status.is_none_or(|s| c.status == Some(s))
        && f.priority.is_none_or(|p| c.priority == Some(p))
        && f.is_starred.is_none_or(|s| c.is_starred == Some(s))
        && f.kind.is_none_or(|k| c.kind == Some(k))
        && f.tag_name.as_deref().is_none_or(|n| has_tag(c, n))
}

fn checked_id(id: &ID, what: &str) -> Result<String, StoreError> {
    if is_object_id(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(StoreError::BadInput(format!(
            "{what} must be 24 hexadecimal digits"
        )))
    }
}

impl Store {
    pub(crate) fn seeded() -> Self {
        let base = DateTime::parse_from_rfc3339(BASE_DATE)
            .expect("BASE_DATE is a valid RFC 3339 constant")
            .with_timezone(&Utc);
        let tags = tag_catalogue();
        let conversations = (0..CONVERSATION_COUNT)
            .map(|i| seed_conversation(i, &tags, base))
            .collect();
        Self {
            tags,
            conversations: Mutex::new(conversations),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ExternalConversation>> {
        // A panic elsewhere cannot leave a conversation half-written, so the data stays usable.
        self.conversations.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &ID) -> Result<ExternalConversation, StoreError> {
        let id = checked_id(id, "conversationId")?;
        self.lock()
            .iter()
            .find(|c| c.id.0 == id)
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    /// One page of the matching conversations, and how many match in all.
    pub(crate) fn list(
        &self,
        filter: &ConversationListFilterInput,
        page: i32,
        limit: i32,
    ) -> Result<(Vec<ExternalConversation>, usize), StoreError> {
        if page < 1 {
            return Err(StoreError::BadInput("page must be at least 1".to_owned()));
        }
        if !(1..=100).contains(&limit) {
            return Err(StoreError::BadInput(
                "limit must be between 1 and 100".to_owned(),
            ));
        }
        let mut found: Vec<ExternalConversation> = self
            .lock()
            .iter()
            .filter(|c| matches(c, filter))
            .cloned()
            .collect();
        let sent_at = |c: &ExternalConversation| c.last_message.as_ref().and_then(|m| m.created_at);
        found.sort_by(|a, b| {
            sent_at(b)
                .cmp(&sent_at(a))
                .then_with(|| a.id.0.cmp(&b.id.0))
        });
        let total = found.len();
        let (page, limit) = (page as usize, limit as usize);
        let skip = (page - 1).saturating_mul(limit);
        let conversations = found.into_iter().skip(skip).take(limit).collect();
        Ok((conversations, total))
    }

    /// Applies `input` to the conversation, all or nothing, and returns it as updated.
    pub(crate) fn update(
        &self,
        id: &ID,
        input: &UpdateConversationInput,
    ) -> Result<Updated, StoreError> {
        let id = checked_id(id, "conversationId")?;
        let bad = |m: &str| Err(StoreError::BadInput(m.to_owned()));
        let unset = input.unset_joined_person == Some(true);
        if input.status.is_none()
            && input.is_starred.is_none()
            && input.priority.is_none()
            && input.tag_names.is_none()
            && input.joined_person.is_none()
            && input.unset_joined_person.is_none()
        {
            return bad("input must set at least one field");
        }
        if unset && input.joined_person.is_some() {
            return bad("joinedPerson and unsetJoinedPerson cannot be combined");
        }
        let joined = match &input.joined_person {
            Some(p) => Some(checked_id(p, "joinedPerson")?),
            None => None,
        };
        // Resolve every tag before touching the conversation, so an unknown name changes nothing.
        let tags = match &input.tag_names {
            None => None,
            Some(names) => {
                let mut tags: Vec<Option<Tag>> = Vec::new();
                for name in names {
                    let Some(tag) = self.tags.iter().find(|t| &t.name == name) else {
                        return Err(StoreError::BadInput(format!("unknown tag name: {name}")));
                    };
                    if !tags.iter().flatten().any(|t| t.id == tag.id) {
                        tags.push(Some(tag.clone()));
                    }
                }
                Some(tags)
            }
        };

        let mut conversations = self.lock();
        let c = conversations
            .iter_mut()
            .find(|c| c.id.0 == id)
            .ok_or(StoreError::NotFound)?;
        if let Some(status) = input.status {
            c.status = Some(status);
        }
        if let Some(starred) = input.is_starred {
            c.is_starred = Some(starred);
        }
        if let Some(priority) = input.priority {
            c.priority = Some(priority);
        }
        if tags.is_some() {
            c.tags = tags;
        }
        let mut newly_joined = false;
        if let Some(person) = joined {
            newly_joined = c.joined_person.as_ref().is_none_or(|p| p.0 != person);
            c.joined_person = Some(ID(person));
        }
        if unset {
            c.joined_person = None;
        }
        Ok(Updated {
            conversation: c.clone(),
            joined: newly_joined,
        })
    }

    /// Applies `change` to the conversation at `index` (in seed order) and returns it as
    /// changed; None past the last one.
    pub(crate) fn change_at(
        &self,
        index: usize,
        change: impl FnOnce(&mut ExternalConversation),
    ) -> Option<ExternalConversation> {
        let mut conversations = self.lock();
        let c = conversations.get_mut(index)?;
        change(c);
        Some(c.clone())
    }
}

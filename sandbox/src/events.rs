//! The events the sandbox reports to registered webhooks, and their payloads, exactly as
//! the facade assumes Qpien sends them (`/work/notes/qpien-webhook-contract.md`, and
//! "What we assume about Qpien" in the facade's documentation):
//!
//! `{"_id": <24 hex>, "event": <type>, "createdAt": <RFC 3339, ms, UTC>, "data": {...}}`,
//! serialised once as compact JSON; those bytes are what every delivery and retry sends
//! and what the signature covers.

use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::web::Bytes;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::types::{ChannelTypeEnum, Date, ExternalConversation};

/// The event types the sandbox emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEvent {
    /// A customer wrote (the activity generator).
    NewIncomingMessage,
    /// An agent wrote (the activity generator).
    NewOutgoingMessage,
    /// An agent joined a conversation (the activity generator, or `updateConversation`
    /// setting `joinedPerson` to another person).
    JoinConversation,
    /// A conversation changed through the GraphQL API (`updateConversation`).
    ConversationUpdated,
}

impl WebhookEvent {
    /// Every type, in the order of the contract.
    pub const ALL: [WebhookEvent; 4] = [
        Self::NewIncomingMessage,
        Self::NewOutgoingMessage,
        Self::JoinConversation,
        Self::ConversationUpdated,
    ];

    /// The name on the wire and in registrations, e.g. `"JOIN_CONVERSATION"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewIncomingMessage => "NEW_INCOMING_MESSAGE",
            Self::NewOutgoingMessage => "NEW_OUTGOING_MESSAGE",
            Self::JoinConversation => "JOIN_CONVERSATION",
            Self::ConversationUpdated => "CONVERSATION_UPDATED",
        }
    }

    /// The type of a wire name; `None` for a name the sandbox does not emit.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, ready to send: its id and the exact body bytes.
#[derive(Debug)]
pub(crate) struct Event {
    pub id: String,
    pub kind: WebhookEvent,
    pub body: Bytes,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "_id")]
    id: &'a str,
    event: &'static str,
    #[serde(rename = "createdAt")]
    created_at: String,
    data: Value,
}

/// Gives each event a distinct 24-hex-digit id (MongoDB ObjectId-like: the time in
/// seconds, then a counter that starts at a random point so two sandboxes differ).
pub(crate) struct EventIds(AtomicU64);

impl EventIds {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(fastrand::u64(..) >> 1))
    }

    pub(crate) fn next_object_id(&self) -> String {
        let secs = Utc::now().timestamp().clamp(0, i64::from(u32::MAX)) as u32;
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("{secs:08x}{n:016x}")
    }

    /// The event, with its envelope and body serialised once.
    pub(crate) fn event(&self, kind: WebhookEvent, data: Value) -> Event {
        let id = self.next_object_id();
        let envelope = Envelope {
            id: &id,
            event: kind.as_str(),
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            data,
        };
        // Serialising a struct of strings and a Value cannot fail.
        let body = serde_json::to_vec(&envelope).expect("an event serialises");
        Event {
            id,
            kind,
            body: Bytes::from(body),
        }
    }
}

/// `CONVERSATION_UPDATED`: the whole conversation, with the field names and values
/// `getConversation` answers.
pub(crate) fn conversation_updated(conversation: &ExternalConversation) -> Value {
    json!({ "conversation": conversation })
}

/// `JOIN_CONVERSATION`: the conversation's id and the person who joined.
pub(crate) fn join_conversation(conversation: &ExternalConversation) -> Value {
    json!({ "conversation": {
        "_id": conversation.id,
        "joinedPerson": conversation.joined_person,
    }})
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sender {
    Customer,
    Agent,
}

/// A message written in a conversation, as `NEW_INCOMING_MESSAGE` and
/// `NEW_OUTGOING_MESSAGE` carry it.
pub(crate) struct Message<'a> {
    pub id: &'a str,
    pub conversation: &'a str,
    pub sender: Sender,
    pub channel_type: Option<ChannelTypeEnum>,
    pub content: &'a str,
    pub created_at: Date,
}

impl Message<'_> {
    pub(crate) fn kind(&self) -> WebhookEvent {
        match self.sender {
            Sender::Customer => WebhookEvent::NewIncomingMessage,
            Sender::Agent => WebhookEvent::NewOutgoingMessage,
        }
    }

    pub(crate) fn data(&self) -> Value {
        json!({ "message": {
            "_id": self.id,
            "conversation": self.conversation,
            "senderType": match self.sender {
                Sender::Customer => "CUSTOMER",
                Sender::Agent => "AGENT",
            },
            "channelType": self.channel_type,
            "content": self.content,
            "createdAt": self.created_at,
        }})
    }
}

//! The REST representation of a conversation. camelCase, `id` rather than `_id`,
//! `…Id` for references; built from the upstream shape by one conversion in
//! `upstream::wire`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::rest_enum;

rest_enum!(
    /// Status of a conversation.
    ConversationStatus {
        /// Waiting for an agent to act.
        Open = "open",
        /// Waiting for the customer to answer.
        Pending = "pending",
        /// The customer's request was dealt with.
        Resolved = "resolved",
        /// Closed; no further messages are expected.
        Closed = "closed",
    }
);

rest_enum!(
    /// Ticket priority of a conversation.
    Priority {
        /// No hurry.
        Low = "low",
        /// The default priority.
        Medium = "medium",
        /// Needs attention soon.
        High = "high",
        /// Needs attention now.
        Urgent = "urgent",
    }
);

rest_enum!(
    /// Kind of conversation.
    ConversationType {
        /// One customer and the business.
        Direct = "direct",
        /// A group chat.
        Group = "group",
        /// A broadcast channel.
        Channel = "channel",
    }
);

rest_enum!(
    /// Messaging channel kind.
    ChannelType {
        /// WhatsApp Business.
        Whatsapp = "whatsapp",
        /// E-mail.
        Email = "email",
        /// The website live-chat widget.
        LiveChat = "live_chat",
        /// Instagram direct messages.
        Instagram = "instagram",
        /// Facebook Messenger.
        Messenger = "messenger",
        /// Telegram.
        Telegram = "telegram",
    }
);

rest_enum!(
    /// Who sent a message.
    MessageDirection {
        /// From the customer to the business.
        Incoming = "incoming",
        /// From the business to the customer.
        Outgoing = "outgoing",
    }
);

/// A customer conversation: one thread with a customer across one or more channels.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    /// Id of the conversation: 24 hexadecimal digits.
    #[schema(example = "6650a1000000000000000001", pattern = "^[0-9a-f]{24}$")]
    pub id: String,
    /// Id of the Qpien customer (tenant) the conversation belongs to.
    pub customer_id: Option<String>,
    /// Id of the agent who joined the conversation, `null` when nobody has.
    pub joined_person_id: Option<String>,
    /// Id of the customer-side person currently joined.
    pub joined_customer_person_id: Option<String>,
    /// Whether the conversation is marked as important.
    pub starred: bool,
    /// Current status.
    pub status: Option<ConversationStatus>,
    /// Ticket priority.
    pub priority: Option<Priority>,
    /// Kind of conversation.
    #[serde(rename = "type")]
    pub kind: Option<ConversationType>,
    /// Whether the conversation is a group or a channel rather than a direct one.
    pub group_or_channel: bool,
    /// Tags on the conversation.
    pub tags: Vec<Tag>,
    /// Channels linked to the conversation.
    pub channels: Vec<Channel>,
    /// The last message of the conversation.
    pub last_message: Option<LastMessage>,
    /// Id of the channel the last message from the customer came in on.
    pub last_received_message_channel_id: Option<String>,
}

/// A tag on a conversation.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Id of the tag.
    pub id: String,
    /// Name of the tag, unique within the customer; what `tag` filters on and `tags` sets.
    #[schema(example = "vip")]
    pub name: String,
    /// Display colour as `#RRGGBB`.
    #[schema(example = "#d93f0b")]
    pub color: Option<String>,
}

/// A channel linked to a conversation.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// Id of the channel.
    pub id: String,
    /// Display name, e.g. the WhatsApp number or the mailbox.
    pub name: Option<String>,
    /// Kind of the channel.
    #[serde(rename = "type")]
    pub kind: ChannelType,
}

/// The last message of a conversation.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastMessage {
    /// Id of the message.
    pub id: String,
    /// Text of the message; `null` or empty for media-only messages.
    pub content: Option<String>,
    /// Channel kind the message travelled on.
    pub channel_type: Option<ChannelType>,
    /// Whether the customer or the business sent it.
    pub direction: Option<MessageDirection>,
    /// When it was sent (RFC 3339, UTC).
    pub sent_at: Option<DateTime<Utc>>,
}

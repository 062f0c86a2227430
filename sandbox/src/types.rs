//! The GraphQL types of the sandbox's schema (scalars, enums, objects, inputs) and the
//! coded errors its resolvers and its authentication report. Used by the resolvers
//! (`schema.rs`), the store (`data.rs`) and the authentication (`auth.rs`); it uses none
//! of them.
//!
//! It mirrors `src/upstream/graphql/schema.graphql`. The doc comments on the GraphQL
//! types, fields and enum items below *are* their GraphQL descriptions, so they must
//! stay word for word those of the SDL file; the schema-agreement test checks this.
//! Internal notes therefore use `//` comments. The output types also derive `Serialize`
//! with the same wire names, for the webhook payloads (a test compares the two).

use async_graphql::{
    Enum, Error, ErrorExtensions, ID, InputObject, InputValueError, InputValueResult, Scalar,
    ScalarType, SimpleObject, Value,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// A GraphQL error carrying `extensions.code`, the way Qpien reports failures.
pub(crate) fn coded_error(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message).extend_with(|_, e| e.set("code", code))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub DateTime<Utc>);

/// A calendar instant, serialised as an RFC 3339 string in UTC, e.g. "2026-11-02T09:30:00Z".
/// ASSUMPTION: the Contacts and Messages pages name a `Date` scalar; its wire format is ours.
#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => DateTime::parse_from_rfc3339(s)
                .map(|d| Date(d.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("expected an RFC 3339 date-time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.to_wire())
    }
}

impl Date {
    fn to_wire(self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Secs, true)
    }
}

// Serde (webhook payloads) writes what GraphQL answers.
impl Serialize for Date {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_wire())
    }
}

/// Status of a conversation.
/// ASSUMPTION: the members; the documentation names the enum but not its values.
#[derive(Enum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConversationStatusEnum {
    /// Waiting for an agent to act.
    Open,
    /// Waiting for the customer to answer.
    Pending,
    /// The customer's request was dealt with.
    Resolved,
    /// Closed; no further messages are expected.
    Closed,
}

/// Ticket priority of a conversation.
/// ASSUMPTION: the members.
#[derive(Enum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketPriority {
    /// No hurry.
    Low,
    /// The default priority.
    Medium,
    /// Needs attention soon.
    High,
    /// Needs attention now.
    Urgent,
}

/// Kind of conversation.
/// ASSUMPTION: the members; the documentation says "direct, group, etc.".
#[derive(Enum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConversationTypeEnum {
    /// One customer and the business.
    Direct,
    /// A group chat.
    Group,
    /// A broadcast channel.
    Channel,
}

/// Messaging channel kind.
/// ASSUMPTION: the enum and its members, from the channels Qpien advertises.
#[derive(Enum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChannelTypeEnum {
    /// WhatsApp Business.
    Whatsapp,
    /// E-mail.
    Email,
    /// The website live-chat widget.
    LiveChat,
    /// Instagram direct messages.
    Instagram,
    /// Facebook Messenger.
    Messenger,
    /// Telegram.
    Telegram,
}

/// The last message of a conversation.
/// ASSUMPTION: the fields, after the Messages module's message entity.
#[derive(SimpleObject, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LastMessageType {
    /// Id of the message.
    #[graphql(name = "_id")]
    #[serde(rename = "_id")]
    pub id: ID,
    /// Text content of the message; empty for media-only messages.
    pub content: Option<String>,
    /// Channel kind the message travelled on.
    pub channel_type: Option<ChannelTypeEnum>,
    /// Whether the message came from the customer (true) or from the business (false).
    pub is_incoming: Option<bool>,
    /// When the message was sent.
    pub created_at: Option<Date>,
}

/// A tag that can be put on conversations.
/// ASSUMPTION: the fields, after the Contacts module's tags.
#[derive(SimpleObject, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Id of the tag.
    #[graphql(name = "_id")]
    #[serde(rename = "_id")]
    pub id: ID,
    /// Name of the tag, unique within a customer.
    pub name: String,
    /// Display colour, as #RRGGBB.
    pub color: Option<String>,
}

/// A channel linked to a conversation.
/// ASSUMPTION: the fields.
#[derive(SimpleObject, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTypeOutput {
    /// Id of the channel.
    #[graphql(name = "_id")]
    #[serde(rename = "_id")]
    pub id: ID,
    /// Display name of the channel, e.g. the WhatsApp number or mailbox.
    pub name: Option<String>,
    /// Kind of the channel.
    pub channel_type: ChannelTypeEnum,
}

/// A customer conversation: one thread with a customer across one or more channels.
#[derive(SimpleObject, Serialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ExternalConversation {
    /// Unique identifier of the conversation.
    #[graphql(name = "_id")]
    #[serde(rename = "_id")]
    pub id: ID,
    /// The associated customer ID.
    pub customer: Option<ID>,
    /// The person who joined the conversation.
    pub joined_person: Option<ID>,
    /// The customer-side person currently joined.
    #[graphql(name = "joinedCPerson")]
    #[serde(rename = "joinedCPerson")]
    pub joined_c_person: Option<ID>,
    /// Whether the conversation is marked as important.
    pub is_starred: Option<bool>,
    /// Current status of the conversation.
    pub status: Option<ConversationStatusEnum>,
    /// Whether the conversation is a group/channel.
    pub is_group_or_channel: Option<bool>,
    /// The last message sent in the conversation.
    pub last_message: Option<LastMessageType>,
    /// Channel ID of the last received message.
    pub last_received_message_channel: Option<ID>,
    /// List of tags assigned to the conversation.
    pub tags: Option<Vec<Option<Tag>>>,
    /// Channels linked to the conversation.
    pub channels: Option<Vec<Option<ChannelTypeOutput>>>,
    /// Type of conversation (direct, group, etc.).
    #[graphql(name = "type")]
    #[serde(rename = "type")]
    pub kind: Option<ConversationTypeEnum>,
    /// Priority level of the conversation.
    pub priority: Option<TicketPriority>,
}

/// Filters of getConversationList; all given filters must hold.
/// ASSUMPTION: the whole input type.
#[derive(InputObject, Clone, Debug, Default)]
pub struct ConversationListFilterInput {
    /// Only conversations in this status.
    pub status: Option<ConversationStatusEnum>,
    /// Only conversations of this priority.
    pub priority: Option<TicketPriority>,
    /// Only starred (true) or only unstarred (false) conversations.
    pub is_starred: Option<bool>,
    /// Only conversations of this type.
    #[graphql(name = "type")]
    pub kind: Option<ConversationTypeEnum>,
    /// Only conversations carrying a tag of this name.
    pub tag_name: Option<String>,
}

/// One page of conversations.
/// ASSUMPTION: offset pagination by page number, as the Contacts list suggests.
#[derive(SimpleObject, Clone, Debug)]
pub struct ConversationListOutput {
    /// The conversations of this page, most recent last message first.
    pub conversations: Vec<ExternalConversation>,
    /// Number of conversations matching the filter, over all pages.
    pub total_count: i32,
    /// The page returned, from 1.
    pub page: i32,
    /// The page size used.
    pub limit: i32,
}

/// Fields of a conversation that can be changed; a field left out is not changed.
/// ASSUMPTION: the whole input type.
#[derive(InputObject, Clone, Debug, Default)]
pub struct UpdateConversationInput {
    /// New status.
    pub status: Option<ConversationStatusEnum>,
    /// New starred flag.
    pub is_starred: Option<bool>,
    /// New priority.
    pub priority: Option<TicketPriority>,
    /// Replaces the conversation's tags by the tags of these names; each must exist for the customer.
    pub tag_names: Option<Vec<String>>,
    /// Agent to join to the conversation.
    pub joined_person: Option<ID>,
    /// Set to true to remove the joined agent; cannot be combined with joinedPerson.
    pub unset_joined_person: Option<bool>,
}

/// An access token returned by generateOAuthToken.
/// ASSUMPTION: the fields; the documentation says only that a token is valid for one hour.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "OAuthToken")]
pub struct OAuthToken {
    /// The bearer token to send as `Authorization: Bearer <accessToken>`.
    pub access_token: String,
    /// Always "Bearer".
    pub token_type: String,
    /// Lifetime of the token in seconds from now (3600 on Qpien).
    pub expires_in: i32,
    /// Scopes the token carries, e.g. read_conversations.
    pub scopes: Vec<String>,
}

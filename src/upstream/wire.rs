//! Qpien's wire shapes (as `graphql/schema.graphql` assumes them) and the one explicit
//! conversion each way: facade values into GraphQL variables, GraphQL data into the REST
//! representation. Unknown enum members and malformed ids from upstream are contract
//! violations (502), not silently passed on.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::UpstreamError;
use crate::domain::{
    Channel, ChannelType, Conversation, ConversationFilter, ConversationPatch, ConversationStatus,
    ConversationType, LastMessage, MessageDirection, Priority, Tag,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireConversation {
    #[serde(rename = "_id")]
    id: String,
    customer: Option<String>,
    joined_person: Option<String>,
    #[serde(rename = "joinedCPerson")]
    joined_c_person: Option<String>,
    is_starred: Option<bool>,
    status: Option<String>,
    is_group_or_channel: Option<bool>,
    last_message: Option<WireLastMessage>,
    last_received_message_channel: Option<String>,
    tags: Option<Vec<Option<WireTag>>>,
    channels: Option<Vec<Option<WireChannel>>>,
    #[serde(rename = "type")]
    kind: Option<String>,
    priority: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLastMessage {
    #[serde(rename = "_id")]
    id: String,
    content: Option<String>,
    channel_type: Option<String>,
    is_incoming: Option<bool>,
    created_at: Option<String>,
}

#[derive(Deserialize)]
struct WireTag {
    #[serde(rename = "_id")]
    id: String,
    name: String,
    color: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireChannel {
    #[serde(rename = "_id")]
    id: String,
    name: Option<String>,
    channel_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireConversationList {
    pub conversations: Vec<WireConversation>,
    pub total_count: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireToken {
    pub access_token: String,
    pub expires_in: i64,
}

/// Upstream enum spellings: SCREAMING_SNAKE_CASE of ours.
fn upstream_name(rest: &str) -> String {
    rest.to_ascii_uppercase()
}

fn from_upstream<T>(
    field: &str,
    value: Option<String>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, UpstreamError> {
    value
        .map(|v| {
            parse(&v.to_ascii_lowercase()).map_err(|_| {
                UpstreamError::InvalidResponse(format!("unknown {field} value {v:?} from upstream"))
            })
        })
        .transpose()
}

impl TryFrom<WireConversation> for Conversation {
    type Error = UpstreamError;

    fn try_from(w: WireConversation) -> Result<Self, Self::Error> {
        let tags = w.tags.unwrap_or_default().into_iter().flatten();
        let channels = w.channels.unwrap_or_default().into_iter().flatten();
        Ok(Conversation {
            id: w.id,
            customer_id: w.customer,
            joined_person_id: w.joined_person,
            joined_customer_person_id: w.joined_c_person,
            starred: w.is_starred.unwrap_or(false),
            status: from_upstream("status", w.status, ConversationStatus::parse)?,
            priority: from_upstream("priority", w.priority, Priority::parse)?,
            kind: from_upstream("type", w.kind, ConversationType::parse)?,
            group_or_channel: w.is_group_or_channel.unwrap_or(false),
            tags: tags
                .map(|t| Tag {
                    id: t.id,
                    name: t.name,
                    color: t.color,
                })
                .collect(),
            channels: channels
                .map(|c| {
                    let kind =
                        from_upstream("channelType", Some(c.channel_type), ChannelType::parse)?;
                    Ok(Channel {
                        id: c.id,
                        name: c.name,
                        kind: kind.expect("Some in, Some out"),
                    })
                })
                .collect::<Result<_, UpstreamError>>()?,
            last_message: w.last_message.map(LastMessage::try_from).transpose()?,
            last_received_message_channel_id: w.last_received_message_channel,
        })
    }
}

impl TryFrom<WireLastMessage> for LastMessage {
    type Error = UpstreamError;

    fn try_from(m: WireLastMessage) -> Result<Self, Self::Error> {
        let sent_at = m
            .created_at
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        UpstreamError::InvalidResponse(format!("invalid Date {s:?} from upstream"))
                    })
            })
            .transpose()?;
        Ok(LastMessage {
            id: m.id,
            content: m.content,
            channel_type: from_upstream("channelType", m.channel_type, ChannelType::parse)?,
            direction: m.is_incoming.map(|incoming| {
                if incoming {
                    MessageDirection::Incoming
                } else {
                    MessageDirection::Outgoing
                }
            }),
            sent_at,
        })
    }
}

/// A conversation as a Qpien webhook payload carries it (the shape `getConversation`
/// answers), in the REST representation; `None` when it is not one.
pub fn conversation_from_payload(value: &Value) -> Option<Conversation> {
    let wire = WireConversation::deserialize(value).ok()?;
    Conversation::try_from(wire).ok()
}

/// A message as a Qpien webhook payload carries it (`_id`, `content`, `channelType`,
/// `senderType`, `createdAt`), as the REST `LastMessage`; `None` when it is not one.
pub fn message_from_payload(value: &Value) -> Option<LastMessage> {
    let wire = WireLastMessage {
        id: value["_id"].as_str()?.to_owned(),
        content: value["content"].as_str().map(str::to_owned),
        channel_type: value["channelType"].as_str().map(str::to_owned),
        is_incoming: value["senderType"]
            .as_str()
            .map(|sender| sender.eq_ignore_ascii_case("CUSTOMER")),
        created_at: value["createdAt"].as_str().map(str::to_owned),
    };
    LastMessage::try_from(wire).ok()
}

/// `ConversationListFilterInput`, or null when no filter is set.
pub fn filter_variables(filter: &ConversationFilter) -> Value {
    let mut input = Map::new();
    if let Some(v) = filter.status {
        input.insert("status".into(), upstream_name(v.as_str()).into());
    }
    if let Some(v) = filter.priority {
        input.insert("priority".into(), upstream_name(v.as_str()).into());
    }
    if let Some(v) = filter.starred {
        input.insert("isStarred".into(), v.into());
    }
    if let Some(v) = filter.kind {
        input.insert("type".into(), upstream_name(v.as_str()).into());
    }
    if let Some(v) = &filter.tag {
        input.insert("tagName".into(), v.clone().into());
    }
    if input.is_empty() {
        Value::Null
    } else {
        Value::Object(input)
    }
}

/// `UpdateConversationInput`: only the members the patch sets.
pub fn update_input(patch: &ConversationPatch) -> Value {
    let mut input = Map::new();
    if let Some(v) = patch.status {
        input.insert("status".into(), upstream_name(v.as_str()).into());
    }
    if let Some(v) = patch.starred {
        input.insert("isStarred".into(), v.into());
    }
    if let Some(v) = patch.priority {
        input.insert("priority".into(), upstream_name(v.as_str()).into());
    }
    if let Some(tags) = &patch.tags {
        input.insert("tagNames".into(), json!(tags));
    }
    match &patch.joined_person_id {
        Some(Some(person)) => {
            input.insert("joinedPerson".into(), person.as_str().into());
        }
        Some(None) => {
            input.insert("unsetJoinedPerson".into(), true.into());
        }
        None => {}
    }
    Value::Object(input)
}

//! The durable change feed (issue 18): every change the facade learns of, as one
//! [`Event`] in an append-only log that catch-up reads, live streams and triggers read
//! without a Qpien call. One store is chosen at start-up: an embedded SQLite file
//! (`state::sqlite`, one replica) or a Redis stream shared by every replica
//! (`state::streams`). Either way an event is acknowledged only once it is durable, and
//! live subscribers only ever see acknowledged events.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::settings::Settings;
use crate::state::redis::RedisState;
use crate::state::sqlite::SqliteLog;
use crate::state::streams::StreamLog;

/// An event's id, which is also the cursor to resume after it. Opaque to callers;
/// within one log, later events have greater ids, as strings too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// A cursor as a caller sent it; each store checks it is one of its own.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The cursor before the oldest event the log still keeps: a reader that asks after it
/// gets everything kept, and is never told it is gone.
pub const EARLIEST: &str = "0";

/// What happened, in the facade's words: a small set that stays stable whatever Qpien
/// adds; Qpien's own type is kept beside it in [`Event::qpien_type`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventKind {
    /// The conversation's fields changed (a `PATCH` through the facade, or Qpien's
    /// `CONVERSATION_UPDATED`).
    #[serde(rename = "conversation.updated")]
    Updated,
    /// A contact wrote into the conversation (`NEW_INCOMING_MESSAGE`).
    #[serde(rename = "conversation.message_received")]
    MessageReceived,
    /// An agent or a bot wrote into it (`NEW_OUTGOING_MESSAGE`).
    #[serde(rename = "conversation.message_sent")]
    MessageSent,
    /// Someone joined it (`JOIN_CONVERSATION`).
    #[serde(rename = "conversation.joined")]
    Joined,
    /// Qpien reported a change of a type the facade does not know.
    #[serde(rename = "conversation.changed")]
    Changed,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Updated,
        EventKind::MessageReceived,
        EventKind::MessageSent,
        EventKind::Joined,
        EventKind::Changed,
    ];

    /// Its name on the wire, e.g. `conversation.updated`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Updated => "conversation.updated",
            EventKind::MessageReceived => "conversation.message_received",
            EventKind::MessageSent => "conversation.message_sent",
            EventKind::Joined => "conversation.joined",
            EventKind::Changed => "conversation.changed",
        }
    }

    /// The kind named `name` on the wire; `None` for any other name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The kind of a Qpien webhook event type; unknown or missing types are `Changed`.
    pub fn from_qpien(qpien_type: Option<&str>) -> Self {
        match qpien_type {
            Some("CONVERSATION_UPDATED") => EventKind::Updated,
            Some("NEW_INCOMING_MESSAGE") => EventKind::MessageReceived,
            Some("NEW_OUTGOING_MESSAGE") => EventKind::MessageSent,
            Some("JOIN_CONVERSATION") => EventKind::Joined,
            _ => EventKind::Changed,
        }
    }
}

/// One change of a conversation, as the change feed, the event stream and the triggers
/// show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "00000000000000000042",
    "type": "conversation.message_received",
    "qpienType": "NEW_INCOMING_MESSAGE",
    "occurredAt": "2026-12-02T07:30:00.123Z",
    "conversationId": "6650a1000000000000000001",
    "data": {"message": {"id": "6650f1000000000000000001", "content": "Hello!",
        "channelType": "whatsapp", "direction": "incoming", "sentAt": "2026-12-02T07:30:00.120Z"}}
}))]
pub struct Event {
    /// The event's id, which is also the cursor to read after it (`after`, or SSE's
    /// `Last-Event-ID`). Opaque; later events have greater ids.
    #[schema(value_type = String, example = "00000000000000000042")]
    pub id: Cursor,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Qpien's own event type when Qpien reported the change (its webhook), `null` for an
    /// update made through this service.
    #[schema(example = "NEW_INCOMING_MESSAGE")]
    pub qpien_type: Option<String>,
    /// When it happened (RFC 3339, milliseconds, UTC).
    #[serde(with = "rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: DateTime<Utc>,
    /// The conversation it happened to; `null` when Qpien's report named none.
    #[schema(example = "6650a1000000000000000001")]
    pub conversation_id: Option<String>,
    /// What the service knew of it without asking Qpien, in the REST representation:
    /// `conversation` (the whole conversation, as `GET /conversations/{id}` shows it,
    /// after an update), `message` (as a conversation's `lastMessage`, for messages),
    /// `joinedPersonId` (for joins). Members it does not know are left out.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// An event before the log gives it its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub qpien_type: Option<String>,
    #[serde(with = "rfc3339_ms")]
    pub occurred_at: DateTime<Utc>,
    pub conversation_id: Option<String>,
    pub data: serde_json::Value,
}

impl NewEvent {
    /// The event as stored under `id`: its time to the millisecond, as it reads back.
    pub fn with_id(self, id: Cursor) -> Event {
        Event {
            id,
            kind: self.kind,
            qpien_type: self.qpien_type,
            occurred_at: self.occurred_at.trunc_subsecs(3),
            conversation_id: self.conversation_id,
            data: self.data,
        }
    }
}

/// Which events a reader wants: any of `types` (all when empty), of one conversation
/// or of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    pub types: Vec<EventKind>,
    pub conversation_id: Option<String>,
}

impl Filter {
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.kind))
            && self
                .conversation_id
                .as_ref()
                .is_none_or(|id| event.conversation_id.as_ref() == Some(id))
    }
}

/// A catch-up read's answer: events oldest first, and where to resume. `next` can move
/// on even when `events` is empty (events that did not match the filter were passed).
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub events: Vec<Event>,
    pub next: Cursor,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Events after this cursor have been pruned (or it is not from this log): the
    /// reader must start again from now, without a cursor.
    #[error("the cursor is older than the log's retention, or not from this log")]
    Gone,
    /// The store did not answer; nothing was appended or read.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
}

/// How the log could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
#[error("the event log cannot be opened: {0}")]
pub struct OpenError(pub String);

/// How many events a live subscriber may fall behind before it is told it lagged (and
/// should catch up from the durable log with its last cursor).
const LIVE_CAPACITY: usize = 1_024;

/// How often the background task prunes events older than the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The event log, over the store chosen at start-up.
pub struct EventLog {
    store: Store,
    live: broadcast::Sender<Event>,
}

enum Store {
    Sqlite(SqliteLog),
    Redis(StreamLog),
}

impl EventLog {
    /// The log of `settings`: in Redis when `redis` is given (`REDIS_URL`), else in
    /// `DATA_DIR/events.sqlite3`. Starts the background pruning (and, with Redis, the
    /// tail of other replicas' appends); must be called within the Tokio runtime.
    pub async fn open(
        settings: &Settings,
        redis: Option<Arc<RedisState>>,
    ) -> Result<Arc<Self>, OpenError> {
        let retention = settings.event_log.retention;
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let store = match (redis, &settings.redis) {
            (Some(redis), Some(redis_settings)) => {
                Store::Redis(StreamLog::open(redis, redis_settings, retention, live.clone()).await?)
            }
            _ => {
                let path = settings.data_dir.join("events.sqlite3");
                Store::Sqlite(SqliteLog::open(&path, retention, live.clone())?)
            }
        };
        let log = Arc::new(Self { store, live });
        tokio::spawn(prune_in_background(Arc::downgrade(&log)));
        Ok(log)
    }

    /// Records `event`; the answer comes once it is durable.
    pub async fn append(&self, event: NewEvent) -> Result<Event, LogError> {
        match &self.store {
            Store::Sqlite(log) => log.append(event).await,
            Store::Redis(log) => log.append(event).await,
        }
    }

    /// Up to `limit` events after `cursor` that match `filter`, oldest first. Without a
    /// cursor: no events and the current cursor, so a reader starts from now.
    pub async fn after(
        &self,
        cursor: Option<&Cursor>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Page, LogError> {
        let Some(cursor) = cursor else {
            return Ok(Page {
                events: Vec::new(),
                next: self.latest().await?,
            });
        };
        let limit = limit.max(1);
        match &self.store {
            Store::Sqlite(log) => log.after(cursor, filter, limit).await,
            Store::Redis(log) => log.after(cursor, filter, limit).await,
        }
    }

    /// The cursor of the latest event appended (on any replica, with Redis).
    pub async fn latest(&self) -> Result<Cursor, LogError> {
        match &self.store {
            Store::Sqlite(log) => Ok(log.latest()),
            Store::Redis(log) => log.latest().await,
        }
    }

    /// Every event appended from now on, as soon as it is durable (with Redis, those of
    /// every replica). A receiver that lags gets `RecvError::Lagged` and should catch up
    /// with `after` from the last id it saw.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Removes events older than the retention now; the count removed (approximate with
    /// Redis). The background task calls it every minute.
    pub async fn prune(&self) -> Result<u64, LogError> {
        match &self.store {
            Store::Sqlite(log) => log.prune().await,
            Store::Redis(log) => log.prune().await,
        }
    }
}

async fn prune_in_background(log: std::sync::Weak<EventLog>) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let Some(log) = log.upgrade() else { return };
        if let Err(error) = log.prune().await {
            tracing::warn!(%error, "the event log could not be pruned; trying again in a minute");
        }
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-12-02T08:00:00.000Z`.
mod rfc3339_ms {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_shown_in_camel_case_with_its_documented_type_and_a_millisecond_time() {
        let at = DateTime::parse_from_rfc3339("2026-12-02T08:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = NewEvent {
            kind: EventKind::from_qpien(Some("NEW_INCOMING_MESSAGE")),
            qpien_type: Some("NEW_INCOMING_MESSAGE".into()),
            occurred_at: at,
            conversation_id: Some("6650a1000000000000000001".into()),
            data: serde_json::json!({"text": "hi"}),
        }
        .with_id(Cursor::new("00000000000000000007"));

        let json = serde_json::to_value(&event).unwrap();

        assert_eq!(
            json,
            serde_json::json!({
                "id": "00000000000000000007",
                "type": "conversation.message_received",
                "qpienType": "NEW_INCOMING_MESSAGE",
                "occurredAt": "2026-12-02T08:00:00.123Z",
                "conversationId": "6650a1000000000000000001",
                "data": {"text": "hi"}
            })
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back.kind, EventKind::MessageReceived);
    }

    #[test]
    fn every_kind_reads_back_from_its_name_and_unknown_qpien_types_are_changes() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert_eq!(EventKind::parse("conversation.deleted"), None);
        assert_eq!(EventKind::from_qpien(Some("TAG_ADDED")), EventKind::Changed);
        assert_eq!(EventKind::from_qpien(None), EventKind::Changed);
        assert_eq!(
            EventKind::from_qpien(Some("JOIN_CONVERSATION")),
            EventKind::Joined
        );
    }

    #[tokio::test]
    async fn without_a_cursor_a_reader_starts_from_now_and_then_sees_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            data_dir: dir.path().join("data"),
            ..Settings::default()
        };
        let log = EventLog::open(&settings, None).await.unwrap();
        let new = |n: u64| NewEvent {
            kind: EventKind::Updated,
            qpien_type: None,
            occurred_at: Utc::now(),
            conversation_id: None,
            data: serde_json::json!({ "n": n }),
        };
        log.append(new(0)).await.unwrap();
        let mut live = log.subscribe();

        let start = log.after(None, &Filter::default(), 10).await.unwrap();
        let appended = log.append(new(1)).await.unwrap();
        let page = log
            .after(Some(&start.next), &Filter::default(), 10)
            .await
            .unwrap();

        assert!(start.events.is_empty());
        assert_eq!(page.events, vec![appended.clone()]);
        assert_eq!(live.recv().await.unwrap(), appended);
        assert!(dir.path().join("data/events.sqlite3").exists());
    }
}

//! `GET /events`: the change feed as a live stream of Server-Sent Events. A stream first
//! catches up from the durable log (after `Last-Event-ID`, or `after`), then follows the
//! log's live feed, so a reconnect, even to another replica, misses nothing. An idle
//! stream sends a comment every `EVENT_STREAM_HEARTBEAT_SECS`. Each caller key may hold
//! `EVENT_STREAMS_PER_KEY` streams open on one replica.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_web::http::header::{self, HeaderName};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, web};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Caller;
use super::changes::{FeedQuery, StreamParams, offered, query_pairs};
use super::registry::STREAM_EVENTS;
use crate::error::ApiError;
use crate::events::log::{Cursor, Event, EventLog, Filter};
use crate::metrics::Metrics;
use crate::settings::EventLogSettings;

/// Events read from the log at a time while a stream catches up.
const CATCH_UP_PAGE: usize = 200;
/// What a browser's `EventSource` waits before reconnecting, in milliseconds.
const RECONNECT_MS: u32 = 2_000;
/// Live events whose SSE message is kept for the streams that have yet to send it.
const RENDERED: usize = 64;

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Becomes `true` when the service stops: every stream ends then, so that its client
/// reconnects (to another replica) rather than hold the shutdown up.
pub struct StreamsClosing(pub watch::Receiver<bool>);

/// The streams open per caller key on this replica, against the limit, and the live
/// events' messages they share.
pub struct StreamSlots {
    limit: u32,
    open: Mutex<HashMap<String, u32>>,
    metrics: Arc<Metrics>,
    /// The latest live events' SSE messages, oldest first. Every stream sends the same
    /// bytes for an event, so one renders them and the others share them (`Bytes` is
    /// reference-counted): with a thousand streams, serialising each event once per
    /// stream was a large part of the facade's CPU (bench/feed.sh).
    rendered: Mutex<VecDeque<(Cursor, Bytes)>>,
}

impl StreamSlots {
    pub fn new(limit: u32, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::new(HashMap::new()),
            metrics,
            rendered: Mutex::new(VecDeque::with_capacity(RENDERED)),
        })
    }

    /// `event`'s SSE message, rendered by the first stream that sends it.
    fn message(&self, event: &Event) -> Bytes {
        let mut rendered = self.rendered.lock().expect("never poisoned");
        if let Some((_, bytes)) = rendered.iter().rev().find(|(id, _)| *id == event.id) {
            return bytes.clone();
        }
        let bytes = message(event);
        if rendered.len() == RENDERED {
            rendered.pop_front();
        }
        rendered.push_back((event.id.clone(), bytes.clone()));
        bytes
    }

    /// A slot for one more stream of `holder`, or 429 when it has all it may.
    fn take(self: &Arc<Self>, holder: String) -> Result<Slot, ApiError> {
        let mut open = self
            .open
            .lock()
            .expect("never poisoned: no panic while held");
        let count = open.entry(holder.clone()).or_default();
        if *count >= self.limit {
            self.metrics.event_streams_refused.inc();
            return Err(ApiError::TooManyStreams(self.limit));
        }
        *count += 1;
        self.metrics.event_streams.inc();
        Ok(Slot {
            slots: self.clone(),
            holder,
        })
    }
}

/// One open stream; dropping it (the stream ended or the client left) frees the slot.
struct Slot {
    slots: Arc<StreamSlots>,
    holder: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("never poisoned");
        if let Some(count) = open.get_mut(&self.holder) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.holder);
            }
        }
        self.slots.metrics.event_streams.dec();
    }
}

/// Stream events
///
/// The change feed, live, as Server-Sent Events (`text/event-stream`): each event is
/// one SSE message whose `id` is the event's id and whose `data` is the event as JSON
/// (the `Event` schema), with no `event` name, so `EventSource.onmessage` gets them all.
/// Filter with `types` and `conversationId`.
///
/// Resuming: a reconnecting `EventSource` sends `Last-Event-ID` by itself, and the
/// stream first replays, from the durable log, every event after it, so nothing is
/// missed across a dropped connection or a switch to another replica. `after` does the
/// same for a first connection; without either, the stream starts from now. An id older
/// than the retention is a 410 problem: connect again without one. An idle stream sends
/// a comment line every 15 seconds (`EVENT_STREAM_HEARTBEAT_SECS`).
///
/// Each caller key may hold a few streams open at once (`EVENT_STREAMS_PER_KEY`, 429
/// beyond). It never calls Qpien.
#[utoipa::path(
    tag = "Changes",
    operation_id = "streamEvents",
    params(StreamParams,
        ("Last-Event-ID" = Option<String>, Header, example = "0", description = "The id of the last event received: the stream replays every event after it first (`0`: every event the feed keeps). Browsers' `EventSource` sends it when it reconnects; it wins over `after`.")),
    responses((status = 200, description = "A stream of events, one SSE message each, until the client hangs up.",
        content_type = "text/event-stream", body = String,
        example = json!("id: 00000000000000000042\ndata: {\"id\":\"00000000000000000042\",\"type\":\"conversation.updated\",\"qpienType\":null,\"occurredAt\":\"2026-12-02T07:30:00.123Z\",\"conversationId\":\"6650a1000000000000000001\",\"data\":{}}\n\n"))),
    security(("bearer" = []), ())
)]
#[get("/events")]
pub async fn stream_events(
    req: HttpRequest,
    caller: Caller,
    log: Option<web::Data<EventLog>>,
    slots: web::Data<StreamSlots>,
    settings: web::Data<EventLogSettings>,
    closing: web::Data<StreamsClosing>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&STREAM_EVENTS)?;
    let log = offered(log)?.into_inner();
    let pairs = query_pairs(&req)?;
    let query = FeedQuery::parse(&pairs, &["types", "conversationId", "after"])
        .map_err(ApiError::InvalidParameters)?;
    let resume = req
        .headers()
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|id| {
            FeedQuery::parse(&[("after".into(), id.into())], &["after"])
                .map(|q| q.after)
                .map_err(|mut e| {
                    e[0].parameter = Some("Last-Event-ID".into());
                    ApiError::InvalidParameters(e)
                })
        })
        .transpose()?
        .flatten()
        .or(query.after);
    let holder = caller
        .key
        .as_ref()
        .map_or_else(|| "anonymous".to_owned(), |key| key.id.clone());
    let slot = slots.take(holder)?;

    // Subscribed before the first read, so nothing appended in between is missed; what
    // both see is sent once, by id.
    let live = log.subscribe();
    let first = log
        .after(resume.as_ref(), &query.filter, CATCH_UP_PAGE)
        .await?;
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + settings.heartbeat, settings.heartbeat);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Stream {
        log,
        filter: query.filter,
        catching_up: first.events.len() >= CATCH_UP_PAGE,
        last: first.next,
        pending: first.events.into(),
        live,
        heartbeat,
        greeted: false,
        closing: closing.0.clone(),
        slot,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Proxies that buffer answers (nginx) pass this one through as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::unfold(state, Stream::next)))
}

/// A stream's state between two of its chunks.
struct Stream {
    log: Arc<EventLog>,
    filter: Filter,
    /// Events read from the log and not yet sent.
    pending: VecDeque<Event>,
    /// Whether the log may hold more after `last` than was read.
    catching_up: bool,
    /// The cursor up to which the client has everything it asked for.
    last: Cursor,
    live: broadcast::Receiver<Event>,
    heartbeat: Interval,
    greeted: bool,
    closing: watch::Receiver<bool>,
    /// Freed when the stream ends; also the way to the shared messages.
    slot: Slot,
}

impl Stream {
    /// The next chunk to send; `None` ends the stream.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        if !self.greeted {
            self.greeted = true;
            let hello = format!(": qpien-rest event stream\nretry: {RECONNECT_MS}\n\n");
            return Some((Ok(Bytes::from(hello)), self));
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(message(&event)), self));
            }
            if self.catching_up {
                let page = self
                    .log
                    .after(Some(&self.last), &self.filter, CATCH_UP_PAGE)
                    .await;
                let Ok(page) = page else {
                    // The client reconnects with its last id and resumes from the log.
                    return None;
                };
                self.catching_up = page.events.len() >= CATCH_UP_PAGE;
                self.pending = page.events.into();
                self.last = page.next;
                continue;
            }
            tokio::select! {
                received = self.live.recv() => match received {
                    Ok(event) if event.id > self.last => {
                        self.last = event.id.clone();
                        if self.filter.matches(&event) {
                            let bytes = self.slot.slots.message(&event);
                            return Some((Ok(bytes), self));
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.catching_up = true,
                    Err(RecvError::Closed) => return None,
                },
                _ = self.heartbeat.tick() => {
                    return Some((Ok(Bytes::from_static(b": heartbeat\n\n")), self));
                }
                // The only change there is: the service is stopping.
                _ = self.closing.changed() => return None,
            }
        }
    }
}

/// One SSE message: the event's id, and the event as one line of JSON.
fn message(event: &Event) -> Bytes {
    let json = serde_json::to_string(event).expect("an event serialises");
    Bytes::from(format!("id: {}\ndata: {json}\n\n", event.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::log::{EventKind, NewEvent};

    fn event(n: u64) -> Event {
        NewEvent {
            kind: EventKind::Updated,
            qpien_type: None,
            occurred_at: chrono::Utc::now(),
            conversation_id: Some(format!("6650a1{n:018}")),
            data: serde_json::json!({ "n": n }),
        }
        .with_id(Cursor::new(format!("{n:020}")))
    }

    #[test]
    fn every_stream_sends_each_event_as_its_own_message_when_streams_share_them() {
        let slots = StreamSlots::new(1, Arc::new(Metrics::default()));
        let events: Vec<Event> = (1..=RENDERED as u64 + 2).map(event).collect();

        // One stream renders each event; then another sends them, newest first, so
        // that the oldest have left the shared ones by then.
        let first: Vec<Bytes> = events.iter().map(|e| slots.message(e)).collect();
        let second: Vec<Bytes> = events.iter().rev().map(|e| slots.message(e)).collect();

        for (n, event) in events.iter().enumerate() {
            let json = serde_json::to_string(event).unwrap();
            let expected = format!("id: {}\ndata: {json}\n\n", event.id);
            assert_eq!(first[n], expected.as_bytes(), "event {n}, first stream");
            assert_eq!(
                second[events.len() - 1 - n],
                expected.as_bytes(),
                "event {n}"
            );
        }
    }
}

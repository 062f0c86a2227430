//! The event log shared by every replica: one Redis stream (`<prefix>events:log`).
//! Redis gives each event its id (`<ms>-<seq>`, growing), so a cursor from one replica
//! is valid on every other. Each replica tails the stream with `XREAD BLOCK` on a
//! connection of its own (a blocked command would hold up the shared one) and feeds its
//! live subscribers from it: the events of every replica, each once, in stream order.
//! Durability is Redis's: with `appendonly yes` and `appendfsync always` an
//! acknowledged `XADD` is on disk. Pruning records the largest id it trimmed
//! (`<prefix>events:trimmed`), which tells a gone cursor from a current one exactly
//! (Redis's own `max-deleted-entry-id` counts `XDEL`, not trims). Needs Redis 6.2.
//!
//! Each entry carries the MAC of its event under the stream's key (`m`, `trust.rs`): an
//! entry without a good one (written by anyone but a replica, or junk) is skipped and
//! counted, never served nor an error for the reader.

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use tokio::sync::broadcast;

use super::redis::RedisState;
use super::trust::Rejected;
use crate::events::log::{Cursor, EARLIEST, Event, Filter, LogError, NewEvent, OpenError, Page};
use crate::settings::RedisSettings;

/// How long one `XREAD` waits for new events before it asks again.
const BLOCK: Duration = Duration::from_secs(5);
/// How long the tail waits before it reconnects after an error.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// The most events one tail read takes.
const TAIL_COUNT: usize = 512;
/// Entries a filtered read looks at per round trip, and the round trips it may make
/// before it answers with what it found (and a cursor past what it looked at).
const SCAN_BATCH: usize = 500;
const SCAN_ROUNDS: usize = 8;

/// `<ms>-<seq>` ids compared in Lua, where ids are text.
const LUA_OLDER: &str = "local function older(a, b)
   local am, as = string.match(a, '(%d+)-(%d+)')
   local bm, bs = string.match(b, '(%d+)-(%d+)')
   am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
   return am < bm or (am == bm and as < bs)
 end
";

/// In one atomic step: the largest id trimmed (KEYS[2]), the latest id given, and (when
/// ARGV[1] is a stream id) up to ARGV[2] entries after it. A missing stream has none.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "local trimmed = redis.call('GET', KEYS[2]) or '0-0'
         if redis.call('EXISTS', KEYS[1]) == 0 then return {trimmed, '0-0', {}} end
         local info = redis.call('XINFO', 'STREAM', KEYS[1])
         local last = '0-0'
         for i = 1, #info, 2 do
           if info[i] == 'last-generated-id' then last = info[i + 1] end
         end
         local entries = {}
         if ARGV[1] ~= '' then
           entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
         end
         return {trimmed, last, entries}",
    )
});

/// Trims the entries before id ARGV[1] and records the largest id trimmed in KEYS[2]
/// (never moving it back: replicas prune with their own clocks); the count trimmed.
static TRIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{LUA_OLDER}
         local newest = redis.call('XREVRANGE', KEYS[1], '(' .. ARGV[1], '-', 'COUNT', 1)
         if #newest == 0 then return 0 end
         local removed = redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
         local through = newest[1][1]
         local recorded = redis.call('GET', KEYS[2])
         if not recorded or older(recorded, through) then
           redis.call('SET', KEYS[2], through)
         end
         return removed"
    ))
});

/// One stream entry: its id and its fields (`e`, the event as JSON).
type Entry = (String, Vec<String>);

pub struct StreamLog {
    redis: Arc<RedisState>,
    key: String,
    /// The largest id pruning trimmed.
    trimmed_key: String,
    retention: Duration,
    /// The tail runs while this lives.
    alive: Arc<()>,
}

impl StreamLog {
    /// The log in `redis`; starts the tail that feeds `live`.
    pub async fn open(
        redis: Arc<RedisState>,
        settings: &RedisSettings,
        retention: Duration,
        live: broadcast::Sender<Event>,
    ) -> Result<Self, OpenError> {
        let client = redis::Client::open(settings.url.expose())
            .map_err(|e| OpenError(format!("REDIS_URL: {e}")))?;
        let log = Self {
            key: redis.key("events", "log"),
            trimmed_key: redis.key("events", "trimmed"),
            redis,
            retention,
            alive: Arc::new(()),
        };
        // The tail starts after the latest event (when Redis can say), so an append
        // acknowledged after this returns reaches subscribers.
        let from = match log.latest().await {
            Ok(latest) => stream_id(&latest).unwrap_or_else(|| "$".into()),
            Err(_) => "$".into(),
        };
        let tail = Tail {
            client,
            redis: Arc::clone(&log.redis),
            key: log.key.clone(),
            alive: Arc::downgrade(&log.alive),
            live,
        };
        tokio::spawn(tail.run(from));
        Ok(log)
    }

    pub async fn append(&self, event: NewEvent) -> Result<Event, LogError> {
        let body = serde_json::to_string(&event).map_err(|e| unavailable(&e))?;
        let tag = self.redis.tag_text(&self.key, body.as_bytes());
        let key = self.key.clone();
        let id: String = self
            .redis
            .run(|mut c| async move {
                redis::cmd("XADD")
                    .arg(key)
                    .arg("*")
                    .arg("e")
                    .arg(body)
                    .arg("m")
                    .arg(tag)
                    .query_async(&mut c)
                    .await
            })
            .await
            .ok_or_else(redis_away)?;
        let id = cursor(&id).ok_or_else(|| unavailable(&format!("XADD gave {id:?}")))?;
        Ok(event.with_id(id))
    }

    pub async fn latest(&self) -> Result<Cursor, LogError> {
        let (_, last, _) = self.read("", 0).await?;
        cursor(&last).ok_or_else(|| unavailable(&format!("a stream id {last:?}")))
    }

    pub async fn after(
        &self,
        after: &Cursor,
        filter: &Filter,
        limit: usize,
    ) -> Result<Page, LogError> {
        // From the oldest event kept: before every id, and never older than the trim.
        let earliest = after.as_str() == EARLIEST;
        let start = if earliest {
            "0-0".to_owned()
        } else {
            stream_id(after).ok_or(LogError::Gone)?
        };
        let unfiltered = *filter == Filter::default();
        let batch = if unfiltered {
            limit
        } else {
            limit.max(SCAN_BATCH)
        };
        let mut position = start;
        let mut events = Vec::new();
        for _ in 0..SCAN_ROUNDS {
            let (trimmed, last, entries) = self.read(&position, batch).await?;
            let before_trim = order(&position) < order(&trimmed) && !earliest;
            if before_trim || order(&position) > order(&last) {
                return Err(LogError::Gone);
            }
            let end_reached = entries.len() < batch;
            for (id, fields) in entries {
                position = id;
                let Some(event) = decode(&self.redis, &self.key, &position, &fields) else {
                    continue;
                };
                if filter.matches(&event) {
                    events.push(event);
                    if events.len() == limit {
                        let next = events[limit - 1].id.clone();
                        return Ok(Page { events, next });
                    }
                }
            }
            if end_reached {
                // Everything up to the latest id has been looked at.
                position = last;
                break;
            }
        }
        let next = cursor(&position).ok_or_else(|| unavailable(&position))?;
        Ok(Page { events, next })
    }

    /// Trims the entries recorded before the retention; exactly, since this runs in the
    /// background and a precise trim keeps `Gone` precise.
    pub async fn prune(&self) -> Result<u64, LogError> {
        let cutoff = chrono::Utc::now().timestamp_millis() - self.retention.as_millis() as i64;
        let keys = [self.key.clone(), self.trimmed_key.clone()];
        let removed: u64 = self
            .redis
            .run(|mut c| async move {
                TRIM.key(&keys[0])
                    .key(&keys[1])
                    .arg(format!("{}-0", cutoff.max(0)))
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .ok_or_else(redis_away)?;
        Ok(removed)
    }

    async fn read(
        &self,
        after: &str,
        count: usize,
    ) -> Result<(String, String, Vec<Entry>), LogError> {
        let keys = [self.key.clone(), self.trimmed_key.clone()];
        let after = after.to_owned();
        self.redis
            .run(|mut c| async move {
                READ.key(&keys[0])
                    .key(&keys[1])
                    .arg(after)
                    .arg(count)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .ok_or_else(redis_away)
    }
}

fn redis_away() -> LogError {
    LogError::Unavailable("Redis did not answer".into())
}

fn unavailable(why: &dyn std::fmt::Display) -> LogError {
    LogError::Unavailable(why.to_string())
}

/// `<ms>-<seq>` as numbers, so ids compare in stream order.
fn order(id: &str) -> (u64, u64) {
    id.split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)))
        .unwrap_or((0, 0))
}

/// A stream id as a cursor: both parts zero-padded (13 and 6 digits), so cursors sort
/// as strings in stream order.
fn cursor(stream_id: &str) -> Option<Cursor> {
    let (ms, seq) = stream_id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(Cursor::new(format!("{ms:013}-{seq:06}")))
}

/// The stream id a cursor names, as Redis spells it; `None` for what this log never
/// hands out.
fn stream_id(cursor: &Cursor) -> Option<String> {
    let (ms, seq) = cursor.as_str().split_once('-')?;
    let digits = |part: &str| {
        !part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(ms) || !digits(seq) {
        return None;
    }
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    Some(format!("{ms}-{seq}"))
}

/// The event of entry `id` of the stream `key`, if its MAC holds and it reads back; a
/// refusal is counted and logged, and the entry skipped.
fn decode(redis: &RedisState, key: &str, id: &str, fields: &[String]) -> Option<Event> {
    let field = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str())
    };
    let (Some(body), Some(tag)) = (field("e"), field("m")) else {
        redis.reject("event", Rejected::Unauthenticated);
        return None;
    };
    if !redis.check_text("event", key, body.as_bytes(), tag) {
        return None;
    }
    let Some(event) = serde_json::from_str::<NewEvent>(body)
        .ok()
        .zip(cursor(id))
        .map(|(event, id)| event.with_id(id))
    else {
        redis.reject("event", Rejected::Malformed);
        return None;
    };
    Some(event)
}

/// Reads every entry added to the stream, on any replica, into the live feed.
struct Tail {
    client: redis::Client,
    /// For the MAC of each entry, and to count those refused.
    redis: Arc<RedisState>,
    key: String,
    alive: Weak<()>,
    live: broadcast::Sender<Event>,
}

type XreadReply = Option<Vec<(String, Vec<Entry>)>>;

impl Tail {
    async fn run(self, mut from: String) {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(RETRY_AFTER * 4))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        let mut connection = None;
        while self.alive.strong_count() > 0 {
            if connection.is_none() {
                let connect = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config);
                match connect.await {
                    Ok(c) => connection = Some(c),
                    Err(_) => {
                        tokio::time::sleep(RETRY_AFTER).await;
                        continue;
                    }
                }
            }
            let Some(c) = connection.as_mut() else {
                continue;
            };
            let reply: redis::RedisResult<XreadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(TAIL_COUNT)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.key)
                .arg(&from)
                .query_async(c)
                .await;
            match reply {
                Ok(streams) => {
                    for (id, fields) in streams.into_iter().flatten().flat_map(|s| s.1) {
                        if let Some(event) = decode(&self.redis, &self.key, &id, &fields) {
                            let _ = self.live.send(event);
                        }
                        from = id;
                    }
                }
                Err(_) => {
                    // RedisState reports Redis's health; the tail only reconnects.
                    connection = None;
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

//! The event log of a single instance: a SQLite file (`DATA_DIR/events.sqlite3`) in WAL
//! mode. One writer thread owns the only writing connection and commits every append
//! waiting in its channel in one transaction (group commit: one fsync for many
//! appends); readers run on the blocking pool with connections of their own, which WAL
//! lets read while the writer writes. A cursor is the row's id, zero-padded to 20
//! digits so cursors sort as strings; AUTOINCREMENT keeps ids from ever being reused,
//! even once pruning has emptied the table.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use tokio::sync::{broadcast, oneshot};

use crate::events::log::{Cursor, EARLIEST, Event, Filter, LogError, NewEvent, OpenError, Page};

/// The most appends committed in one transaction.
const MAX_GROUP: usize = 256;
/// The most events one pruning transaction deletes, so appends never wait long on it.
const PRUNE_CHUNK: u64 = 10_000;
/// Reads at once, each on a connection of its own, kept open between reads.
const READERS: usize = 4;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recorded_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        conversation_id TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_conversation ON events (conversation_id, id);
    CREATE TABLE IF NOT EXISTS log_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

enum Job {
    Append(NewEvent, oneshot::Sender<Result<Event, LogError>>),
    /// Deletes up to `PRUNE_CHUNK` events recorded before the ms given.
    Prune(i64, oneshot::Sender<Result<u64, LogError>>),
}

pub struct SqliteLog {
    jobs: mpsc::Sender<Job>,
    readers: Arc<ReaderPool>,
    latest: Arc<AtomicU64>,
    retention: Duration,
}

struct ReaderPool {
    path: std::path::PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// One permit per read under way.
    busy: Arc<tokio::sync::Semaphore>,
}

impl SqliteLog {
    /// Opens (or creates) the log at `path` and starts its writer thread; appended
    /// events are also sent to `live`.
    pub fn open(
        path: &Path,
        retention: Duration,
        live: broadcast::Sender<Event>,
    ) -> Result<Self, OpenError> {
        let fail = |e: &dyn std::fmt::Display| OpenError(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let writer = Connection::open(path).map_err(|e| fail(&e))?;
        // WAL: readers never block the writer nor it them. synchronous=FULL: each commit
        // fsyncs the WAL before the append is acknowledged. NORMAL would already survive
        // a kill -9 (a committed WAL frame is in the OS's cache, which outlives the
        // process), but a power loss or kernel crash could then lose the latest commits;
        // with FULL an acknowledged event survives those too (on a disk that honours
        // fsync). Group commit spreads the one fsync over every waiting append.
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
            )
            .and_then(|()| writer.execute_batch(SCHEMA))
            .map_err(|e| fail(&e))?;
        let latest = Arc::new(AtomicU64::new(sequence(&writer).map_err(|e| fail(&e))?));
        let (jobs, queue) = mpsc::channel();
        let thread_latest = latest.clone();
        std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || write(writer, queue, thread_latest, live))
            .map_err(|e| fail(&e))?;
        Ok(Self {
            jobs,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
                busy: Arc::new(tokio::sync::Semaphore::new(READERS)),
            }),
            latest,
            retention,
        })
    }

    pub async fn append(&self, event: NewEvent) -> Result<Event, LogError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Append(event, reply))?;
        answer.await.map_err(|_| stopped())?
    }

    pub fn latest(&self) -> Cursor {
        cursor(self.latest.load(Ordering::Acquire))
    }

    pub async fn after(
        &self,
        after: &Cursor,
        filter: &Filter,
        limit: usize,
    ) -> Result<Page, LogError> {
        // `None`: from the oldest event kept.
        let after = if after.as_str() == EARLIEST {
            None
        } else {
            Some(parse(after).ok_or(LogError::Gone)?)
        };
        let filter = filter.clone();
        let readers = self.readers.clone();
        // At most `READERS` reads at once (and as many connections): more would only
        // queue inside SQLite, each on a blocking thread of its own.
        let permit = self
            .readers
            .busy
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readers.read(after, &filter, limit)
        })
        .await
        .map_err(|e| LogError::Unavailable(e.to_string()))?
    }

    pub async fn prune(&self) -> Result<u64, LogError> {
        let cutoff = chrono::Utc::now().timestamp_millis() - self.retention.as_millis() as i64;
        let mut removed = 0;
        loop {
            let (reply, answer) = oneshot::channel();
            self.send(Job::Prune(cutoff, reply))?;
            let chunk = answer.await.map_err(|_| stopped())??;
            removed += chunk;
            if chunk < PRUNE_CHUNK {
                return Ok(removed);
            }
        }
    }

    fn send(&self, job: Job) -> Result<(), LogError> {
        self.jobs.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> LogError {
    LogError::Unavailable("the event log's writer has stopped".into())
}

fn sql(error: rusqlite::Error) -> LogError {
    LogError::Unavailable(error.to_string())
}

fn cursor(id: u64) -> Cursor {
    Cursor::new(format!("{id:020}"))
}

/// The row id a cursor names; `None` for what this log never hands out.
fn parse(cursor: &Cursor) -> Option<u64> {
    let text = cursor.as_str();
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The largest id ever given, pruned or not.
fn sequence(connection: &Connection) -> rusqlite::Result<u64> {
    let seq: Option<i64> = connection
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(seq.unwrap_or(0) as u64)
}

/// The largest id pruned: a cursor before it has missed events.
fn pruned_through(connection: &Connection) -> rusqlite::Result<u64> {
    let through: Option<i64> = connection
        .query_row(
            "SELECT value FROM log_meta WHERE name = 'pruned_through'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(through.unwrap_or(0) as u64)
}

/// The writer thread: ends when the log is dropped.
fn write(
    mut connection: Connection,
    queue: mpsc::Receiver<Job>,
    latest: Arc<AtomicU64>,
    live: broadcast::Sender<Event>,
) {
    while let Ok(first) = queue.recv() {
        let mut appends = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append(event, reply) => appends.push((event, reply)),
                Job::Prune(cutoff, reply) => {
                    let _ = reply.send(prune(&mut connection, cutoff).map_err(sql));
                }
            }
            if appends.len() < MAX_GROUP {
                next = queue.try_recv().ok();
            }
        }
        if appends.is_empty() {
            continue;
        }
        let (events, replies): (Vec<_>, Vec<_>) = appends.into_iter().unzip();
        match insert(&mut connection, events) {
            Ok(stored) => {
                if let Some(last) = stored.last() {
                    latest.store(parse(&last.id).unwrap_or(0), Ordering::Release);
                }
                for (event, reply) in stored.into_iter().zip(replies) {
                    let _ = live.send(event.clone());
                    let _ = reply.send(Ok(event));
                }
            }
            Err(error) => {
                tracing::error!(%error, "events could not be appended to the event log");
                for reply in replies {
                    let _ = reply.send(Err(error.clone().into()));
                }
            }
        }
    }
}

/// Commits `events` in one transaction; they are durable when it returns.
fn insert(connection: &mut Connection, events: Vec<NewEvent>) -> Result<Vec<Event>, SqlError> {
    let now = chrono::Utc::now().timestamp_millis();
    let transaction = connection.transaction()?;
    let mut stored = Vec::with_capacity(events.len());
    {
        let mut statement = transaction.prepare_cached(
            "INSERT INTO events (recorded_ms, kind, conversation_id, body) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for event in events {
            let body = serde_json::to_string(&event).map_err(|e| SqlError(e.to_string()))?;
            statement.execute(params![
                now,
                event.kind.as_str(),
                event.conversation_id,
                body
            ])?;
            let id = cursor(transaction.last_insert_rowid() as u64);
            stored.push(event.with_id(id));
        }
    }
    transaction.commit()?;
    Ok(stored)
}

/// An append's failure, cloned to every append of its group.
#[derive(Clone, Debug)]
struct SqlError(String);

impl From<rusqlite::Error> for SqlError {
    fn from(error: rusqlite::Error) -> Self {
        Self(error.to_string())
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<SqlError> for LogError {
    fn from(error: SqlError) -> Self {
        LogError::Unavailable(error.0)
    }
}

/// Deletes the oldest events recorded before `cutoff_ms`, at most `PRUNE_CHUNK`, and
/// remembers the largest id deleted.
fn prune(connection: &mut Connection, cutoff_ms: i64) -> rusqlite::Result<u64> {
    let transaction = connection.transaction()?;
    // Ids grow with the time of recording, so the events to delete are a prefix: up to
    // the first one to keep. Finding it reads only the rows to delete (no index on time).
    let first_kept: Option<i64> = transaction
        .query_row(
            "SELECT id FROM events WHERE recorded_ms >= ?1 ORDER BY id LIMIT 1",
            [cutoff_ms],
            |row| row.get(0),
        )
        .optional()?;
    let (oldest, newest): (Option<i64>, Option<i64>) =
        transaction.query_row("SELECT min(id), max(id) FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
    let (Some(oldest), Some(newest)) = (oldest, newest) else {
        return Ok(0);
    };
    // The largest id deleted is recorded: it must be one that existed.
    let last_to_delete = first_kept.map_or(newest, |kept| kept - 1);
    let through = last_to_delete.min(oldest + PRUNE_CHUNK as i64 - 1);
    if through < oldest {
        return Ok(0);
    }
    let removed = transaction.execute("DELETE FROM events WHERE id <= ?1", [through])?;
    transaction.execute(
        "INSERT INTO log_meta (name, value) VALUES ('pruned_through', ?1)
         ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
        [through],
    )?;
    transaction.commit()?;
    Ok(removed as u64)
}

impl ReaderPool {
    fn read(&self, after: Option<u64>, filter: &Filter, limit: usize) -> Result<Page, LogError> {
        let mut connection = match self.idle.lock().expect("not poisoned").pop() {
            Some(connection) => connection,
            None => {
                let connection = Connection::open(&self.path).map_err(sql)?;
                connection
                    .execute_batch("PRAGMA busy_timeout = 5000;")
                    .map_err(sql)?;
                connection
            }
        };
        let page = page(&mut connection, after, filter, limit);
        let mut idle = self.idle.lock().expect("not poisoned");
        if idle.len() < READERS {
            idle.push(connection);
        }
        page
    }
}

/// One consistent snapshot: what was pruned, the latest id and the events after.
fn page(
    connection: &mut Connection,
    after: Option<u64>,
    filter: &Filter,
    limit: usize,
) -> Result<Page, LogError> {
    let transaction = connection.transaction().map_err(sql)?;
    let latest = sequence(&transaction).map_err(sql)?;
    let pruned = pruned_through(&transaction).map_err(sql)?;
    let after = after.unwrap_or(pruned);
    if after < pruned || after > latest {
        return Err(LogError::Gone);
    }
    let mut query = String::from("SELECT id, body FROM events WHERE id > ?");
    let mut values: Vec<rusqlite::types::Value> = vec![(after as i64).into()];
    if let Some(conversation) = &filter.conversation_id {
        query.push_str(" AND conversation_id = ?");
        values.push(conversation.clone().into());
    }
    if !filter.types.is_empty() {
        let marks = vec!["?"; filter.types.len()].join(", ");
        query.push_str(&format!(" AND kind IN ({marks})"));
        values.extend(filter.types.iter().map(|k| k.as_str().to_owned().into()));
    }
    query.push_str(" ORDER BY id LIMIT ?");
    values.push((limit as i64).into());
    let mut statement = transaction.prepare_cached(&query).map_err(sql)?;
    let rows = statement
        .query_map(params_from_iter(values), |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(sql)?;
    let mut events = Vec::new();
    for row in rows {
        let (id, body) = row.map_err(sql)?;
        let event: NewEvent = serde_json::from_str(&body)
            .map_err(|e| LogError::Unavailable(format!("event {id} does not read back: {e}")))?;
        events.push(event.with_id(cursor(id as u64)));
    }
    // A short page has seen every event up to the snapshot's latest.
    let next = match events.last() {
        Some(last) if events.len() == limit => last.id.clone(),
        _ => cursor(latest),
    };
    Ok(Page { events, next })
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;

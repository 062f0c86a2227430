//! Webhook subscriptions of a single instance: `DATA_DIR/subscriptions.sqlite3`, WAL,
//! `synchronous=FULL` (an acknowledged cursor move survives a power loss, as the event
//! log's appends do). One writer thread owns the writing connection and commits every
//! write waiting in its channel in one transaction (group commit: with many
//! subscriptions delivering at once, one fsync carries many cursor moves); reads use a
//! connection of their own on the blocking pool, which WAL lets read while it writes.

use std::path::Path;
use std::sync::{Arc, mpsc};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::events::subscriptions::{Config, DeliveryState, StoreError, Subscription};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS subscriptions (
        id TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        state TEXT NOT NULL
    );
";

/// The most writes committed in one transaction.
const MAX_GROUP: usize = 256;

/// A write: its statement, run inside the group's transaction, and what to answer once
/// the transaction is committed (or failed: the error).
type Write = Box<dyn FnOnce(&Connection) -> Reply + Send>;
type Reply = Box<dyn FnOnce(Option<&str>) + Send>;

pub struct SqliteSubscriptions {
    writes: mpsc::Sender<Write>,
    reader: Arc<tokio::sync::Mutex<Connection>>,
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open(path).map_err(failed)?;
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
        )
        .and_then(|()| connection.execute_batch(SCHEMA))
        .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
    Ok(connection)
}

impl SqliteSubscriptions {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let writer = open_connection(path)?;
        let reader = open_connection(path)?;
        let (writes, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("subscriptions-writer".into())
            .spawn(move || write(writer, queue))
            .map_err(failed)?;
        Ok(Self {
            writes,
            reader: Arc::new(tokio::sync::Mutex::new(reader)),
        })
    }

    /// Runs `statement` in the next group; answers once it is committed.
    async fn write<T: Send + 'static>(
        &self,
        statement: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Write = Box::new(move |connection| {
            let result = statement(connection);
            Box::new(move |commit_error| {
                let outcome = match (result, commit_error) {
                    (Ok(value), None) => Ok(value),
                    (Err(error), _) => Err(failed(error)),
                    (Ok(_), Some(error)) => Err(failed(error)),
                };
                let _ = reply.send(outcome);
            })
        });
        self.writes
            .send(job)
            .map_err(|_| failed("the subscriptions' writer has stopped"))?;
        answer
            .await
            .map_err(|_| failed("the subscriptions' writer has stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        // Waited for here, not on a blocking thread: a hundred delivery tasks reading at
        // once take one thread in turn, not a hundred threads blocked on a lock.
        let connection = self.reader.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || work(&connection))
            .await
            .map_err(failed)?
            .map_err(failed)
    }

    pub async fn create(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let id = subscription.config.id.clone();
        let config = to_json(&subscription.config);
        let state = to_json(&subscription.state);
        self.write(move |c| {
            c.execute(
                "INSERT INTO subscriptions (id, config, state) VALUES (?1, ?2, ?3)",
                params![id, config, state],
            )
            .map(drop)
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let id = id.to_owned();
        let row = self
            .read(move |c| {
                c.query_row(
                    "SELECT config, state FROM subscriptions WHERE id = ?1",
                    params![id],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()
            })
            .await?;
        Ok(row.and_then(|(config, state)| from_rows(&config, &state)))
    }

    pub async fn all(&self) -> Result<Vec<Subscription>, StoreError> {
        let rows = self
            .read(|c| {
                let mut statement =
                    c.prepare_cached("SELECT config, state FROM subscriptions ORDER BY id")?;
                statement
                    .query_map([], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|(config, state)| from_rows(config, state))
            .collect())
    }

    pub async fn put_config(&self, config: &Config) -> Result<bool, StoreError> {
        let (id, json) = (config.id.clone(), to_json(config));
        self.write(move |c| {
            c.execute(
                "UPDATE subscriptions SET config = ?2 WHERE id = ?1",
                params![id, json],
            )
            .map(|n| n > 0)
        })
        .await
    }

    pub async fn put_state(&self, id: &str, state: &DeliveryState) -> Result<bool, StoreError> {
        let (id, json) = (id.to_owned(), to_json(state));
        self.write(move |c| {
            c.execute(
                "UPDATE subscriptions SET state = ?2 WHERE id = ?1",
                params![id, json],
            )
            .map(|n| n > 0)
        })
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM subscriptions WHERE id = ?1", params![id])
                .map(|n| n > 0)
        })
        .await
    }
}

/// The writer thread: ends when the store is dropped.
fn write(connection: Connection, queue: mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP
            && let Ok(next) = queue.try_recv()
        {
            group.push(next);
        }
        let begun = connection.execute_batch("BEGIN IMMEDIATE");
        let replies: Vec<Reply> = group.into_iter().map(|job| job(&connection)).collect();
        let committed = begun.and_then(|()| connection.execute_batch("COMMIT"));
        let error = committed.err().map(|error| {
            let _ = connection.execute_batch("ROLLBACK");
            error.to_string()
        });
        for reply in replies {
            reply(error.as_deref());
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("a subscription serialises")
}

/// A stored row; one that does not read back (written by a later version) is skipped.
pub(crate) fn from_rows(config: &str, state: &str) -> Option<Subscription> {
    Some(Subscription {
        config: serde_json::from_str(config).ok()?,
        state: serde_json::from_str(state).ok()?,
    })
}

//! Webhook subscriptions of a single instance: `DATA_DIR/subscriptions.sqlite3`, WAL,
//! `synchronous=FULL` (an acknowledged cursor move survives a power loss, as the event
//! log's appends do). One connection behind a mutex, used on the blocking pool: the
//! writes are one small row each, far fewer than the log's.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use crate::events::subscriptions::{Config, DeliveryState, StoreError, Subscription};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS subscriptions (
        id TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        state TEXT NOT NULL
    );
";

pub struct SqliteSubscriptions {
    connection: Arc<Mutex<Connection>>,
}

fn failed(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl SqliteSubscriptions {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let connection = Connection::open(path).map_err(failed)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;",
            )
            .and_then(|()| connection.execute_batch(SCHEMA))
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection.lock().expect("not poisoned");
            work(&connection)
        })
        .await
        .map_err(failed)?
        .map_err(failed)
    }

    pub async fn create(&self, subscription: &Subscription) -> Result<(), StoreError> {
        let id = subscription.config.id.clone();
        let config = to_json(&subscription.config);
        let state = to_json(&subscription.state);
        self.with(move |c| {
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
            .with(move |c| {
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
            .with(|c| {
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
        self.with(move |c| {
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
        self.with(move |c| {
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
        self.with(move |c| {
            c.execute("DELETE FROM subscriptions WHERE id = ?1", params![id])
                .map(|n| n > 0)
        })
        .await
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

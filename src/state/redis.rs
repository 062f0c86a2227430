//! The Redis behind the shared state of several replicas: one auto-reconnecting
//! connection (redis-rs `ConnectionManager`), a short timeout on every command, and the
//! health of the link. A command that fails or times out marks Redis down; while it is
//! down nothing waits on it (callers go on with in-process state at once) and a probe
//! asks every half second until it answers again. Each change is logged once and shown
//! in `/readyz` and the `qpien_rest_redis_up` metric.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::settings::RedisSettings;

const PROBE_EVERY: Duration = Duration::from_millis(500);

static DELETE_IF_SAME: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
});

pub struct RedisState {
    connection: ConnectionManager,
    prefix: String,
    timeout: Duration,
    up: AtomicBool,
    /// When Redis came back after its latest outage; `None` before any outage, or while
    /// it is down.
    back_since: Mutex<Option<Instant>>,
    /// How many times it has gone down: an outage's number.
    outages: AtomicU64,
    metrics: Arc<Metrics>,
}

impl RedisState {
    /// Connects lazily: a Redis that is down at start-up is an outage, not a failure to
    /// start.
    pub async fn connect(
        settings: &RedisSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        crate::install_tls_provider();
        let client = redis::Client::open(settings.url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(PROBE_EVERY);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        let state = Arc::new(Self {
            connection,
            prefix: settings.key_prefix.clone(),
            timeout: settings.timeout,
            up: AtomicBool::new(true),
            back_since: Mutex::new(None),
            outages: AtomicU64::new(0),
            metrics,
        });
        if !state.ping().await {
            state.mark_down("it does not answer at start-up");
        } else {
            state.metrics.redis_up.set(1);
            tracing::info!("Redis reached; rate budget, token and read cache are shared");
        }
        tokio::spawn(probe(Arc::downgrade(&state)));
        Ok(state)
    }

    /// `<prefix><kind>:<name>`.
    pub fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// How long Redis has answered since its latest outage (`Duration::MAX` when it never
    /// had one: this replica never went on alone); `None` while it is down.
    pub fn up_for(&self) -> Option<Duration> {
        if !self.is_up() {
            return None;
        }
        let since = *self.back_since.lock().expect("not poisoned");
        Some(since.map_or(Duration::MAX, |at| at.elapsed()))
    }

    /// The number of the latest outage (0: none yet).
    pub fn outage(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// Runs `command` unless Redis is down, within the timeout; `None` when it is down,
    /// fails or is too slow (and then it is down).
    pub async fn run<T, F>(&self, command: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(self.timeout, command(self.connection.clone())).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.mark_down(&error.to_string());
                None
            }
            Err(_) => {
                self.mark_down("a command took longer than REDIS_TIMEOUT_MS");
                None
            }
        }
    }

    /// Sets `key` to `holder` for `hold` unless it is set: `Some(false)` when someone
    /// else holds it, `None` when Redis cannot say.
    pub async fn take_lock(&self, key: String, holder: &str, hold: Duration) -> Option<bool> {
        let holder = holder.to_owned();
        let taken: Option<String> = self
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(hold.as_millis().max(1) as u64)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Some(taken.is_some())
    }

    /// Deletes `key` only if it still holds `value`: a lock or a token is removed by the
    /// one that knows its value, once.
    pub async fn delete_if_same(&self, key: String, value: Vec<u8>) {
        let _: Option<u8> = self
            .run(|mut c| async move {
                DELETE_IF_SAME
                    .key(key)
                    .arg(value)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
    }

    async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        let answer: Result<redis::RedisResult<String>, _> = tokio::time::timeout(
            self.timeout,
            redis::cmd("PING").query_async(&mut connection),
        )
        .await;
        matches!(answer, Ok(Ok(_)))
    }

    fn mark_down(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.outages.fetch_add(1, Ordering::AcqRel);
            *self.back_since.lock().expect("not poisoned") = None;
            self.metrics.redis_up.set(0);
            // The error text of redis-rs names the server, never the URL's password.
            tracing::warn!(
                error = why,
                "Redis is out of reach: going on with in-process state and a share of the rate budget until it answers again"
            );
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            *self.back_since.lock().expect("not poisoned") = Some(Instant::now());
            self.metrics.redis_up.set(1);
            tracing::info!(
                "Redis answers again: rate budget, token and read cache are shared again"
            );
        }
    }
}

/// While Redis is down, asks it every `PROBE_EVERY` whether it is back; ends with the
/// application.
async fn probe(state: Weak<RedisState>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(state) = state.upgrade() else { return };
        if !state.is_up() && state.ping().await {
            state.mark_up();
        }
    }
}

//! The Redis behind the shared state of several replicas: one auto-reconnecting
//! connection (redis-rs `ConnectionManager`), a short timeout on every command, and the
//! health of the link. A command that cannot reach Redis or times out marks Redis down;
//! while it is down nothing waits on it (callers go on with in-process state at once)
//! and a probe asks every half second until it answers again. Each change is logged once
//! and shown in `/readyz` and the `qpien_rest_redis_up` metric. An answer that is only
//! about a value (of the wrong type, or that does not decode) is not an outage: the
//! value is refused and counted (`trust.rs`), and Redis stays up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::time::Instant;

use super::trust::{Rejected, ValueMac};
use crate::metrics::{Metrics, RejectedLabels};
use crate::settings::{RedisSettings, Secret};

const PROBE_EVERY: Duration = Duration::from_millis(500);

/// SET NX PX, and a lock found without expiry (no replica sets one so) taken over:
/// 1 taken, 2 taken over, 0 held by another.
static TAKE_LOCK: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
         if redis.call('PTTL', KEYS[1]) == -1 then
           redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
           return 2
         end
         return 0",
    )
});

/// Rejections logged at most this often (the metric counts every one).
const LOG_REJECTIONS_EVERY: Duration = Duration::from_secs(10);

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
    /// Authenticates the values replicas decode.
    mac: ValueMac,
    /// When a rejection was last logged.
    rejection_logged: Mutex<Option<Instant>>,
}

impl RedisState {
    /// Connects lazily: a Redis that is down at start-up is an outage, not a failure to
    /// start. `hash_secret`: the secret shared by the replicas, which keys the MAC of the
    /// values they decode.
    pub async fn connect(
        settings: &RedisSettings,
        hash_secret: &Secret,
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
            mac: ValueMac::new(hash_secret.expose()),
            rejection_logged: Mutex::new(None),
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

    /// `value` with its MAC under `key` (`ValueMac::seal`).
    pub fn seal(&self, key: &str, value: &[u8]) -> Vec<u8> {
        self.mac.seal(key, value)
    }

    /// The MAC of `value` under `key` as text, for a value kept as text beside it.
    pub fn tag_text(&self, key: &str, value: &[u8]) -> String {
        self.mac.tag_text(key, value)
    }

    /// Whether `tag` is the MAC of `value` under `key`; a refusal is counted as `kind`.
    pub fn check_text(&self, kind: &'static str, key: &str, value: &[u8], tag: &str) -> bool {
        self.mac
            .check_text(key, value, tag)
            .map_err(|reason| self.reject(kind, reason))
            .is_ok()
    }

    /// The value `seal` made for `key`; a refusal is counted as `kind`.
    pub fn open(&self, kind: &'static str, key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.mac
            .open(key, sealed)
            .map_err(|reason| self.reject(kind, reason))
            .ok()
    }

    /// Counts a value of `kind` that was not used, and logs it now and then.
    pub fn reject(&self, kind: &'static str, reason: Rejected) {
        debug_assert!(
            crate::metrics::REDIS_REJECTIONS.contains(&(kind, reason.label())),
            "({kind}, {}) is missing from REDIS_REJECTIONS",
            reason.label()
        );
        self.metrics
            .redis_values_rejected
            .get_or_create(&RejectedLabels {
                kind,
                reason: reason.label(),
            })
            .inc();
        let mut logged = self.rejection_logged.lock().expect("not poisoned");
        if logged.is_none_or(|at| at.elapsed() >= LOG_REJECTIONS_EVERY) {
            *logged = Some(Instant::now());
            tracing::warn!(
                kind,
                reason = reason.label(),
                "a value in Redis was ignored (treated as a miss): it was not written by a replica holding the shared secret, or is dated ahead, or does not decode; counted in qpien_rest_redis_values_rejected_total"
            );
        }
    }

    /// Runs `command` unless Redis is down, within the timeout; `None` when it is down,
    /// fails or is too slow (and then it is down), or when Redis refused the command for
    /// the value it found (counted as `malformed`; Redis stays up).
    pub async fn run<T, F>(&self, command: impl FnOnce(ConnectionManager) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        match tokio::time::timeout(self.timeout, command(self.connection.clone())).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) if about_a_value(&error) => {
                self.reject("reply", Rejected::Malformed);
                None
            }
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
    /// else holds it, `None` when Redis cannot say. A lock without expiry was set by no
    /// replica and would hold for ever: it is taken over.
    pub async fn take_lock(&self, key: String, holder: &str, hold: Duration) -> Option<bool> {
        let holder = holder.to_owned();
        let taken: u8 = self
            .run(|mut c| async move {
                TAKE_LOCK
                    .key(key)
                    .arg(holder)
                    .arg(hold.as_millis().max(1) as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if taken == 2 {
            self.reject("lock", Rejected::Unexpiring);
        }
        Some(taken != 0)
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

/// Whether Redis answered, but refused the command for the value it found or the reply
/// does not decode: a wrong type, not an integer, a script that met a junk value. Any
/// other failure (I/O, timeout, authentication, loading, read-only) is an outage.
fn about_a_value(error: &RedisError) -> bool {
    match error.kind() {
        // A reply that does not convert; a broken protocol stream fails the commands
        // after it with I/O errors, which do mark Redis down.
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => true,
        ErrorKind::Extension => error.code() == Some("WRONGTYPE"),
        _ => false,
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

//! A real `redis-server` (Debian's package) for the tests of shared state: started on a
//! free port of 127.0.0.1 in a directory of its own, without persistence (or with an
//! append-only file synced on every write: `start_persistent`), stopped when dropped.
//! The tests using it carry `#[cfg_attr(not(redis_server), ignore = ...)]`:
//! `build.rs` sets `redis_server` when the binary is on PATH (and fails the build in CI
//! without it), so where it is missing they are reported as ignored, never as passed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use qpien_rest::settings::{RedisSettings, Secret};

use crate::helpers::{PATIENCE, eventually};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
}

impl RedisServer {
    /// A running server. The tests that call this are ignored where `build.rs` found no
    /// `redis-server` on PATH, so here its absence is a failure.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A running server that keeps every write in its append-only file, fsynced before
    /// it answers (`appendfsync always`), as the compose and Kubernetes Redis do.
    pub async fn start_persistent() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `REDIS_URL` and its companions as the replicas of these tests share it: a key
    /// prefix of their own, and a generous timeout (on a loaded machine a 250 ms command
    /// can happen, and a replica that takes Redis for down goes on alone).
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: Secret::new(self.url()),
            key_prefix: "qpien-rest-test:".into(),
            timeout: std::time::Duration::from_secs(2),
            hash_secret: None,
        }
    }

    /// Starts it (again, after `kill`) on the same port, and waits until it answers.
    pub async fn restart(&mut self) {
        let persistence: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(persistence)
            // Redis 7 refuses DEBUG (SLEEP plays a Redis that stops answering) by default.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let what = format!("redis-server on port {} to answer", self.port);
        eventually(&what, PATIENCE, async || self.connection().await.map(drop)).await;
    }

    /// Kills it as a crash would (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let pong: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut connection).await;
        pong.ok().map(|_| connection)
    }

    /// Every key and value, as text where it is text.
    pub async fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut connection = self.connection().await.expect("Redis answers");
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut connection)
            .await
            .unwrap();
        let mut all = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap();
            let value: Vec<u8> = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
                    .unwrap(),
                _ => {
                    let fields: Vec<Vec<u8>> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut connection)
                        .await
                        .unwrap_or_default();
                    fields.concat()
                }
            };
            all.push((key, value));
        }
        all
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

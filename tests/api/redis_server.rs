//! A real `redis-server` (Debian's package) for the tests of shared state: started on a
//! free port of 127.0.0.1 in a directory of its own, without persistence (or with an
//! append-only file synced on every write, `start_persistent`), stopped when dropped. Without the binary a test is skipped with a message, except in CI
//! (`CI=true`), where `.ci/install-tools.sh` installs it and its absence is a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
}

impl RedisServer {
    /// A running server, or `None` (after saying why) when this machine has none.
    pub async fn start() -> Option<Self> {
        Self::start_with(false).await
    }

    /// A running server that keeps every write in its append-only file, fsynced before
    /// it answers (`appendfsync always`), as the compose and Kubernetes Redis do.
    pub async fn start_persistent() -> Option<Self> {
        Self::start_with(true).await
    }

    async fn start_with(persistent: bool) -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is missing in CI: .ci/install-tools.sh installs it"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
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
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
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
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if self.connection().await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} does not answer", self.port);
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

//! The real binary as a child process: graceful shutdown on SIGTERM, and what its logs
//! contain over a whole session.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{PATIENCE, eventually, graphql_error, token_answer};

const ID: &str = "6650a1000000000000000001";

/// The real binary, serving; killed when dropped.
pub struct Service {
    child: Child,
    pub address: String,
    /// Everything the process wrote to stdout and stderr.
    output: Arc<Mutex<String>>,
    /// Its `DATA_DIR`, unless the test sets one.
    _data_dir: tempfile::TempDir,
}

impl Service {
    pub fn start(env: &[(&str, &str)]) -> Service {
        qpien_rest::install_tls_provider();
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let mut command = Command::new(env!("CARGO_BIN_EXE_qpien-rest"));
        command
            .env("DATA_DIR", data_dir.path())
            .env("PORT", "0")
            .env("LOG_FORMAT", "text")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the binary starts");
        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("qpien-rest listening on http://127.0.0.1:") {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let _ = port_tx.send(port);
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buffer) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let port = port_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the service prints its address");
        Service {
            child,
            address: format!("http://127.0.0.1:{port}"),
            output,
            _data_dir: data_dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "the process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn sigterm_stops_accepting_finishes_in_flight_requests_and_exits_0() {
    // Arrange: an upstream that takes a second to answer.
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(1000))
                .set_body_json(json!({"data": {"getConversation": {"_id": ID}}})),
        )
        .mount(&upstream)
        .await;
    let url = format!("{}/api/v1", upstream.uri());
    let mut service = Service::start(&[("QPIEN_API_URL", &url), ("SHUTDOWN_DRAIN_SECS", "10")]);
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn(
        client
            .get(format!("{}/conversations/{ID}", service.address))
            .bearer_auth("t")
            .send(),
    );
    eventually("the request to reach Qpien", PATIENCE, async || {
        let received = upstream.received_requests().await.unwrap_or_default();
        (!received.is_empty()).then_some(())
    })
    .await;

    // Act
    service.terminate();
    eventually("the listener to close", PATIENCE, async || {
        let healthz = format!("{}/healthz", service.address);
        reqwest::Client::new()
            .get(healthz)
            .send()
            .await
            .is_err()
            .then_some(())
    })
    .await;

    // Assert: no new work is taken, the request under way completes, the exit is clean.
    let late = reqwest::Client::new()
        .get(format!("{}/healthz", service.address))
        .send()
        .await;
    assert!(late.is_err(), "a connection after SIGTERM was accepted");
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status().as_u16(), 200);
    let status = service.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "output:\n{}", service.output());
}

#[tokio::test]
async fn a_session_log_never_contains_the_client_secret_or_any_token() {
    // Arrange: Qpien issues two tokens, says the first expired, then fails a read.
    const SECRET: &str = "sssh-client-secret-9f8e7d";
    const FIRST_TOKEN: &str = "tok-first-0a1b2c3d4e";
    const SECOND_TOKEN: &str = "tok-second-5f6a7b8c9d";
    const CALLER_TOKEN: &str = "caller-bearer-1122334455";
    let upstream = MockServer::start().await;
    let generate = || {
        Mock::given(method("POST")).and(body_partial_json(
            json!({"operationName": "GenerateOAuthToken"}),
        ))
    };
    generate()
        .respond_with(token_answer(FIRST_TOKEN))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    generate()
        .respond_with(token_answer(SECOND_TOKEN))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GetConversationList"}),
        ))
        .respond_with(graphql_error("TOKEN_EXPIRED"))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"operationName": "GetConversationList"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"getConversationList": {"conversations": [], "totalCount": 0, "page": 1, "limit": 20}}
        })))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GetConversation"}),
        ))
        .respond_with(ResponseTemplate::new(503))
        .mount(&upstream)
        .await;
    let rejecting = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(graphql_error("INVALID_CLIENT"))
        .mount(&rejecting)
        .await;
    let env = |url: String| {
        vec![
            ("QPIEN_API_URL", url),
            ("QPIEN_CLIENT_ID", "client-7".to_owned()),
            ("QPIEN_CLIENT_SECRET", SECRET.to_owned()),
            ("RUST_LOG", "trace".to_owned()),
        ]
    };
    // Run alone (as nextest runs each test) no other test has installed it yet.
    qpien_rest::install_tls_provider();
    let client = reqwest::Client::new();

    // Act: a session against each upstream, at the most verbose log level.
    let mut logs = String::new();
    for (upstream, paths) in [
        (
            &upstream,
            ["/conversations", "/conversations/6650a1000000000000000001"],
        ),
        (&rejecting, ["/conversations", "/readyz"]),
    ] {
        let vars = env(format!("{}/api/v1", upstream.uri()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut service = Service::start(&vars);
        for path in paths {
            client
                .get(format!("{}{path}", service.address))
                .bearer_auth(CALLER_TOKEN)
                .send()
                .await
                .unwrap();
        }
        service.terminate();
        service.wait(Duration::from_secs(10));
        logs.push_str(&service.output());
    }

    // Assert: the session did what we think, and nothing secret was written.
    assert!(
        logs.contains("obtained a new upstream access token"),
        "{logs}"
    );
    assert!(logs.contains("renewing once"), "{logs}");
    assert!(
        logs.contains("rejected the configured credentials"),
        "{logs}"
    );
    for secret in [SECRET, FIRST_TOKEN, SECOND_TOKEN, CALLER_TOKEN] {
        assert!(!logs.contains(secret), "{secret} leaked into the log");
    }
    assert!(
        !logs.to_ascii_lowercase().contains("authorization: bearer"),
        "an Authorization header was logged"
    );
    assert!(!logs.contains("panicked"));
}

#[tokio::test]
async fn the_healthcheck_command_reports_whether_the_service_answers() {
    let service = Service::start(&[]);
    let healthcheck = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_qpien-rest"))
            .args(["healthcheck", &url])
            .status()
            .unwrap()
    };

    let up = healthcheck(format!("{}/healthz", service.address));
    drop(service);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = healthcheck(format!("http://127.0.0.1:{closed}/healthz"));

    assert_eq!(up.code(), Some(0));
    assert_eq!(down.code(), Some(1));
}

/// With no configuration at all, the embedded sandbox's activity reaches the facade as
/// signed webhook deliveries, with a secret made for the run.
#[tokio::test]
async fn with_no_configuration_the_embedded_sandbox_pushes_its_changes_to_the_facade() {
    let service = Service::start(&[("SANDBOX_ACTIVITY_PER_MINUTE", "600")]);
    let http = reqwest::Client::new();

    let applied = eventually("a webhook delivery applied", PATIENCE, async || {
        let metrics = http
            .get(format!("{}/metrics", service.address))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metrics
            .lines()
            .any(|line| {
                line.starts_with("qpien_rest_webhook_events_total{")
                    && line.contains("outcome=\"applied\"")
            })
            .then_some(metrics)
    })
    .await;

    assert!(!applied.contains("outcome=\"bad-signature\""), "{applied}");
    let ready: serde_json::Value = http
        .get(format!("{}/readyz", service.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready["webhooks"]["lastVerifiedAt"].is_string(), "{ready}");
}

/// An event stream does not hold a stop up: it ends at once, so that its client
/// reconnects (to another replica) with `Last-Event-ID`, and the process exits well
/// within the drain time.
#[tokio::test]
async fn sigterm_ends_event_streams_at_once_and_exits_0() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_SECS", "60")]);
    let mut stream = reqwest::get(format!("{}/events", service.address))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let greeting = stream.chunk().await.unwrap().unwrap();
    assert!(greeting.starts_with(b": qpien-rest event stream"));

    service.terminate();
    let ended = tokio::time::timeout(PATIENCE, async {
        while let Some(_chunk) = stream.chunk().await.unwrap_or(None) {}
    })
    .await;

    assert!(
        ended.is_ok(),
        "the stream was still open {PATIENCE:?} after SIGTERM"
    );
    let status = service.wait(PATIENCE);
    assert_eq!(status.code(), Some(0), "output:\n{}", service.output());
}

/// With `ADMIN_PORT`, probes and metrics are served there and nowhere else, and SIGTERM
/// still ends the process (the admin listener stops with the public one).
#[tokio::test]
async fn with_an_admin_port_probes_and_metrics_leave_the_public_port() {
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut service = Service::start(&[("ADMIN_PORT", &admin_port)]);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };

    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(format!("{admin}{path}")).await.status(), 200, "{path}");
        let public = get(format!("{}{path}", service.address)).await;
        let problem = crate::helpers::assert_problem(public, 404).await;
        assert_eq!(problem["type"], "/problems/not-found", "{path}");
    }
    assert_eq!(
        get(format!("{}/conversations", service.address))
            .await
            .status(),
        200
    );
    assert_problem_at(&get(format!("{admin}/conversations")).await, 404);
    let metrics = get(format!("{admin}/metrics")).await.text().await.unwrap();
    assert!(metrics.contains("route=\"/conversations\""), "{metrics}");
    // The container's HEALTHCHECK (no URL given) asks the admin port.
    let healthcheck = Command::new(env!("CARGO_BIN_EXE_qpien-rest"))
        .arg("healthcheck")
        .env("PORT", "1")
        .env("ADMIN_PORT", &admin_port)
        .status()
        .unwrap();
    assert_eq!(healthcheck.code(), Some(0));

    service.terminate();
    assert!(service.wait(Duration::from_secs(15)).success());
}

fn assert_problem_at(response: &reqwest::Response, status: u16) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

//! Fault injection: an upstream that misbehaves at the TCP and HTTP level (a small fault
//! server below) or at the GraphQL level (wiremock). For each fault: the documented
//! status and problem, no panic, and an answer within the whole-call timeout plus a
//! small margin.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    FAULT_TIMEOUT, PATIENCE, Setup, TestApp, answering, assert_problem, eventually, graphql_error,
    graphql_url, pass_through_app, spawn_app_with,
};

const ID: &str = "6650a1000000000000000001";
/// What "bounded" means here: the whole-call timeout plus scheduling slack.
const BOUND: Duration = Duration::from_millis(FAULT_TIMEOUT.as_millis() as u64 + 700);

#[derive(Clone, Copy)]
enum Fault {
    /// Accepts the connection, reads the request, never answers.
    NoAnswer,
    /// Sends the head, then one byte of body every 100 ms.
    Trickle,
    /// Promises 1000 bytes of body, sends 20, then resets the connection.
    ResetMidBody,
    /// A chunked body that never ends before 6 MiB.
    Oversized,
}

/// Starts a fault server and returns its GraphQL URL and a counter of connections.
async fn fault_server(fault: Fault) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1", listener.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(misbehave(socket, fault));
        }
    });
    (url, connections)
}

async fn misbehave(mut socket: TcpStream, fault: Fault) {
    let mut request = vec![0u8; 64 * 1024];
    let _ = socket.read(&mut request).await;
    let head =
        |extra: &str| format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}\r\n");
    match fault {
        Fault::NoAnswer => tokio::time::sleep(Duration::from_secs(30)).await,
        Fault::Trickle => {
            let _ = socket
                .write_all(head("Content-Length: 100000\r\n").as_bytes())
                .await;
            for _ in 0..300 {
                if socket.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Fault::ResetMidBody => {
            let _ = socket
                .write_all(head("Content-Length: 1000\r\n").as_bytes())
                .await;
            let _ = socket.write_all(b"{\"data\": {\"getConver").await;
            let _ = socket.set_zero_linger();
            drop(socket);
        }
        Fault::Oversized => {
            let _ = socket
                .write_all(head("Transfer-Encoding: chunked\r\n").as_bytes())
                .await;
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
            for _ in 0..96 {
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn timed_get(app: &TestApp, path: &str) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = app.get_with_bearer(path).await;
    (response, started.elapsed())
}

#[tokio::test]
async fn an_upstream_that_never_answers_gives_a_504_within_the_timeout() {
    let (url, _) = fault_server(Fault::NoAnswer).await;
    let app = pass_through_app(url).await;

    let (response, elapsed) = timed_get(&app, &format!("/conversations/{ID}")).await;

    assert_problem(response, 504).await;
    assert!(elapsed < BOUND, "took {elapsed:?}");
}

#[tokio::test]
async fn an_upstream_that_trickles_bytes_gives_a_504_within_the_timeout() {
    let (url, _) = fault_server(Fault::Trickle).await;
    let app = pass_through_app(url).await;

    let (response, elapsed) = timed_get(&app, "/conversations").await;

    assert_problem(response, 504).await;
    assert!(elapsed < BOUND, "took {elapsed:?}");
}

#[tokio::test]
async fn a_connection_reset_mid_body_gives_a_502_after_retrying_the_read() {
    let (url, connections) = fault_server(Fault::ResetMidBody).await;
    let app = pass_through_app(url).await;

    let (response, elapsed) = timed_get(&app, &format!("/conversations/{ID}")).await;

    assert_problem(response, 502).await;
    assert!(elapsed < BOUND, "took {elapsed:?}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one call and two retries"
    );
}

#[tokio::test]
async fn an_oversized_answer_gives_a_502_without_reading_it_all() {
    let (url, _) = fault_server(Fault::Oversized).await;
    let app = pass_through_app(url).await;

    let (response, elapsed) = timed_get(&app, "/conversations").await;

    assert_problem(response, 502).await;
    assert!(elapsed < BOUND, "took {elapsed:?}");
}

#[tokio::test]
async fn a_declared_oversized_answer_gives_a_502() {
    let big = "x".repeat(5 * 1024 * 1024);
    let (_upstream, app) = answering(ResponseTemplate::new(200).set_body_string(big)).await;

    let (response, _) = timed_get(&app, "/conversations").await;

    assert_problem(response, 502).await;
}

#[tokio::test]
async fn data_with_partial_errors_is_not_passed_on_as_success() {
    let body = json!({
        "data": {"getConversation": {"_id": ID, "status": "OPEN"}},
        "errors": [{"message": "tags unavailable", "path": ["getConversation", "tags"], "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]
    });
    let (_upstream, app) = answering(ResponseTemplate::new(200).set_body_json(body)).await;

    let (response, _) = timed_get(&app, &format!("/conversations/{ID}")).await;

    let problem = assert_problem(response, 502).await;
    assert_eq!(problem["code"], "INTERNAL_SERVER_ERROR");
}

#[tokio::test]
async fn documented_graphql_error_codes_map_to_their_statuses() {
    let cases = [
        ("NOT_FOUND", 404),
        ("BAD_USER_INPUT", 422),
        ("UNAUTHORIZED", 401),
        ("TOKEN_EXPIRED", 401),
        ("INSUFFICIENT_SCOPES", 403),
    ];
    for (code, status) in cases {
        let (_upstream, app) = answering(graphql_error(code)).await;

        let (response, _) = timed_get(&app, &format!("/conversations/{ID}")).await;

        let problem = assert_problem(response, status).await;
        assert_eq!(problem["code"], code);
    }
}

#[tokio::test]
async fn insufficient_scopes_names_the_required_scope() {
    let body = json!({"data": null, "errors": [{
        "message": "Insufficient scopes for this operation",
        "extensions": {"code": "INSUFFICIENT_SCOPES", "requiredScope": "read_conversations"},
        "success": false
    }]});
    let (_upstream, app) = answering(ResponseTemplate::new(200).set_body_json(body)).await;

    let response = app.get_with_bearer(&format!("/conversations/{ID}")).await;

    let www_authenticate = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let problem = assert_problem(response, 403).await;
    assert_eq!(problem["requiredScope"], "read_conversations");
    assert!(
        www_authenticate.contains("scope=\"read_conversations\""),
        "{www_authenticate}"
    );
}

#[tokio::test]
async fn a_read_is_retried_after_a_503_and_succeeds() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"getConversation": {"_id": ID}}})),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;

    let (response, _) = timed_get(&app, &format!("/conversations/{ID}")).await;

    assert_eq!(response.status().as_u16(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("qpien_rest_upstream_retries_total{operation=\"GetConversation\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_read_is_retried_at_most_twice() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502))
        .expect(3)
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;

    let (response, _) = timed_get(&app, "/conversations").await;

    assert_problem(response, 502).await;
}

#[tokio::test]
async fn an_update_is_never_retried() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;

    let response = app
        .http
        .patch(format!("{}/conversations/{ID}", app.address))
        .bearer_auth("token")
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"status":"closed"}"#)
        .send()
        .await
        .unwrap();

    assert_problem(response, 502).await;
}

#[tokio::test]
async fn a_500_is_not_retried() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;

    let (response, _) = timed_get(&app, "/conversations").await;

    assert_problem(response, 502).await;
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_fails_fast_and_recovers_after_a_probe() {
    // Arrange: an upstream failing with 500 (not retried), a breaker of 2 failures.
    let upstream = MockServer::start().await;
    let failing = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount_as_scoped(&upstream)
        .await;
    let app = spawn_app_with(Setup {
        upstream_url: Some(format!("{}/api/v1", upstream.uri())),
        settings: Box::new(|s| {
            s.upstream.breaker_failures = 2;
            s.upstream.breaker_cool_down = Duration::from_millis(700);
        }),
        ..Setup::pass_through()
    })
    .await;
    for _ in 0..2 {
        assert_problem(timed_get(&app, "/conversations").await.0, 502).await;
    }

    // Act: the breaker is open
    let (response, elapsed) = timed_get(&app, "/conversations").await;

    // Assert: 503 at once, upstream untouched, visible in readiness and metrics
    assert!(response.headers().contains_key("retry-after"));
    let problem = assert_problem(response, 503).await;
    assert_eq!(problem["type"], "/problems/unavailable");
    assert!(
        elapsed < Duration::from_millis(200),
        "fails fast, took {elapsed:?}"
    );
    assert_problem(app.get("/readyz").await, 503).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("qpien_rest_circuit_breaker_state 2"),
        "{metrics}"
    );
    drop(failing);

    // After the cool-down one probe goes through; Qpien is back, so the breaker closes.
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"operationName": "GetConversationList"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"getConversationList": {"conversations": [], "totalCount": 0, "page": 1, "limit": 20}}
        })))
        .mount(&upstream)
        .await;
    // Until the cool-down ends each try is refused at once, without reaching Qpien.
    let probed = eventually("the cool-down to end", PATIENCE, async || {
        let response = app.get_with_bearer("/conversations").await;
        (response.status() != 503).then_some(response)
    })
    .await;
    assert_eq!(probed.status().as_u16(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("qpien_rest_circuit_breaker_state 0"),
        "{metrics}"
    );
}

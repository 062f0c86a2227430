//! Upstream answers the sandbox never gives, from wiremock: each becomes its documented
//! status and problem, in bounded time.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    Setup, answering, assert_problem, graphql_url, pass_through_app, spawn_app_with,
};

const ID: &str = "6650a1000000000000000001";

#[tokio::test]
async fn upstream_server_errors_become_a_502() {
    for status in [500, 502, 503] {
        let (_upstream, app) =
            answering(ResponseTemplate::new(status).set_body_string("oops")).await;
        let problem = assert_problem(
            app.get_with_bearer(&format!("/conversations/{ID}")).await,
            502,
        )
        .await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(&status.to_string()),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn an_answer_that_is_not_graphql_becomes_a_502() {
    let cases = [
        ResponseTemplate::new(200).set_body_string("not json at all"),
        ResponseTemplate::new(200)
            .set_body_raw("<html><body>Bad gateway</body></html>", "text/html"),
        ResponseTemplate::new(200).set_body_json(json!({"unexpected": true})),
        ResponseTemplate::new(200)
            .set_body_json(json!({"data": {"getConversation": {"id": "no _id"}}})),
        ResponseTemplate::new(404).set_body_string("Not Found"),
    ];
    for template in cases {
        let (_upstream, app) = answering(template).await;
        assert_problem(
            app.get_with_bearer(&format!("/conversations/{ID}")).await,
            502,
        )
        .await;
    }
}

#[tokio::test]
async fn an_unknown_enum_value_from_upstream_becomes_a_502_not_a_guess() {
    let data = json!({"data": {"getConversation": {"_id": ID, "status": "ARCHIVED"}}});
    let (_upstream, app) = answering(ResponseTemplate::new(200).set_body_json(data)).await;

    assert_problem(
        app.get_with_bearer(&format!("/conversations/{ID}")).await,
        502,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_graphql_error_code_becomes_a_502_with_the_code() {
    let errors = json!({"data": null, "errors": [{"message": "boom", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]});
    let (_upstream, app) = answering(ResponseTemplate::new(200).set_body_json(errors)).await;

    let problem = assert_problem(
        app.get_with_bearer(&format!("/conversations/{ID}")).await,
        502,
    )
    .await;

    assert_eq!(problem["code"], "INTERNAL_SERVER_ERROR");
}

#[tokio::test]
async fn a_slow_upstream_becomes_a_504_within_the_timeout() {
    let (_upstream, app) =
        answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(5))).await;
    let started = Instant::now();

    let response = app.get_with_bearer(&format!("/conversations/{ID}")).await;

    assert_problem(response, 504).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_upstream_becomes_a_502() {
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(Setup {
        upstream_url: Some(format!("http://127.0.0.1:{closed_port}/api/v1")),
        ..Setup::pass_through()
    })
    .await;

    assert_problem(
        app.get_with_bearer(&format!("/conversations/{ID}")).await,
        502,
    )
    .await;
}

#[tokio::test]
async fn an_upstream_429_becomes_a_429_with_retry_after_from_the_reset_header() {
    let template = ResponseTemplate::new(429)
        .insert_header("X-RateLimit-Limit", "100")
        .insert_header("X-RateLimit-Remaining", "0")
        .insert_header("X-RateLimit-Reset", "17");
    let (_upstream, app) = answering(template).await;

    let response = app.get_with_bearer(&format!("/conversations/{ID}")).await;

    assert_eq!(response.headers()["retry-after"], "17");
    assert_problem(response, 429).await;
}

#[tokio::test]
async fn the_request_id_and_bearer_are_sent_upstream_and_values_travel_as_variables() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"getConversation": {"_id": ID}}})),
        )
        .expect(1)
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;

    let response = app
        .http
        .get(format!("{}/conversations/{ID}", app.address))
        .bearer_auth("caller-token")
        .header("X-Request-Id", "trace-42")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 200);
    let received = &upstream.received_requests().await.unwrap()[0];
    assert_eq!(received.headers["x-request-id"], "trace-42");
    assert_eq!(received.headers["authorization"], "Bearer caller-token");
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(body["variables"]["conversationId"], ID);
    assert!(
        !body["query"].as_str().unwrap().contains(ID),
        "the id is never spliced into the query"
    );
    assert_eq!(body["operationName"], "GetConversation");
}

/// Qpien's messages are free text: they go to the log, and callers get the service's own
/// words with Qpien's code.
fn answering_with_message(code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "data": null,
        "errors": [{"message": message, "extensions": {"code": code}}]
    }))
}

const QPIEN_WORDS: &str = "shard db-7.internal:27017 refused tenant 4411";

#[tokio::test]
async fn qpien_error_messages_never_reach_the_problem_body() {
    for (code, status) in [
        ("BAD_USER_INPUT", 422),
        ("NOT_FOUND", 404),
        ("INTERNAL_SERVER_ERROR", 502),
    ] {
        let (_upstream, app) = answering(answering_with_message(code, QPIEN_WORDS)).await;

        let response = app.get_with_bearer(&format!("/conversations/{ID}")).await;

        let problem = assert_problem(response, status).await;
        assert!(!problem.to_string().contains("db-7"), "{problem}");
        assert_eq!(problem["code"], code);
    }
}

#[tokio::test]
async fn an_error_code_that_is_no_code_is_not_passed_on() {
    let (_upstream, app) = answering(answering_with_message(QPIEN_WORDS, "boom")).await;

    let response = app.get_with_bearer(&format!("/conversations/{ID}")).await;

    let problem = assert_problem(response, 502).await;
    assert!(problem.get("code").is_none(), "{problem}");
    assert!(!problem.to_string().contains("db-7"), "{problem}");
}

#[tokio::test]
async fn readiness_says_why_without_qpien_words() {
    let (_upstream, app) =
        answering(answering_with_message("INTERNAL_SERVER_ERROR", QPIEN_WORDS)).await;

    let problem = assert_problem(app.get("/readyz").await, 503).await;

    assert!(!problem.to_string().contains("db-7"), "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("unexpected"),
        "{problem}"
    );
}

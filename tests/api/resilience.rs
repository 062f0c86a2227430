//! Protection of the Qpien account and of the service: the token lifecycle under
//! concurrency, the per-credential rate budget, request limits and metrics.

use std::time::Duration;

use futures_util::future::join_all;
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    Setup, assert_problem, graphql_error, service_app_whose_token_has_expired, spawn_app,
    spawn_app_with, token_answer,
};

#[tokio::test]
async fn many_concurrent_requests_meeting_an_expired_token_renew_it_once() {
    // Arrange: a token that lives one second, already used once.
    let app = service_app_whose_token_has_expired().await;

    // Act: twenty different reads at once (identical ones would share one call).
    let queries: Vec<String> = (1..=20)
        .map(|page| format!("?pageSize=1&page={page}"))
        .collect();
    let responses = join_all(queries.iter().map(|q| app.list_conversations(q))).await;

    // Assert
    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    assert_eq!(
        app.upstream_calls_of("generateOAuthToken"),
        2,
        "one at start, exactly one renewal"
    );
}

#[tokio::test]
async fn concurrent_first_requests_share_one_slow_token_request() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GenerateOAuthToken"}),
        ))
        .respond_with(token_answer("t").set_delay(Duration::from_millis(300)))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GetConversation"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": {"getConversation": {"_id": "6650a1000000000000000001"}}}),
        ))
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Setup {
        upstream_url: Some(format!("{}/api/v1", upstream.uri())),
        ..Default::default()
    })
    .await;

    let responses =
        join_all((0..10).map(|_| app.get_conversation("6650a1000000000000000001"))).await;

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
}

#[tokio::test]
async fn the_rate_budget_keeps_the_facade_under_the_limit_and_answers_429() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.upstream.rate_limit_per_minute = 3;
            s.upstream.rate_limit_max_wait = Duration::ZERO;
        }),
        ..Default::default()
    })
    .await;

    // The token request and two lists use the budget of three.
    let first = app.list_conversations("?pageSize=1&page=1").await;
    assert_eq!(first.headers()["x-ratelimit-limit"], "3");
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(first.headers()["ratelimit-policy"], "\"qpien\";q=3;w=60");
    assert_eq!(
        app.list_conversations("?pageSize=1&page=2")
            .await
            .status()
            .as_u16(),
        200
    );
    let refused = app.list_conversations("?pageSize=1&page=3").await;

    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_problem(refused, 429).await;
    assert_eq!(
        app.upstream_requests(),
        3,
        "the refused request never reached Qpien"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("qpien_rest_rate_limit_rejections_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn pass_through_callers_have_separate_budgets() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.upstream.rate_limit_per_minute = 1;
            s.upstream.rate_limit_max_wait = Duration::ZERO;
        }),
        ..Setup::pass_through()
    })
    .await;
    let alice = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;
    let bob = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;

    assert_eq!(
        app.get_as("/conversations", &alice).await.status().as_u16(),
        200
    );
    assert_problem(app.get_as("/conversations?page=2", &alice).await, 429).await;

    assert_eq!(
        app.get_as("/conversations", &bob).await.status().as_u16(),
        200,
        "Bob's budget is his own"
    );
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413_problem_and_reaches_nothing() {
    let app = spawn_app().await;
    let body = json!({"tags": ["x".repeat(70 * 1024)]}).to_string();

    let response = app
        .patch_conversation(
            "6650a1000000000000000001",
            &body,
            Some("application/merge-patch+json"),
        )
        .await;

    assert_problem(response, 413).await;
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn too_many_request_headers_are_refused_before_any_work() {
    let app = spawn_app().await;
    let mut request = app.http.get(format!("{}/conversations", app.address));
    for i in 0..200 {
        request = request.header(format!("x-filler-{i}"), "y");
    }

    let response = request.send().await.unwrap();

    assert_eq!(response.status().as_u16(), 431);
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn metrics_count_requests_upstream_calls_and_token_renewals() {
    let app = spawn_app().await;
    app.list_conversations("?pageSize=1").await;
    app.get_conversation("6650a1ffffffffffffffffff").await;

    let response = app.get("/metrics").await;

    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "qpien_rest_http_requests_total{method=\"GET\",route=\"/conversations\",status=\"200\"} 1",
        "qpien_rest_http_requests_total{method=\"GET\",route=\"/conversations/{id}\",status=\"404\"} 1",
        "qpien_rest_http_request_duration_seconds_bucket",
        "qpien_rest_upstream_calls_total{operation=\"GetConversationList\",outcome=\"ok\"} 1",
        "qpien_rest_upstream_calls_total{operation=\"GetConversation\",outcome=\"not_found\"} 1",
        "qpien_rest_upstream_call_duration_seconds_count{operation=\"GenerateOAuthToken\"} 1",
        "qpien_rest_token_renewals_total{outcome=\"ok\"} 1",
        "qpien_rest_circuit_breaker_state 0",
        "qpien_rest_rate_limit_waits_total 0",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[tokio::test]
async fn readyz_reports_the_breaker_state() {
    let app = spawn_app().await;

    let body: Value = app.get("/readyz").await.json().await.unwrap();

    assert_eq!(body["circuitBreaker"], "closed");
}

#[tokio::test]
async fn many_requests_told_token_expired_at_once_cause_exactly_one_renewal() {
    // Qpien revokes the first token early: every call with it gets TOKEN_EXPIRED.
    let upstream = MockServer::start().await;
    let generate = || {
        Mock::given(method("POST")).and(body_partial_json(
            json!({"operationName": "GenerateOAuthToken"}),
        ))
    };
    generate()
        .respond_with(token_answer("first"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&upstream)
        .await;
    generate()
        .respond_with(token_answer("second"))
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer first"))
        .respond_with(graphql_error("TOKEN_EXPIRED"))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer second"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": {"getConversation": {"_id": "6650a1000000000000000001"}}}),
        ))
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Setup {
        upstream_url: Some(format!("{}/api/v1", upstream.uri())),
        ..Default::default()
    })
    .await;

    let responses =
        join_all((0..15).map(|_| app.get_conversation("6650a1000000000000000001"))).await;

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    // `expect(1)` on each token mock is checked when the server drops: one initial token,
    // exactly one renewal.
}

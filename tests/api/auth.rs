//! Service mode (the facade's own token) and pass-through mode (the caller's bearer).

use std::time::Duration;

use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SandboxConfig};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    Setup, assert_problem, graphql_error, service_app_whose_token_has_expired, spawn_app,
    spawn_app_with, token_answer,
};

#[tokio::test]
async fn service_mode_fetches_one_token_and_reuses_it() {
    let app = spawn_app().await;

    // Five different pages: each one a call to Qpien.
    for page in 1..=5 {
        assert_eq!(
            app.list_conversations(&format!("?pageSize=1&page={page}"))
                .await
                .status()
                .as_u16(),
            200
        );
    }

    assert_eq!(app.upstream_calls_of("generateOAuthToken"), 1);
    assert_eq!(app.upstream_calls_of("getConversationList"), 5);
}

#[tokio::test]
async fn service_mode_renews_the_token_before_it_expires() {
    let app = service_app_whose_token_has_expired().await;

    let response = app.list_conversations("?pageSize=1").await;

    assert_eq!(
        response.status().as_u16(),
        200,
        "the old token was not used past its lifetime"
    );
    assert_eq!(app.upstream_calls_of("generateOAuthToken"), 2);
}

#[tokio::test]
async fn service_mode_gives_a_502_when_qpien_rejects_the_configured_credentials() {
    let app = spawn_app_with(Setup {
        credentials: Some((DEMO_CLIENT_ID, "wrong-secret")),
        ..Default::default()
    })
    .await;

    let problem = assert_problem(app.list_conversations("").await, 502).await;

    assert_eq!(problem["code"], "INVALID_CLIENT");
    assert!(!problem.to_string().contains("wrong-secret"));
}

#[tokio::test]
async fn service_mode_ignores_the_callers_authorization_header() {
    let app = spawn_app().await;

    let response = app
        .get_as("/conversations", "whatever-the-caller-sends")
        .await;

    assert_eq!(response.status().as_u16(), 200);
}

/// Qpien answers TOKEN_EXPIRED for a token we still believed valid (e.g. revoked early):
/// the facade renews once and repeats the call, and the caller sees only the answer.
#[tokio::test]
async fn service_mode_renews_and_retries_once_when_qpien_says_token_expired() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GenerateOAuthToken"}),
        ))
        .respond_with(token_answer("t"))
        .expect(2)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GetConversation"}),
        ))
        .respond_with(graphql_error("TOKEN_EXPIRED"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            json!({"operationName": "GetConversation"}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"getConversation": {"_id": "6650a1000000000000000001", "status": "OPEN"}}
        })))
        .expect(1)
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Setup {
        upstream_url: Some(format!("{}/api/v1", upstream.uri())),
        ..Default::default()
    })
    .await;

    let response = app.get_conversation("6650a1000000000000000001").await;

    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "open");
}

#[tokio::test]
async fn pass_through_forwards_the_callers_bearer() {
    let app = spawn_app_with(Setup::pass_through()).await;
    let token = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;

    let response = app.get_as("/conversations", &token).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        app.upstream_calls_of("generateOAuthToken"),
        1,
        "only the test's own token request"
    );
}

#[tokio::test]
async fn pass_through_returns_a_401_without_a_bearer_and_calls_nothing_upstream() {
    let app = spawn_app_with(Setup::pass_through()).await;
    let cases = [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some("Bearer"),
    ];

    for authorization in cases {
        let mut request = app.http.get(format!("{}/conversations", app.address));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.unwrap();
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert_problem(response, 401).await;
    }
    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn pass_through_returns_a_401_with_the_code_for_an_unknown_or_expired_token() {
    let app = spawn_app_with(Setup {
        sandbox: SandboxConfig {
            token_ttl: Duration::from_secs(1),
            ..Default::default()
        },
        ..Setup::pass_through()
    })
    .await;
    let token = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;

    let unknown = assert_problem(app.get_as("/conversations", "not-a-real-token").await, 401).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = assert_problem(app.get_as("/conversations", &token).await, 401).await;

    assert_eq!(unknown["code"], "UNAUTHORIZED");
    assert_eq!(expired["code"], "TOKEN_EXPIRED");
}

#[tokio::test]
async fn a_qpien_rate_limit_becomes_a_429_with_retry_after() {
    let app = spawn_app_with(Setup {
        sandbox: SandboxConfig {
            rate_limit_per_minute: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;

    // Three requests a minute: the third or fourth page (the token may count) is refused.
    assert_eq!(
        app.list_conversations("?page=1").await.status().as_u16(),
        200
    );
    let mut response = app.list_conversations("?page=2").await;
    for page in 3..=5 {
        if response.status().as_u16() == 429 {
            break;
        }
        response = app.list_conversations(&format!("?page={page}")).await;
    }

    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_problem(response, 429).await;
}

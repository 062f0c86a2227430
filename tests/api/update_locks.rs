//! Updates wait for one another only by the request's deadline, and only within one
//! credential: an update behind a hung one answers 504 by its own deadline, and a hung
//! update under another bearer does not hold it back at all.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Setup, TestApp, assert_problem, graphql_url, spawn_app_with};

const ID: &str = "6650a1000000000000000001";
const TIMEOUT: Duration = Duration::from_millis(1500);

async fn app_over(upstream: &MockServer) -> TestApp {
    spawn_app_with(Setup {
        upstream_url: Some(graphql_url(upstream)),
        settings: Box::new(|s| s.upstream.request_timeout = TIMEOUT),
        ..Setup::pass_through()
    })
    .await
}

/// A PATCH of the conversation `ID` under `bearer`, and how long its answer took.
async fn timed_patch(app: &TestApp, bearer: &str) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let response = app
        .http
        .patch(format!("{}/conversations/{ID}", app.address))
        .bearer_auth(bearer)
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"status":"closed"}"#)
        .send()
        .await
        .unwrap();
    (response, started.elapsed())
}

#[tokio::test]
async fn an_update_queued_behind_a_hung_one_gets_a_504_by_its_own_deadline() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&upstream)
        .await;
    let app = app_over(&upstream).await;
    let first = timed_patch(&app, "token");
    tokio::pin!(first);
    // The first update takes the lock and hangs on Qpien.
    let second = async {
        tokio::time::sleep(TIMEOUT / 2).await;
        timed_patch(&app, "token").await
    };

    let ((first, _), (second, waited)) = tokio::join!(first, second);

    assert_problem(first, 504).await;
    assert_problem(second, 504).await;
    // Waiting for the lock and then a whole timeout of its own would take 1.5 timeouts.
    assert!(
        waited < TIMEOUT + Duration::from_millis(500),
        "the second update took {waited:?}"
    );
}

#[tokio::test]
async fn a_hung_update_under_a_junk_bearer_does_not_hold_back_a_real_one() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer junk"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer real"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {"updateConversation": {"_id": ID, "status": "CLOSED"}}
        })))
        .mount(&upstream)
        .await;
    let app = app_over(&upstream).await;
    let junk = timed_patch(&app, "junk");
    let real = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        timed_patch(&app, "real").await
    };

    let ((junk, _), (real, took)) = tokio::join!(junk, real);

    assert_eq!(real.status(), 200);
    assert!(
        took < TIMEOUT / 2,
        "the real update waited for the junk one: {took:?}"
    );
    assert_problem(junk, 504).await;
}

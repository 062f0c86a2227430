//! Around the routes: health, readiness, request ids, problem types and Swagger UI.

use std::net::TcpListener;

use qpien_rest::settings::{Secret, Settings};
use qpien_rest::startup::Application;
use serde_json::Value;

use crate::helpers::{
    PATIENCE, Setup, add_key, assert_problem, eventually, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn readyz_is_ready_once_a_token_is_held() {
    let app = spawn_app().await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["mode"], "service");
    assert_eq!(app.upstream_calls_of("generateOAuthToken"), 1);
}

#[tokio::test]
async fn readyz_is_503_when_the_upstream_is_unreachable() {
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = spawn_app_with(Setup {
        upstream_url: Some(format!("http://127.0.0.1:{closed_port}/api/v1")),
        ..Default::default()
    })
    .await;

    assert_problem(app.get("/readyz").await, 503).await;
}

/// Qpien rate-limits even the token request: the service holds no token, yet it still
/// answers from its cache and with honest 429s, so it stays in rotation.
#[tokio::test]
async fn readyz_stays_200_when_qpien_rate_limits_the_token_request() {
    let upstream = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Setup {
        upstream_url: Some(crate::helpers::graphql_url(&upstream)),
        ..Default::default()
    })
    .await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn a_callers_request_id_is_returned_and_sent_upstream() {
    let app = spawn_app().await;

    let response = app
        .http
        .get(format!("{}/conversations", app.address))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .unwrap();

    assert_eq!(response.headers()["x-request-id"], "abc-123");
    assert_eq!(
        app.upstream_stats().last_request_id.as_deref(),
        Some("abc-123")
    );
}

#[tokio::test]
async fn a_request_id_is_generated_when_missing_or_unsafe() {
    let app = spawn_app().await;

    let missing = app.get("/healthz").await;
    let unsafe_id = app
        .http
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "a b\"<script>")
        .send()
        .await
        .unwrap();

    for response in [missing, unsafe_id] {
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "a UUID, got {id}");
    }
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem_and_a_wrong_method_a_405() {
    let app = spawn_app().await;

    assert_problem(app.get("/nope").await, 404).await;
    let response = app
        .http
        .delete(format!(
            "{}/conversations/6650a1000000000000000001",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, PATCH");
    assert_problem(response, 405).await;
}

#[tokio::test]
async fn every_problem_type_is_described_at_its_uri() {
    let app = spawn_app().await;
    let problem = assert_problem(app.list_conversations("?page=0").await, 400).await;

    let response = app.get(problem["type"].as_str().unwrap()).await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Invalid request parameters")
    );
}

#[tokio::test]
async fn swagger_ui_is_served_at_docs() {
    let app = spawn_app().await;

    let response = app.get("/docs/").await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(response.text().await.unwrap().contains("swagger-ui"));
    let config = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        config.contains("/openapi.json"),
        "Swagger UI loads our document"
    );
}

/// What `cargo run` does with no configuration: an embedded sandbox and its demo key.
#[tokio::test]
async fn with_no_configuration_the_app_serves_from_the_embedded_sandbox() {
    qpien_rest::install_tls_provider();
    let data_dir = tempfile::tempdir().unwrap();
    let application = Application::build(Settings {
        port: 0,
        data_dir: data_dir.path().to_owned(),
        ..Settings::default()
    })
    .await
    .unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    assert!(application.is_service_mode());
    tokio::spawn(application.run_until_stopped());

    let body: Value = reqwest::get(format!("{address}/conversations"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert!(body["totalItems"].as_u64().unwrap() >= 60);
}

#[tokio::test]
async fn readyz_trusts_a_recent_answer_from_qpien_instead_of_spending_budget() {
    let app = spawn_app().await;
    assert_eq!(
        app.list_conversations("?pageSize=1")
            .await
            .status()
            .as_u16(),
        200
    );
    let before = app.upstream_requests();

    for _ in 0..3 {
        assert_eq!(app.get("/readyz").await.status().as_u16(), 200);
    }

    assert_eq!(
        app.upstream_requests(),
        before,
        "probes sent nothing to Qpien"
    );
}

/// The alerting rules (deploy/prometheus/alerts.yml) name only metrics the service
/// exports: a renamed metric would otherwise leave an alert that can never fire. A
/// family appears once it has a sample, so the app gets a keyed read (calls to Qpien, a
/// token) and an unsigned webhook delivery first.
#[tokio::test]
async fn every_metric_the_alerting_rules_name_is_exported() {
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let key = add_key(&keys, "crm", "read", None);
    let flows = add_key(&keys, "flows", "read,write", None);
    let app = spawn_app_with(Setup {
        settings: Box::new(move |s| {
            s.api_keys_file = Some(keys);
            s.webhooks.secrets = vec![Secret::new("0123456789abcdef0123456789abcdef")];
            s.subscriptions.allow_http = Some(true);
            s.subscriptions.allow_private_networks = Some(true);
        }),
        ..Setup::default()
    })
    .await;
    // A subscription's series exist while it is delivered here.
    let subscribed = app
        .http
        .post(format!("{}/subscriptions", app.address))
        .header("x-api-key", &flows)
        .json(&serde_json::json!({ "url": "http://127.0.0.1:9/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 201);
    let read = app.get_as("/conversations?pageSize=1", &key).await;
    let forged = app
        .http
        .post(format!("{}/webhooks/qpien", app.address))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();

    let metrics = eventually("the subscription's series", PATIENCE, async || {
        let metrics = app.get("/metrics").await.text().await.unwrap();
        metrics
            .contains("qpien_rest_subscription_oldest_pending_timestamp_seconds{")
            .then_some(metrics)
    })
    .await;

    assert_eq!(
        (read.status().as_u16(), forged.status().as_u16()),
        (200, 401)
    );
    let mut named: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("qpien_rest_"))
        .collect();
    named.sort_unstable();
    named.dedup();
    assert!(named.len() >= 11, "{named:?}");
    for name in named {
        // Counters are declared without the `_total` their samples carry.
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{name} is not exported:\n{metrics}"
        );
    }
    // What the rules use to tell "down" from "not configured".
    assert!(
        metrics.contains("\nqpien_rest_redis_configured 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nqpien_rest_webhooks_configured 1\n"),
        "{metrics}"
    );
}

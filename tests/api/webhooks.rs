//! `POST /webhooks/qpien`: Qpien's signed deliveries drop every cached answer a change
//! touches, at once, for every caller and on every replica. Qpien's side is counted by
//! the sandbox.

use std::time::Duration;

use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use qpien_rest::settings::{Secret, Settings};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Setup, TestApp, assert_problem, header, spawn_app_with};
use crate::redis_server::RedisServer;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Answers stay fresh for a minute: only a delivery can make them stale in a test.
fn pushed(s: &mut Settings) {
    s.webhooks.secrets = vec![Secret::new("retired-secret"), Secret::new(SECRET)];
    s.read_cache.ttl = Duration::from_secs(60);
}

async fn pushed_app() -> TestApp {
    spawn_app_with(Setup {
        settings: Box::new(pushed),
        ..Setup::default()
    })
    .await
}

fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TestApp {
    /// Delivers `body` as Qpien would, signed with `secret` (`None`: unsigned).
    pub(crate) async fn deliver_signed(
        &self,
        body: &[u8],
        secret: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/webhooks/qpien", self.address))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(secret) = secret {
            request = request.header("x-qpien-signature", signature(secret, body));
        }
        request.send().await.expect("request sent")
    }

    async fn deliver(&self, payload: &Value) -> reqwest::Response {
        self.deliver_signed(payload.to_string().as_bytes(), Some(SECRET))
            .await
    }

    async fn status_of(&self, id: &str) -> String {
        let response = self.get_conversation(id).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["status"].as_str().unwrap().to_owned()
    }
}

/// A delivery as the sandbox sends one (`docs/qpien-assumptions.md`).
fn message_event(event_id: &str, conversation: &str) -> Value {
    json!({
        "_id": event_id,
        "event": "NEW_INCOMING_MESSAGE",
        "createdAt": "2026-12-02T07:30:00.123Z",
        "data": {"message": {"_id": "6650f1000000000000000001", "conversation": conversation,
            "senderType": "CUSTOMER", "channelType": "WHATSAPP", "content": "Hello", "createdAt": "2026-12-02T07:30:00.120Z"}}
    })
}

async fn outcome(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["outcome"].as_str().unwrap().to_owned()
}

/// A status other than the conversation's current one, to change it to.
fn other_status(status: &str) -> &'static str {
    if status == "resolved" {
        "open"
    } else {
        "resolved"
    }
}

#[tokio::test]
async fn the_receiver_answers_404_while_no_secret_is_set() {
    let app = crate::helpers::spawn_app().await;

    let response = app
        .deliver(&message_event("e1", "6650a1000000000000000001"))
        .await;

    assert_problem(response, 404).await;
}

#[tokio::test]
async fn a_change_made_in_qpien_shows_on_the_first_read_after_its_delivery() {
    let app = pushed_app().await;
    let id = app.some_conversation_id().await;
    let before = app.status_of(&id).await;
    let after = other_status(&before);
    app.change_upstream(&id, json!({"status": after.to_uppercase()}))
        .await;
    assert_eq!(
        app.status_of(&id).await,
        before,
        "cached for a minute, unseen"
    );
    let calls = app.upstream_calls_of("getConversation");

    let receipt = outcome(app.deliver(&message_event("e1", &id)).await).await;

    assert_eq!(receipt, "applied");
    assert_eq!(app.status_of(&id).await, after);
    assert_eq!(app.upstream_calls_of("getConversation"), calls + 1);
    assert_eq!(app.status_of(&id).await, after);
    assert_eq!(
        app.upstream_calls_of("getConversation"),
        calls + 1,
        "cached again"
    );
}

#[tokio::test]
async fn a_delivery_outdates_only_its_conversation_and_every_list() {
    let app = pushed_app().await;
    let list: Value = app
        .list_conversations("?pageSize=2")
        .await
        .json()
        .await
        .unwrap();
    let (a, b) = (
        list["items"][0]["id"].as_str().unwrap().to_owned(),
        list["items"][1]["id"].as_str().unwrap().to_owned(),
    );
    app.status_of(&a).await;
    app.status_of(&b).await;
    let (reads, lists) = (
        app.upstream_calls_of("getConversation"),
        app.upstream_calls_of("getConversationList"),
    );

    outcome(app.deliver(&message_event("e1", &a)).await).await;
    app.status_of(&a).await;
    app.status_of(&b).await;
    assert_eq!(app.list_conversations("?pageSize=2").await.status(), 200);

    assert_eq!(
        app.upstream_calls_of("getConversation"),
        reads + 1,
        "only a asked again"
    );
    assert_eq!(app.upstream_calls_of("getConversationList"), lists + 1);
}

#[tokio::test]
async fn a_delivery_that_names_no_conversation_outdates_every_answer() {
    let app = pushed_app().await;
    let id = app.some_conversation_id().await;
    app.status_of(&id).await;
    let calls = app.upstream_calls_of("getConversation");

    let receipt = outcome(
        app.deliver(&json!({"event": "ACCOUNT_SETTINGS_CHANGED"}))
            .await,
    )
    .await;

    assert_eq!(receipt, "unknown-type");
    app.status_of(&id).await;
    assert_eq!(app.upstream_calls_of("getConversation"), calls + 1);
}

#[tokio::test]
async fn a_retried_delivery_is_applied_once() {
    let app = pushed_app().await;
    let id = app.some_conversation_id().await;
    let event = message_event("6650e1000000000000000009", &id);
    outcome(app.deliver(&event).await).await;
    app.status_of(&id).await;
    let calls = app.upstream_calls_of("getConversation");

    let receipt = outcome(app.deliver(&event).await).await;

    assert_eq!(receipt, "duplicate");
    app.status_of(&id).await;
    assert_eq!(
        app.upstream_calls_of("getConversation"),
        calls,
        "still cached"
    );
}

#[tokio::test]
async fn deliveries_without_a_valid_signature_are_refused_and_change_nothing() {
    let app = pushed_app().await;
    let id = app.some_conversation_id().await;
    app.status_of(&id).await;
    let calls = app.upstream_calls_of("getConversation");
    let body = message_event("e1", &id).to_string();

    let unsigned = app.deliver_signed(body.as_bytes(), None).await;
    let wrong_key = app
        .deliver_signed(body.as_bytes(), Some("not-the-secret"))
        .await;
    let tampered = {
        let signed = signature(SECRET, body.as_bytes());
        app.http
            .post(format!("{}/webhooks/qpien", app.address))
            .header("x-qpien-signature", signed)
            .body(body.replace("Hello", "Hellp"))
            .send()
            .await
            .unwrap()
    };

    for response in [unsigned, wrong_key, tampered] {
        assert!(header(&response, "www-authenticate").starts_with("X-Qpien-Signature"));
        let problem = assert_problem(response, 401).await;
        assert_eq!(problem["type"], "/problems/invalid-signature");
    }
    app.status_of(&id).await;
    assert_eq!(
        app.upstream_calls_of("getConversation"),
        calls,
        "nothing was dropped"
    );
}

#[tokio::test]
async fn a_delivery_signed_with_a_retiring_secret_is_still_taken() {
    let app = pushed_app().await;
    let body = message_event("e1", "6650a1000000000000000001").to_string();

    let response = app
        .deliver_signed(body.as_bytes(), Some("retired-secret"))
        .await;

    assert_eq!(outcome(response).await, "applied");
}

#[tokio::test]
async fn oversized_and_malformed_deliveries_get_413_and_400() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            pushed(s);
            s.webhooks.max_body_bytes = 1024;
        }),
        ..Setup::default()
    })
    .await;
    let large = vec![b' '; 2048];

    let too_large = app.deliver_signed(&large, Some(SECRET)).await;
    let not_json = app.deliver_signed(b"event=NEW", Some(SECRET)).await;

    let problem = assert_problem(too_large, 413).await;
    assert_eq!(problem["type"], "/problems/payload-too-large");
    let problem = assert_problem(not_json, 400).await;
    assert_eq!(problem["type"], "/problems/malformed-body");
}

#[tokio::test]
async fn fifty_pollers_that_miss_after_a_delivery_cost_one_qpien_call() {
    let app = pushed_app().await;
    let id = app.some_conversation_id().await;
    app.status_of(&id).await;
    let calls = app.upstream_calls_of("getConversation");

    outcome(app.deliver(&message_event("e1", &id)).await).await;
    let answers = join_all((0..50).map(|_| app.get_conversation(&id))).await;

    assert!(answers.iter().all(|r| r.status() == 200));
    assert_eq!(app.upstream_calls_of("getConversation"), calls + 1);
}

#[tokio::test]
async fn the_last_verified_delivery_is_in_readiness_and_the_metrics() {
    let app = pushed_app().await;
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["webhooks"]["lastVerifiedAt"], Value::Null);

    outcome(
        app.deliver(&message_event("e1", "6650a1000000000000000001"))
            .await,
    )
    .await;
    app.deliver_signed(b"{}", Some("wrong")).await;

    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert!(ready["webhooks"]["lastVerifiedAt"].is_string(), "{ready}");
    assert!(
        ready["webhooks"]["secondsSinceLastVerified"]
            .as_u64()
            .unwrap()
            < 60
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(
        "qpien_rest_webhook_events_total{type=\"NEW_INCOMING_MESSAGE\",outcome=\"applied\"} 1"
    ));
    assert!(
        metrics
            .contains("qpien_rest_webhook_events_total{type=\"none\",outcome=\"bad-signature\"} 1")
    );
    assert!(metrics.contains("qpien_rest_invalidations_total{scope=\"conversation\"} 1"));
    assert!(!metrics.contains("qpien_rest_webhook_last_verified_timestamp_seconds 0\n"));
}

/// Three replicas, one Redis, caches warm on each: a delivery to one makes every one
/// read Qpien's new state, before any TTL could.
#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn once_one_replica_answered_a_delivery_no_replica_serves_the_old_state() {
    let redis = RedisServer::start().await;
    let sandbox_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = qpien_sandbox::Sandbox::start(sandbox_listener, Default::default()).unwrap();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let shared = redis.settings();
        replicas.push(
            spawn_app_with(Setup {
                upstream_url: Some(sandbox.url()),
                settings: Box::new(move |s| {
                    pushed(s);
                    s.redis = Some(shared);
                }),
                ..Setup::default()
            })
            .await,
        );
    }
    let id = replicas[0].some_conversation_id().await;
    let before = replicas[0].status_of(&id).await;
    for replica in &replicas {
        assert_eq!(replica.status_of(&id).await, before);
    }
    let after = other_status(&before);
    // Behind the facade's back, as Qpien's own app would.
    let with_sandbox = TestApp {
        address: replicas[0].address.clone(),
        http: reqwest::Client::new(),
        sandbox: Some(sandbox),
        _data_dir: tempfile::tempdir().unwrap(),
    };
    with_sandbox
        .change_upstream(&id, json!({"status": after.to_uppercase()}))
        .await;
    assert_eq!(replicas[2].status_of(&id).await, before, "cached, unseen");

    outcome(replicas[1].deliver(&message_event("e1", &id)).await).await;

    for replica in &replicas {
        assert_eq!(replica.status_of(&id).await, after);
    }
    // The retry Qpien may send to another replica is applied once.
    assert_eq!(
        outcome(replicas[2].deliver(&message_event("e1", &id)).await).await,
        "duplicate"
    );
}

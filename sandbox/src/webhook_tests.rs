//! Tests of the webhook feature against a real receiver on a local port: what is sent
//! (exact payloads, signature checked by an HMAC computed here from SHA-256 alone),
//! retries, order, registration over HTTP, and the activity generator.

use std::collections::{BTreeMap, VecDeque};
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::tests::{GET_OP, Harness, UPDATE_OP, conversation_id};
use super::*;

/// HMAC-SHA256 written out from RFC 2104, so the sandbox's signature is checked by code
/// that shares nothing with it but SHA-256.
fn hmac_by_hand(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_hand_written_hmac_meets_rfc_4231() {
    // RFC 4231, test case 2.
    assert_eq!(
        hmac_by_hand(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

/// How the receiver answers one delivery.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// No answer for longer than the sandbox waits.
    Hang,
}

#[derive(Clone, Debug)]
struct Delivery {
    signature: String,
    content_type: String,
    user_agent: String,
    body: Vec<u8>,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery is JSON")
    }
}

struct Shared {
    script: Mutex<VecDeque<Reply>>,
    got: Mutex<Vec<Delivery>>,
}

/// A webhook endpoint on 127.0.0.1: records every delivery, answers as scripted and then
/// `200 OK`.
struct Receiver {
    url: String,
    shared: web::Data<Shared>,
    handle: ServerHandle,
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    shared.got.lock().unwrap().push(Delivery {
        signature: header("x-qpien-signature"),
        content_type: header("content-type"),
        user_agent: header("user-agent"),
        body: body.to_vec(),
    });
    let reply = shared.script.lock().unwrap().pop_front();
    match reply.unwrap_or(Reply::Status(200)) {
        Reply::Status(code) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).finish()
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            HttpResponse::Ok().finish()
        }
    }
}

impl Receiver {
    fn start(script: &[Reply]) -> Self {
        let shared = web::Data::new(Shared {
            script: Mutex::new(script.iter().copied().collect()),
            got: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/qpien", listener.local_addr().unwrap());
        let data = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hooks/qpien", web::post().to(receive))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url,
            shared,
            handle,
        }
    }

    fn got(&self) -> Vec<Delivery> {
        self.shared.got.lock().unwrap().clone()
    }

    /// The first `n` deliveries, once they have arrived.
    async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        eventually(&format!("{n} deliveries"), || {
            let got = self.got();
            (got.len() >= n).then(|| got[..n].to_vec())
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Polls `check` until it gives a value, for at most 10 seconds.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fast_retries() -> SandboxConfig {
    SandboxConfig {
        webhook_retry_base: Duration::from_millis(20),
        webhook_retry_cap: Duration::from_millis(100),
        webhook_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

async fn update(h: &Harness, token: &str, n: usize, input: Value) -> Value {
    let answer = h
        .call(
            Some(token),
            UPDATE_OP,
            json!({"conversationId": conversation_id(n), "input": input}),
        )
        .await;
    assert!(answer.body["errors"].is_null(), "{}", answer.body);
    answer.body["data"]["updateConversation"].clone()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[tokio::test]
async fn an_update_is_delivered_signed_with_the_conversation_as_read() {
    let h = Harness::start(SandboxConfig::default());
    let receiver = Receiver::start(&[]);
    let hook = h
        .sandbox
        .register_webhook(&receiver.url, &WebhookEvent::ALL)
        .unwrap();
    assert!(is_hex(&hook.secret, 32), "{}", hook.secret);
    assert!(is_hex(&hook.endpoint.id, 24), "{}", hook.endpoint.id);
    let token = h.token().await;

    // Conversation 1 is seeded with agent 2; agent 3 joining is a change.
    let agent = "6650a3000000000000000003";
    let updated = update(
        &h,
        &token,
        1,
        json!({"joinedPerson": agent, "isStarred": true}),
    )
    .await;
    update(&h, &token, 1, json!({"priority": "URGENT"})).await;
    // The same person again is no join.
    update(&h, &token, 1, json!({"joinedPerson": agent})).await;

    let got = receiver.wait_for(4).await;
    let events: Vec<Value> = got.iter().map(Delivery::json).collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "CONVERSATION_UPDATED",
            "JOIN_CONVERSATION",
            "CONVERSATION_UPDATED",
            "CONVERSATION_UPDATED"
        ]
    );
    for (delivery, event) in got.iter().zip(&events) {
        assert_eq!(
            delivery.signature,
            hmac_by_hand(hook.secret.as_bytes(), &delivery.body)
        );
        assert_eq!(delivery.content_type, "application/json");
        assert_eq!(delivery.user_agent, "qpien-sandbox-webhooks/1");
        // Compact JSON, in the contract's key order: re-serialising changes no byte.
        assert_eq!(serde_json::to_vec(event).unwrap(), delivery.body);
        let keys: Vec<&String> = event.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["_id", "event", "createdAt", "data"]);
        assert!(is_hex(event["_id"].as_str().unwrap(), 24), "{event}");
        let created = event["createdAt"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(created).is_ok()
                && created.ends_with('Z')
                && created.len() == "2026-12-02T07:30:00.123Z".len(),
            "{created}"
        );
    }
    let ids: std::collections::BTreeSet<_> = events.iter().map(|e| e["_id"].to_string()).collect();
    assert_eq!(ids.len(), 4, "each event has an id of its own");

    // The conversation exactly as the mutation (and getConversation) answers it.
    assert_eq!(events[0]["data"], json!({"conversation": updated}));
    assert_eq!(
        events[1]["data"],
        json!({"conversation": {"_id": conversation_id(1), "joinedPerson": agent}})
    );
    let read = h
        .call(
            Some(&token),
            GET_OP,
            json!({"conversationId": conversation_id(1)}),
        )
        .await;
    assert_eq!(
        events[3]["data"]["conversation"],
        read.body["data"]["getConversation"]
    );
    assert_eq!(events[3]["data"]["conversation"]["priority"], "URGENT");

    let stats = eventually("no pending delivery", || {
        let s = h.sandbox.stats().webhook_deliveries;
        (s.pending == 0).then_some(s)
    })
    .await;
    assert_eq!((stats.attempted, stats.succeeded, stats.failed), (4, 4, 0));
    assert_eq!(stats.events["CONVERSATION_UPDATED"], 3);
    assert_eq!(stats.events["JOIN_CONVERSATION"], 1);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_in_order_with_the_same_id_and_bytes() {
    let h = Harness::start(fast_retries());
    let receiver = Receiver::start(&[Reply::Hang, Reply::Status(500), Reply::Status(503)]);
    h.sandbox
        .register_webhook(&receiver.url, &[WebhookEvent::ConversationUpdated])
        .unwrap();
    let token = h.token().await;
    update(&h, &token, 2, json!({"isStarred": true})).await;
    update(&h, &token, 2, json!({"isStarred": false})).await;

    let got = receiver.wait_for(5).await;
    let first = &got[0];
    for retry in &got[1..4] {
        assert_eq!(retry.body, first.body, "a retry sends the same bytes");
        assert_eq!(retry.signature, first.signature);
    }
    assert_eq!(first.json()["data"]["conversation"]["isStarred"], true);
    let second = got[4].json();
    assert_eq!(second["data"]["conversation"]["isStarred"], false);
    assert_ne!(second["_id"], first.json()["_id"]);

    let stats = eventually("no pending delivery", || {
        let s = h.sandbox.stats();
        (s.webhook_deliveries.pending == 0).then_some(s)
    })
    .await
    .webhook_deliveries;
    assert_eq!((stats.attempted, stats.succeeded, stats.failed), (5, 2, 3));
    h.sandbox.stop().await;
}

#[tokio::test]
async fn a_delivery_is_given_up_after_the_configured_attempts() {
    let h = Harness::start(SandboxConfig {
        webhook_max_attempts: Some(2),
        ..fast_retries()
    });
    let receiver = Receiver::start(&[Reply::Status(500); 3]);
    h.sandbox
        .register_webhook(&receiver.url, &[WebhookEvent::ConversationUpdated])
        .unwrap();
    let token = h.token().await;
    update(&h, &token, 2, json!({"isStarred": true})).await;
    let stats = eventually("the delivery given up", || {
        let s = h.sandbox.stats().webhook_deliveries;
        (s.abandoned == 1).then_some(s)
    })
    .await;
    assert_eq!((stats.attempted, stats.failed, stats.pending), (2, 2, 0));
    assert_eq!(receiver.got().len(), 2);
    h.sandbox.stop().await;
}

#[tokio::test]
async fn registration_over_http() {
    let h = Harness::start(SandboxConfig::default());
    let base = h.sandbox.url().replace("/api/v1", "");
    let active = Receiver::start(&[]);
    let disabled = Receiver::start(&[]);
    let post = |body: Value| h.http.post(format!("{base}/webhooks")).json(&body).send();

    let answer = post(json!({"endpointUrl": active.url, "events": ["CONVERSATION_UPDATED"]}))
        .await
        .unwrap();
    assert_eq!(answer.status(), 201);
    let created: Value = answer.json().await.unwrap();
    assert!(is_hex(created["secret"].as_str().unwrap(), 32), "{created}");
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["events"], json!(["CONVERSATION_UPDATED"]));
    let secret = created["secret"].as_str().unwrap().to_owned();
    let answer = post(json!({
        "endpointUrl": disabled.url,
        "events": ["CONVERSATION_UPDATED"],
        "status": "DISABLED"
    }))
    .await
    .unwrap();
    assert_eq!(answer.status(), 201);
    let other: Value = answer.json().await.unwrap();
    assert_ne!(other["secret"], created["secret"]);

    for bad in [
        json!({"endpointUrl": active.url, "events": ["MESSAGE_DELETED"]}),
        json!({"endpointUrl": active.url, "events": []}),
        json!({"endpointUrl": "not a url", "events": ["JOIN_CONVERSATION"]}),
        json!({"endpointUrl": active.url, "events": ["JOIN_CONVERSATION"], "status": "ON"}),
        json!({"events": ["JOIN_CONVERSATION"]}),
    ] {
        let answer = post(bad.clone()).await.unwrap();
        assert_eq!(answer.status(), 400, "{bad}");
        let body: Value = answer.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }

    let listed: Value = h
        .http
        .get(format!("{base}/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut without_secret = created.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(listed[0], without_secret, "listed without its secret");
    assert!(listed[1].get("secret").is_none());
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // Only the active endpoint is sent the event.
    let token = h.token().await;
    update(&h, &token, 4, json!({"isStarred": true})).await;
    let got = active.wait_for(1).await;
    assert_eq!(
        got[0].signature,
        hmac_by_hand(secret.as_bytes(), &got[0].body)
    );
    let stats = eventually("the delivery", || {
        let s = h.sandbox.stats().webhook_deliveries;
        (s.succeeded == 1).then_some(s)
    })
    .await;
    assert_eq!(stats.attempted, 1, "nothing for the disabled endpoint");
    assert!(disabled.got().is_empty());

    let delete = |id: &str| h.http.delete(format!("{base}/webhooks/{id}")).send();
    let id = created["_id"].as_str().unwrap();
    assert_eq!(delete(id).await.unwrap().status(), 204);
    assert_eq!(delete(id).await.unwrap().status(), 404);
    let listed: Value = h
        .http
        .get(format!("{base}/webhooks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    update(&h, &token, 4, json!({"isStarred": false})).await;
    assert_eq!(
        h.sandbox.stats().webhook_deliveries.pending,
        0,
        "nothing is queued for a removed endpoint"
    );
    h.sandbox.stop().await;
}

/// (event type, conversation id, what changed) of each delivery.
fn summary(got: &[Delivery]) -> Vec<(String, String, String)> {
    got.iter()
        .map(|d| {
            let e = d.json();
            let kind = e["event"].as_str().unwrap().to_owned();
            let data = &e["data"];
            if kind == "JOIN_CONVERSATION" {
                let c = &data["conversation"];
                (kind, c["_id"].to_string(), c["joinedPerson"].to_string())
            } else {
                let m = &data["message"];
                (kind, m["conversation"].to_string(), m["_id"].to_string())
            }
        })
        .collect()
}

#[tokio::test]
async fn the_activity_generator_changes_the_store_then_reports_it() {
    const STEPS: usize = 40;
    let config = SandboxConfig {
        activity_per_minute: 60_000,
        activity_seed: 7,
        activity_limit: Some(STEPS as u64),
        ..Default::default()
    };
    let h = Harness::start(config.clone());
    let receiver = Receiver::start(&[]);
    h.sandbox
        .register_webhook(&receiver.url, &WebhookEvent::ALL)
        .unwrap();
    let got = receiver.wait_for(STEPS).await;
    let token = h.token().await;

    // Replayed in order, the events give each conversation's last message and joined
    // agent; the store must show exactly those.
    let mut last_message: BTreeMap<String, Value> = BTreeMap::new();
    let mut joined: BTreeMap<String, Value> = BTreeMap::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for event in got.iter().map(Delivery::json) {
        let kind = event["event"].as_str().unwrap().to_owned();
        *kinds.entry(kind.clone()).or_default() += 1;
        let data = &event["data"];
        match kind.as_str() {
            "NEW_INCOMING_MESSAGE" | "NEW_OUTGOING_MESSAGE" => {
                let m = &data["message"];
                assert_eq!(
                    m["senderType"],
                    if kind == "NEW_INCOMING_MESSAGE" {
                        "CUSTOMER"
                    } else {
                        "AGENT"
                    }
                );
                last_message.insert(m["conversation"].as_str().unwrap().to_owned(), m.clone());
            }
            "JOIN_CONVERSATION" => {
                let c = &data["conversation"];
                joined.insert(
                    c["_id"].as_str().unwrap().to_owned(),
                    c["joinedPerson"].clone(),
                );
            }
            other => panic!("unexpected event {other}"),
        }
    }
    assert!(
        kinds.len() == 3,
        "customers write, agents write and join: {kinds:?}"
    );
    let ids: std::collections::BTreeSet<&String> =
        last_message.keys().chain(joined.keys()).collect();
    for id in ids {
        let read = h
            .call(Some(&token), GET_OP, json!({"conversationId": id}))
            .await;
        let c = &read.body["data"]["getConversation"];
        if let Some(m) = last_message.get(id) {
            let shown = &c["lastMessage"];
            assert_eq!(shown["_id"], m["_id"], "{id}");
            assert_eq!(shown["content"], m["content"]);
            assert_eq!(shown["createdAt"], m["createdAt"]);
            assert_eq!(shown["channelType"], m["channelType"]);
            assert_eq!(shown["isIncoming"], m["senderType"] == "CUSTOMER");
            if m["senderType"] == "CUSTOMER" {
                assert_ne!(c["status"], "RESOLVED", "a customer's message reopens {id}");
            }
        }
        if let Some(person) = joined.get(id) {
            assert_eq!(&c["joinedPerson"], person, "{id}");
        }
    }

    // The same seed gives the same activity.
    let again = Harness::start(config);
    let receiver_again = Receiver::start(&[]);
    again
        .sandbox
        .register_webhook(&receiver_again.url, &WebhookEvent::ALL)
        .unwrap();
    let got_again = receiver_again.wait_for(STEPS).await;
    assert_eq!(summary(&got_again), summary(&got));
    assert_eq!(
        h.sandbox
            .stats()
            .webhook_deliveries
            .events
            .values()
            .sum::<u64>(),
        STEPS as u64
    );
    h.sandbox.stop().await;
    again.sandbox.stop().await;
}

//! Webhook subscriptions (issue 19), as an integrator sees them: a real receiver (an
//! HTTP server in the test) gets the events of the change feed, in order, signed as the
//! Standard Webhooks spec says; failures are retried, `410` removes, a key sees only its
//! own, and callback URLs inside the network are refused.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use qpien_rest::settings::Settings;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{
    PATIENCE, Setup, TestApp, add_key, assert_problem, eventually, spawn_app_with,
};
use crate::process::Service;
use crate::redis_server::RedisServer;
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig};

/// One delivery as the receiver got it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How the receiver answers the next delivery: a status and a `Retry-After`.
type Answer = (u16, Option<&'static str>);

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Delivery>>,
    /// Answers to give, first first; 200 when none is left.
    script: Mutex<VecDeque<Answer>>,
    /// How many of the next deliveries get no answer for a minute.
    stall: Mutex<u32>,
}

/// A webhook receiver on a port of its own.
pub struct Receiver {
    pub url: String,
    inbox: Arc<Inbox>,
    _server: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, body: web::Bytes, inbox: web::Data<Inbox>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    inbox.received.lock().unwrap().push(Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let stall = {
        let mut stall = inbox.stall.lock().unwrap();
        let now = *stall > 0;
        *stall = stall.saturating_sub(1);
        now
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let (status, retry_after) = inbox
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, None));
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(after) = retry_after {
        response.insert_header(("retry-after", after));
    }
    response.finish()
}

impl Receiver {
    pub async fn start() -> Self {
        let inbox = Arc::new(Inbox::default());
        let data = web::Data::from(inbox.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            inbox,
            _server: handle,
        }
    }

    /// Answers the next deliveries so, in turn.
    pub fn answer(&self, answers: &[Answer]) {
        self.inbox
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
    }

    /// Leaves the next `n` deliveries without an answer for a minute.
    pub fn stall(&self, n: u32) {
        *self.inbox.stall.lock().unwrap() = n;
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.inbox.received.lock().unwrap().clone()
    }

    /// The deliveries, once there are at least `n`.
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        eventually(&format!("{n} deliveries"), PATIENCE, async || {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

/// Whether `delivery` carries a valid Standard Webhooks signature under `secret`.
pub fn signed_by(delivery: &Delivery, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", delivery.id, delivery.timestamp).as_bytes());
    mac.update(&delivery.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    delivery.signature.split(' ').any(|s| s == expected)
}

/// Service mode over a fresh sandbox whose callbacks may reach this machine over
/// `http`, with quick retries, and `tune`.
pub async fn subscriptions_app(tune: impl FnOnce(&mut Settings) + 'static) -> TestApp {
    spawn_app_with(Setup {
        settings: Box::new(move |s| {
            s.subscriptions.allow_http = Some(true);
            s.subscriptions.allow_private_networks = Some(true);
            s.subscriptions.retry_base = Duration::from_millis(50);
            s.subscriptions.retry_max = Duration::from_millis(200);
            tune(s);
        }),
        ..Setup::default()
    })
    .await
}

impl TestApp {
    pub async fn post_json(
        &self,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.address)).json(body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        request.send().await.unwrap()
    }

    async fn send_as(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::Response {
        self.http
            .request(method, format!("{}{path}", self.address))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap()
    }

    /// Creates a subscription to `url`; its answer.
    pub async fn subscribe(&self, url: &str, extra: Value) -> Value {
        let mut body = json!({ "url": url, "description": "test receiver" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let response = self.post_json("/subscriptions", &body, None).await;
        assert_eq!(response.status(), 201);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let created: Value = response.json().await.unwrap();
        assert_eq!(
            location,
            format!("/subscriptions/{}", created["id"].as_str().unwrap())
        );
        created
    }

    /// Flips `starred` of `id` through the facade: one `conversation.updated` event.
    pub async fn flip_star(&self, id: &str) {
        let current: Value = self.get_conversation(id).await.json().await.unwrap();
        let starred = !current["starred"].as_bool().unwrap();
        let response = self.merge_patch(id, json!({ "starred": starred })).await;
        assert_eq!(response.status(), 200);
    }

    pub async fn subscription(&self, id: &str) -> Value {
        let response = self.get(&format!("/subscriptions/{id}")).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Subscription `id` once it has recorded `attempts` attempts and has no backlog:
    /// the receiver sees a delivery just before the service hears its answer.
    pub async fn settled(&self, id: &str, attempts: usize) -> Value {
        eventually(
            &format!("{attempts} attempts recorded"),
            PATIENCE,
            async || {
                let shown = self.subscription(id).await;
                let recorded = shown["lastAttempts"].as_array().unwrap().len();
                (recorded == attempts && shown["backlog"] == 0).then_some(shown)
            },
        )
        .await
    }
}

#[tokio::test]
async fn events_are_delivered_in_order_signed_as_standard_webhooks_says() {
    let app = subscriptions_app(|_| {}).await;
    let receiver = Receiver::start().await;
    let id = app.some_conversation_id().await;
    let created = app
        .subscribe(&receiver.url, json!({ "types": ["conversation.updated"] }))
        .await;
    let secret = created["secret"].as_str().unwrap();

    for _ in 0..3 {
        app.flip_star(&id).await;
    }
    let deliveries = receiver.wait_for(3).await;
    let feed: Value = app
        .get("/conversations/changes?after=0")
        .await
        .json()
        .await
        .unwrap();

    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["status"], "active");
    let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    let events: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, events, "each event once, in the feed's order");
    for delivery in &deliveries {
        assert!(signed_by(delivery, secret), "{delivery:?}");
        let age = chrono::Utc::now().timestamp() - delivery.timestamp.parse::<i64>().unwrap();
        assert!((0..60).contains(&age));
        let event = delivery.json();
        assert_eq!(event["id"], delivery.id.as_str());
        assert_eq!(event["type"], "conversation.updated");
        assert_eq!(event["conversationId"], id.as_str());
    }
    let shown = app.settled(created["id"].as_str().unwrap(), 3).await;
    assert_eq!(shown["deliveredThrough"], ids[2]);
    assert_eq!(shown["backlog"], 0);
    assert!(shown.get("secret").is_none(), "the secret is shown once");
    let statuses: Vec<&Value> = shown["lastAttempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(200); 3]);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_the_same_id_until_it_succeeds_and_later_events_wait() {
    let app = subscriptions_app(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, None), (502, None)]);
    let id = app.some_conversation_id().await;
    let created = app.subscribe(&receiver.url, json!({})).await;

    app.flip_star(&id).await;
    app.flip_star(&id).await;
    let deliveries = receiver.wait_for(4).await;
    let shown = app.settled(created["id"].as_str().unwrap(), 4).await;

    let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids[0], ids[1]);
    assert_eq!(ids[1], ids[2]);
    assert!(
        ids[3] > ids[2],
        "the second event only after the first: {ids:?}"
    );
    assert!(
        deliveries
            .iter()
            .all(|d| signed_by(d, created["secret"].as_str().unwrap()))
    );
    let statuses: Vec<u64> = shown["lastAttempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 502, 200, 200]);
    assert_eq!(shown["failingSince"], Value::Null);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for series in [
        "qpien_rest_subscription_deliveries_total{outcome=\"delivered\"} 2",
        "qpien_rest_subscription_deliveries_total{outcome=\"failed\"} 2",
        "qpien_rest_subscription_retries_total 2",
        "qpien_rest_subscription_backlog_events 0",
        "qpien_rest_subscription_delivery_latency_seconds_count 2",
    ] {
        assert!(metrics.contains(series), "{series} not in:\n{metrics}");
    }
}

#[tokio::test]
async fn retry_after_from_the_receiver_is_honoured() {
    let app = subscriptions_app(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(503, Some("2"))]);
    let id = app.some_conversation_id().await;
    let created = app.subscribe(&receiver.url, json!({})).await;

    app.flip_star(&id).await;
    let first = receiver.wait_for(1).await;
    let sub = created["id"].as_str().unwrap();
    let failing = eventually("the failure recorded", PATIENCE, async || {
        let shown = app.subscription(sub).await;
        shown["failingSince"].is_string().then_some(shown)
    })
    .await;
    let deliveries = receiver.wait_for(2).await;

    let gap = deliveries[1].at - first[0].at;
    assert!(gap >= Duration::from_millis(1_900), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(5), "retried after {gap:?}");
    assert!(failing["failingSince"].is_string(), "{failing}");
    assert!(failing["nextAttemptAt"].is_string(), "{failing}");
}

#[tokio::test]
async fn gone_from_the_receiver_removes_the_subscription() {
    let app = subscriptions_app(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(410, None)]);
    let id = app.some_conversation_id().await;
    let created = app.subscribe(&receiver.url, json!({})).await;
    let path = format!("/subscriptions/{}", created["id"].as_str().unwrap());

    app.flip_star(&id).await;
    receiver.wait_for(1).await;
    eventually("the subscription removed", PATIENCE, async || {
        (app.get(&path).await.status() == 404).then_some(())
    })
    .await;
    app.flip_star(&id).await;
    let list: Value = app.get("/subscriptions").await.json().await.unwrap();

    assert_eq!(list["items"], json!([]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "nothing after the 410");
}

#[tokio::test]
async fn a_subscription_failing_for_the_whole_horizon_is_disabled_and_can_be_enabled_again() {
    let app = subscriptions_app(|s| {
        s.subscriptions.horizon = Duration::from_millis(600);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(500, None); 200]);
    let id = app.some_conversation_id().await;
    let created = app.subscribe(&receiver.url, json!({})).await;
    let sub = created["id"].as_str().unwrap().to_owned();

    app.flip_star(&id).await;
    let disabled = eventually("the subscription disabled", PATIENCE, async || {
        let shown = app.subscription(&sub).await;
        (shown["status"] == "disabled").then_some(shown)
    })
    .await;
    let attempts = receiver.received().len();
    let ready = app.get("/readyz").await.status();
    receiver.inbox.script.lock().unwrap().clear();
    let enabled = app
        .post_json(&format!("/subscriptions/{sub}/enable"), &json!({}), None)
        .await;
    assert_eq!(enabled.status(), 200);
    let deliveries = receiver.wait_for(attempts + 1).await;

    assert!(
        disabled["disabledReason"]
            .as_str()
            .unwrap()
            .contains("horizon"),
        "{disabled}"
    );
    assert!(attempts >= 2, "retried before giving up: {attempts}");
    assert_eq!(
        ready, 200,
        "a failing receiver is no reason for unreadiness"
    );
    assert_eq!(
        deliveries.last().unwrap().id,
        deliveries[0].id,
        "the same event, at last"
    );
    let shown = app.subscription(&sub).await;
    assert_eq!(shown["status"], "active");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_previous_one_during_the_grace() {
    let app = subscriptions_app(|_| {}).await;
    let receiver = Receiver::start().await;
    let id = app.some_conversation_id().await;
    let created = app.subscribe(&receiver.url, json!({})).await;
    let old = created["secret"].as_str().unwrap();

    let rotated = app
        .post_json(
            &format!(
                "/subscriptions/{}/rotate-secret",
                created["id"].as_str().unwrap()
            ),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap();
    app.flip_star(&id).await;
    let delivery = &receiver.wait_for(1).await[0];

    assert_ne!(new, old);
    assert!(
        signed_by(delivery, new) && signed_by(delivery, old),
        "{delivery:?}"
    );
    assert_eq!(delivery.signature.split(' ').count(), 2);
}

#[tokio::test]
async fn a_key_sees_and_removes_only_its_own_subscriptions_up_to_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    let crm = add_key(&file, "crm", "read,write", None);
    let erp = add_key(&file, "erp", "write", None);
    let reader = add_key(&file, "dashboard", "read", None);
    let app = subscriptions_app(move |s| {
        s.api_keys_file = Some(file);
        s.subscriptions.per_key = 2;
    })
    .await;
    let body = json!({ "url": "http://127.0.0.1:9/hook" });

    let first = app.post_json("/subscriptions", &body, Some(&crm)).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let path = format!("/subscriptions/{}", first["id"].as_str().unwrap());
    assert_eq!(
        app.post_json("/subscriptions", &body, Some(&crm))
            .await
            .status(),
        201
    );
    let over = app.post_json("/subscriptions", &body, Some(&crm)).await;
    let others = app.post_json("/subscriptions", &body, Some(&erp)).await;
    let by_reader = app.post_json("/subscriptions", &body, Some(&reader)).await;
    let seen_by_erp = app.send_as(reqwest::Method::GET, &path, &erp).await;
    let removed_by_erp = app.send_as(reqwest::Method::DELETE, &path, &erp).await;
    let rotated_by_erp = app
        .send_as(
            reqwest::Method::POST,
            &format!("{path}/rotate-secret"),
            &erp,
        )
        .await;
    let erp_list: Value = app
        .send_as(reqwest::Method::GET, "/subscriptions", &erp)
        .await
        .json()
        .await
        .unwrap();
    let crm_list: Value = app
        .send_as(reqwest::Method::GET, "/subscriptions", &crm)
        .await
        .json()
        .await
        .unwrap();
    let removed = app.send_as(reqwest::Method::DELETE, &path, &crm).await;
    let after = app.send_as(reqwest::Method::GET, &path, &crm).await;

    let over = assert_problem(over, 409).await;
    assert_eq!(over["type"], "/problems/too-many-subscriptions");
    assert_eq!(others.status(), 201, "the cap is per key");
    assert_eq!(
        assert_problem(by_reader, 403).await["requiredScope"],
        "write"
    );
    for response in [seen_by_erp, removed_by_erp, rotated_by_erp] {
        let problem = assert_problem(response, 404).await;
        assert_eq!(problem["type"], "/problems/subscription-not-found");
    }
    assert_eq!(erp_list["items"].as_array().unwrap().len(), 1);
    assert_eq!(crm_list["items"].as_array().unwrap().len(), 2);
    assert!(
        crm_list["items"]
            .to_string()
            .contains(first["id"].as_str().unwrap())
    );
    assert!(crm_list["items"][0].get("secret").is_none());
    assert_eq!(removed.status(), 204);
    assert_eq!(after.status(), 404);
}

#[tokio::test]
async fn callbacks_into_the_network_are_refused_with_the_reason() {
    // Neither http nor private networks allowed: the production default.
    let app = spawn_app_with(Setup::default()).await;
    for (url, reason) in [
        ("http://169.254.169.254/latest/meta-data/", "https"),
        (
            "https://169.254.169.254/latest/meta-data/",
            "cloud metadata",
        ),
        ("https://10.0.0.1/hook", "private"),
        ("https://[::1]:8443/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://[fd00::1]/hook", "unique-local"),
        ("https://localhost:8443/hook", "loopback"),
        ("http://10.0.0.1/hook", "https"),
    ] {
        let response = app
            .post_json("/subscriptions", &json!({ "url": url }), None)
            .await;
        let problem = assert_problem(response, 422).await;
        assert_eq!(problem["type"], "/problems/callback-url-refused", "{url}");
        let detail = problem["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(reason), "{url}: {detail}");
        assert_eq!(problem["errors"][0]["pointer"], "#/url");
    }
    let list: Value = app.get("/subscriptions").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn a_malformed_subscription_names_what_is_wrong() {
    let app = subscriptions_app(|_| {}).await;
    let unknown_type = app
        .post_json(
            "/subscriptions",
            &json!({ "url": "http://127.0.0.1:9/", "types": ["conversation.deleted"] }),
            None,
        )
        .await;
    let bad_conversation = app
        .post_json(
            "/subscriptions",
            &json!({ "url": "http://127.0.0.1:9/", "conversationId": "nope" }),
            None,
        )
        .await;

    let problem = assert_problem(unknown_type, 422).await;
    assert!(
        problem["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("conversation.deleted")
    );
    let problem = assert_problem(bad_conversation, 422).await;
    assert_eq!(problem["errors"][0]["pointer"], "#/conversationId");
}

#[tokio::test]
async fn pass_through_mode_offers_no_subscriptions() {
    let app = spawn_app_with(Setup::pass_through()).await;
    let response = app
        .http
        .post(format!("{}/subscriptions", app.address))
        .bearer_auth("any-token")
        .json(&json!({ "url": "https://hooks.example.com/x" }))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 403).await;
    assert_eq!(problem["type"], "/problems/feed-not-offered");
}

#[tokio::test]
async fn a_delivery_cut_short_by_kill_9_is_made_after_the_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    let data = data_dir.path().to_str().unwrap().to_owned();
    // The embedded sandbox of `cargo run`, quiet, so the only event is the test's.
    let env = [
        ("DATA_DIR", data.as_str()),
        ("SANDBOX_ACTIVITY_PER_MINUTE", "0"),
        ("SUBSCRIPTION_RETRY_BASE_MS", "50"),
    ];
    let receiver = Receiver::start().await;
    receiver.stall(1);
    qpien_rest::install_tls_provider();
    let http = reqwest::Client::new();
    let first = Service::start(&env);
    let created: Value = http
        .post(format!("{}/subscriptions", first.address))
        .json(&json!({ "url": receiver.url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let list: Value = http
        .get(format!("{}/conversations?pageSize=1", first.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let patched = http
        .patch(format!("{}/conversations/{id}", first.address))
        .header("content-type", "application/merge-patch+json")
        .body(json!({ "priority": "urgent" }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);

    let during = receiver.wait_for(1).await;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let second = Service::start(&env);
    let deliveries = receiver.wait_for(2).await;
    let path = format!(
        "{}/subscriptions/{}",
        second.address,
        created["id"].as_str().unwrap()
    );
    let shown: Value = eventually("the backlog delivered", PATIENCE, async || {
        let shown: Value = http.get(&path).send().await.ok()?.json().await.ok()?;
        (shown["backlog"] == 0).then_some(shown)
    })
    .await;

    assert_eq!(deliveries[1].id, during[0].id, "the same event, again");
    assert_eq!(deliveries[1].body, during[0].body);
    assert!(
        signed_by(&deliveries[1], &secret),
        "the secret survived the restart"
    );
    assert!(shown["deliveredThrough"].as_str().unwrap() >= during[0].id.as_str());
    drop(first);
}

/// The ids of `deliveries`, in arrival order.
fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.id.clone()).collect()
}

/// With Redis, three replicas (real binaries) share the subscriptions: each event is
/// delivered once per subscription, not once per replica, and when a replica is killed
/// (`kill -9`) the others take its subscriptions over once its leases expire.
/// Each subscription is created through another replica, which takes it at once.
#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn three_replicas_deliver_each_event_once_per_subscription_and_take_over_a_killed_one() {
    let redis = RedisServer::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::start(listener, SandboxConfig::default()).unwrap();
    let (redis_url, upstream) = (redis.url(), sandbox.url());
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("QPIEN_API_URL", upstream.as_str()),
        ("QPIEN_CLIENT_ID", DEMO_CLIENT_ID),
        ("QPIEN_CLIENT_SECRET", DEMO_CLIENT_SECRET),
        ("QPIEN_REPLICAS", "3"),
        ("SUBSCRIPTION_ALLOW_HTTP", "true"),
        ("SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS", "true"),
        ("SUBSCRIPTION_LEASE_MS", "1500"),
    ];
    let mut replicas: Vec<Option<Service>> = (0..3).map(|_| Some(Service::start(&env))).collect();
    let address =
        |replicas: &[Option<Service>], i: usize| replicas[i].as_ref().unwrap().address.clone();
    let http = reqwest::Client::new();
    let mut receivers = Vec::new();
    for i in 0..3 {
        let receiver = Receiver::start().await;
        // Each subscription is created on another replica, which likely takes it.
        let created = http
            .post(format!("{}/subscriptions", address(&replicas, i)))
            .json(&json!({ "url": receiver.url }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        receivers.push(receiver);
    }
    let id = {
        let list: Value = http
            .get(format!(
                "{}/conversations?pageSize=1",
                address(&replicas, 0)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["items"][0]["id"].as_str().unwrap().to_owned()
    };
    let patch = async |through: &str, n: usize| {
        let response = http
            .patch(format!("{through}/conversations/{id}"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({ "starred": n.is_multiple_of(2) }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };

    for n in 0..6 {
        patch(&address(&replicas, n % 3), n).await;
    }
    let mut first_round = Vec::new();
    for receiver in &receivers {
        first_round.push(ids(&receiver.wait_for(6).await));
    }
    // Settled: nothing more arrives than the six.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled: Vec<usize> = receivers.iter().map(|r| r.received().len()).collect();
    // Two of three killed: whichever held a subscription, most moved to the survivor.
    for replica in &mut replicas[..2] {
        let service = replica.take().unwrap();
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &service.pid().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        drop(service);
    }
    for n in 6..10 {
        patch(&address(&replicas, 2), n).await;
    }
    let mut all = Vec::new();
    for receiver in &receivers {
        let got = eventually("the events after the kill", PATIENCE, async || {
            let got = ids(&receiver.received());
            let mut distinct = got.clone();
            distinct.dedup();
            (distinct.len() >= 10).then_some(got)
        })
        .await;
        all.push(got);
    }

    for got in &first_round {
        assert_eq!(
            got, &first_round[0],
            "every subscription, every event, in order"
        );
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(&sorted, got, "once each, in order: {got:?}");
    }
    assert_eq!(
        settled,
        [6, 6, 6],
        "once per subscription, not once per replica"
    );
    for got in &all {
        let mut distinct = got.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 10, "{got:?}");
        assert!(
            distinct.windows(2).all(|w| w[0] < w[1]),
            "in order: {got:?}"
        );
    }
    drop(redis);
}

#[tokio::test]
async fn the_delivery_is_documented_as_a_31_webhook_and_a_30_callback() {
    let app = spawn_app_with(Setup::default()).await;
    let v31: Value = app.get("/openapi.json").await.json().await.unwrap();
    let v30: Value = app.get("/openapi-3.0.json").await.json().await.unwrap();

    let webhook = &v31["webhooks"]["conversationChanged"]["post"];
    let callback = &v30["paths"]["/subscriptions"]["post"]["callbacks"]["conversationChanged"]["{$request.body#/url}"]
        ["post"];
    for delivery in [webhook, callback] {
        assert_eq!(
            delivery["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Event"
        );
        let headers: Vec<&str> = delivery["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            headers,
            ["webhook-id", "webhook-timestamp", "webhook-signature"]
        );
        assert!(delivery["responses"]["410"].is_object());
    }
    assert!(v30.get("webhooks").is_none(), "3.0 has no webhooks");
    assert!(v31["components"]["schemas"]["Event"].is_object());
}

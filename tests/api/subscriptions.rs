//! Webhook subscriptions (issue 19), as an integrator sees them: a real receiver (an
//! HTTP server in the test) gets the events of the change feed, in order, signed as the
//! Standard Webhooks spec says; failures are retried, `410` removes, a key sees only its
//! own, and callback URLs inside the network are refused.

use std::time::Duration;

use qpien_rest::settings::Settings;
use serde_json::{Value, json};

use crate::helpers::{
    PATIENCE, Setup, TestApp, add_key, assert_problem, eventually, spawn_app_with,
};
use crate::receiver::{Receiver, signed_by};

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

/// `qpien_rest_subscription_oldest_pending_timestamp_seconds` of `subscription`, if the
/// service exports it.
async fn oldest_pending(app: &TestApp, subscription: &str) -> Option<i64> {
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let series = format!(
        "qpien_rest_subscription_oldest_pending_timestamp_seconds{{subscription=\"{subscription}\"}} "
    );
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .map(|value| value.parse().unwrap())
}

#[tokio::test]
async fn metrics_tell_how_far_behind_each_subscription_is_while_its_receiver_fails() {
    let app = subscriptions_app(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[(503, None); 1000]);
    let id = app.some_conversation_id().await;
    let created = app.subscribe(&receiver.url, json!({})).await;
    let subscription = created["id"].as_str().unwrap();
    assert_eq!(
        eventually("the series", PATIENCE, async || oldest_pending(
            &app,
            subscription
        )
        .await)
        .await,
        0,
        "nothing to deliver yet"
    );

    app.flip_star(&id).await;
    let failing = receiver.wait_for(2).await;
    let event = failing[0].json();
    let occurred = chrono::DateTime::parse_from_rfc3339(event["occurredAt"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(oldest_pending(&app, subscription).await, Some(occurred));

    receiver.answer_ok();
    eventually("caught up", PATIENCE, async || {
        (oldest_pending(&app, subscription).await == Some(0)).then_some(())
    })
    .await;
    let path = format!("/subscriptions/{subscription}");
    let removed = app
        .http
        .delete(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    eventually("the series gone", PATIENCE, async || {
        oldest_pending(&app, subscription)
            .await
            .is_none()
            .then_some(())
    })
    .await;
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
    receiver.answer_ok();
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

/// `value` as a client escaping everything past ASCII writes it (Python's `json.dumps`,
/// which `requests` uses): a character past the Basic Multilingual Plane is 12 bytes.
fn ascii_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_largest_subscription_the_schema_allows_is_taken_and_a_larger_body_is_refused() {
    let app = subscriptions_app(|_| {}).await;
    let documented: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schema = &documented["components"]["schemas"]["NewSubscription"]["properties"];
    let url_chars = schema["url"]["maxLength"].as_u64().unwrap() as usize;
    let description_chars = schema["description"]["maxLength"].as_u64().unwrap() as usize;
    let prefix = "http://127.0.0.1:9/";
    let url = format!("{prefix}{}", "😀".repeat(url_chars - prefix.len()));
    let description = "😀".repeat(description_chars);
    let post = |body: String| {
        app.http
            .post(format!("{}/subscriptions", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let largest = ascii_json(&json!({
        "url": url,
        "types": ["conversation.updated", "conversation.message_received"],
        "conversationId": "6650a1000000000000000001",
        "description": description,
    }));
    assert!(largest.len() > 30_000, "{} bytes", largest.len());
    let created = post(largest).await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["description"], description);

    let too_long = ascii_json(&json!({ "url": format!("{url}a") }));
    let problem = assert_problem(post(too_long).await.unwrap(), 422).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("2048 characters"),
        "{problem}"
    );

    let too_large = ascii_json(&json!({ "url": prefix, "description": "😀".repeat(6_000) }));
    let problem = assert_problem(post(too_large).await.unwrap(), 413).await;
    assert_eq!(problem["type"], "/problems/payload-too-large");
}

/// The method and path of the operation `id` of the served document.
fn operation_in(document: &Value, id: &str) -> (reqwest::Method, String) {
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if operation["operationId"] == id {
                return (method.to_uppercase().parse().unwrap(), path.clone());
            }
        }
    }
    panic!("no operation {id} in the document");
}

/// Where the documented `link` (named `name`) of an answer `body` leads: a method and a path.
fn follow(document: &Value, name: &str, link: &Value, body: &Value) -> (reqwest::Method, String) {
    let expression = link["parameters"]["id"].as_str().unwrap();
    let pointer = expression.strip_prefix("$response.body#").unwrap();
    let id = body
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{name}: {expression} finds no id in {body}"));
    let (method, path) = operation_in(document, link["operationId"].as_str().unwrap());
    (method, path.replace("{id}", id))
}

#[tokio::test]
async fn the_documented_links_lead_from_a_subscription_to_what_can_be_done_with_it() {
    let app = subscriptions_app(|_| {}).await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let created = app.subscribe("http://127.0.0.1:9/", json!({})).await;
    let send = |method: reqwest::Method, path: String| {
        app.http
            .request(method, format!("{}{path}", app.address))
            .send()
    };

    // From the list to the first subscription.
    let list_links = &document["paths"]["/subscriptions"]["get"]["responses"]["200"]["links"];
    let listed: Value = app.get("/subscriptions").await.json().await.unwrap();
    for (name, link) in list_links.as_object().unwrap() {
        let (method, path) = follow(&document, name, link, &listed);
        let answer = send(method, path).await.unwrap();
        assert_eq!(answer.status(), 200, "{name}");
        let read: Value = answer.json().await.unwrap();
        assert_eq!(read["id"], created["id"], "{name}");
    }

    // From the creation to each thing a subscription can be asked, removing it last.
    let links = document["paths"]["/subscriptions"]["post"]["responses"]["201"]["links"]
        .as_object()
        .unwrap();
    let mut targets: Vec<&str> = links
        .values()
        .map(|link| link["operationId"].as_str().unwrap())
        .collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "deleteSubscription",
            "enableSubscription",
            "getSubscription",
            "rotateSubscriptionSecret"
        ]
    );
    let mut calls: Vec<_> = links
        .iter()
        .map(|(name, link)| (name, follow(&document, name, link, &created)))
        .collect();
    calls.sort_by_key(|(_, (method, _))| *method == reqwest::Method::DELETE);
    for (name, (method, path)) in calls {
        let expected = if method == reqwest::Method::DELETE {
            204
        } else {
            200
        };
        let answer = send(method, path.clone()).await.unwrap();
        assert_eq!(answer.status(), expected, "{name}: {path}");
    }
    let gone = app
        .get(&format!(
            "/subscriptions/{}",
            created["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(gone.status(), 404);
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

//! The change feed, as its users see it: `GET /conversations/changes` (catch-up reads),
//! `GET /events` (Server-Sent Events) and `GET /triggers/conversation-changed` (Power
//! Automate's polling trigger). Changes come from updates through the facade and from
//! Qpien's signed webhooks; reading them costs Qpien nothing, counted by the sandbox.

use std::time::Duration;

use qpien_rest::settings::{Secret, Settings};
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig, WebhookEvent};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{
    PATIENCE, Setup, TestApp, add_key, assert_problem, eventually, header, offending,
    spawn_app_with,
};
use crate::redis_server::RedisServer;

const SECRET: &str = "feed-test-webhook-secret";

/// Service mode over a fresh sandbox, with webhooks, a short heartbeat and `tune`.
async fn feed_app(tune: impl FnOnce(&mut Settings) + 'static) -> TestApp {
    spawn_app_with(Setup {
        settings: Box::new(move |s| {
            s.webhooks.secrets = vec![Secret::new(SECRET)];
            s.event_log.heartbeat = Duration::from_secs(1);
            tune(s);
        }),
        ..Setup::default()
    })
    .await
}

impl TestApp {
    async fn changes(&self, query: &str) -> Value {
        let response = self.get(&format!("/conversations/changes{query}")).await;
        assert_eq!(response.status(), 200, "{query}");
        response.json().await.unwrap()
    }

    /// The current cursor: where a consumer starting now begins.
    async fn cursor_now(&self) -> String {
        let page = self.changes("").await;
        assert_eq!(page["items"], json!([]));
        page["next"].as_str().unwrap().to_owned()
    }

    /// Stars or unstars `id` through the facade; the value it now has.
    async fn toggle_star(&self, id: &str) -> bool {
        let current: Value = self.get_conversation(id).await.json().await.unwrap();
        let starred = !current["starred"].as_bool().unwrap();
        let response = self.merge_patch(id, json!({ "starred": starred })).await;
        assert_eq!(response.status(), 200);
        starred
    }

    async fn deliver_as_qpien(&self, payload: &Value) -> reqwest::Response {
        self.deliver_signed(payload.to_string().as_bytes(), Some(SECRET))
            .await
    }

    async fn open_stream(&self, query: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.get(format!("{}/events{query}", self.address));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn stream(&self, query: &str, last_event_id: Option<&str>) -> Sse {
        let headers: Vec<(&str, &str)> = last_event_id
            .map(|id| ("last-event-id", id))
            .into_iter()
            .collect();
        let response = self.open_stream(query, &headers).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), "text/event-stream");
        Sse {
            response,
            buffer: String::new(),
        }
    }
}

/// A client of `GET /events` reading the SSE wire format itself.
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    /// The next block (a message or comments), or `None` when none came within `within`.
    async fn block(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(block);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next event: its SSE id and its data; comments and the greeting are skipped.
    async fn event(&mut self) -> (String, Value) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let block = self
                .block(deadline - Instant::now())
                .await
                .expect("an event within the patience");
            let id = block.lines().find_map(|l| l.strip_prefix("id: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(id), Some(data)) = (id, data) {
                return (id.to_owned(), serde_json::from_str(data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn an_update_is_in_the_feed_after_the_cursor_and_reading_the_feed_costs_qpien_nothing() {
    let app = feed_app(|_| {}).await;
    let id = app.some_conversation_id().await;
    let start = app.cursor_now().await;

    let starred = app.toggle_star(&id).await;
    let calls = app.upstream_requests();
    let response = app
        .get(&format!("/conversations/changes?after={start}"))
        .await;
    let etag = header(&response, "etag");
    let page: Value = response.json().await.unwrap();
    let again = app
        .get_with(
            &format!("/conversations/changes?after={start}"),
            &[("if-none-match", &etag)],
        )
        .await;
    let next = page["next"].as_str().unwrap();
    let after_it = app.changes(&format!("?after={next}")).await;
    let everything_kept = app.changes("?after=0").await;

    let events = page["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    let event = &events[0];
    assert_eq!(event["type"], "conversation.updated");
    assert_eq!(event["qpienType"], Value::Null);
    assert_eq!(event["conversationId"], id.as_str());
    assert_eq!(event["data"]["conversation"]["starred"], starred);
    assert_eq!(
        event["id"], page["next"],
        "the last event is the next cursor"
    );
    assert_eq!(page["nextLink"], Value::Null, "up to date");
    assert!(etag.starts_with('"'), "a strong tag: {etag}");
    assert_eq!(again.status(), 304);
    assert_eq!(after_it["items"], json!([]));
    assert_eq!(after_it["next"], page["next"]);
    assert_eq!(
        everything_kept["items"], page["items"],
        "after=0: all the feed keeps"
    );
    assert_eq!(app.upstream_requests(), calls, "no Qpien call for the feed");
}

#[tokio::test]
async fn filters_pick_events_and_bad_parameters_are_named_with_nothing_sent() {
    let app = feed_app(|_| {}).await;
    let page: Value = app
        .list_conversations("?pageSize=2")
        .await
        .json()
        .await
        .unwrap();
    let (a, b) = (
        page["items"][0]["id"].as_str().unwrap().to_owned(),
        page["items"][1]["id"].as_str().unwrap().to_owned(),
    );
    let start = app.cursor_now().await;
    app.toggle_star(&a).await;
    app.toggle_star(&b).await;

    let of_b = app
        .changes(&format!("?after={start}&conversationId={b}"))
        .await;
    let joins = app
        .changes(&format!("?after={start}&types=conversation.joined"))
        .await;
    let one = app.changes(&format!("?after={start}&pageSize=1")).await;
    let calls = app.upstream_requests();
    let bad = app
        .get("/conversations/changes?after=abc&types=conversation.deleted&pageSize=0&sort=id")
        .await;

    assert_eq!(of_b["items"].as_array().unwrap().len(), 1);
    assert_eq!(of_b["items"][0]["conversationId"], b.as_str());
    assert_eq!(joins["items"], json!([]));
    assert_eq!(
        joins["next"], of_b["next"],
        "the filter passed the others by"
    );
    assert_eq!(one["items"][0]["conversationId"], a.as_str());
    let next_link = one["nextLink"].as_str().expect("a full page links on");
    let rest: Value = app
        .http
        .get(next_link)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"][0]["conversationId"], b.as_str());
    let problem = assert_problem(bad, 400).await;
    assert_eq!(offending(&problem), ["after", "pageSize", "sort", "types"]);
    assert_eq!(app.upstream_requests(), calls);
}

#[tokio::test]
async fn a_cursor_the_feed_does_not_hold_is_gone_with_how_to_start_again() {
    let app = feed_app(|_| {}).await;

    let read = app
        .get("/conversations/changes?after=99999999999999999999")
        .await;
    let stream = app
        .open_stream("", &[("last-event-id", "99999999999999999999")])
        .await;

    let problem = assert_problem(read, 410).await;
    assert_eq!(problem["type"], "/problems/cursor-gone");
    let explanation = app.get("/problems/cursor-gone").await.text().await.unwrap();
    assert!(
        explanation.contains("Start again without a cursor"),
        "{explanation}"
    );
    assert_eq!(
        assert_problem(stream, 410).await["type"],
        "/problems/cursor-gone"
    );
}

#[tokio::test]
async fn pass_through_mode_shows_the_feed_to_no_one() {
    let app = spawn_app_with(Setup::pass_through()).await;
    let token = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;

    for path in [
        "/conversations/changes",
        "/events",
        "/triggers/conversation-changed",
    ] {
        let response = app.get_as(path, &token).await;
        let problem = assert_problem(response, 403).await;
        assert_eq!(problem["type"], "/problems/feed-not-offered", "{path}");
    }
}

#[tokio::test]
async fn a_verified_qpien_delivery_becomes_one_event_with_qpiens_type_and_the_message() {
    let app = feed_app(|_| {}).await;
    let id = app.some_conversation_id().await;
    let start = app.cursor_now().await;
    let delivery = json!({
        "_id": "6650e1000000000000000009",
        "event": "NEW_INCOMING_MESSAGE",
        "createdAt": "2026-12-02T07:30:00.123Z",
        "data": {"message": {"_id": "6650f1000000000000000001", "conversation": id,
            "senderType": "CUSTOMER", "channelType": "WHATSAPP", "content": "Hello",
            "createdAt": "2026-12-02T07:30:00.120Z"}}
    });

    assert_eq!(app.deliver_as_qpien(&delivery).await.status(), 200);
    assert_eq!(app.deliver_as_qpien(&delivery).await.status(), 200);
    let page = app.changes(&format!("?after={start}")).await;

    let events = page["items"].as_array().unwrap();
    assert_eq!(events.len(), 1, "a retried delivery is one event: {page}");
    let event = &events[0];
    assert_eq!(event["type"], "conversation.message_received");
    assert_eq!(event["qpienType"], "NEW_INCOMING_MESSAGE");
    assert_eq!(event["occurredAt"], "2026-12-02T07:30:00.123Z");
    assert_eq!(event["conversationId"], id.as_str());
    assert_eq!(event["data"]["message"]["content"], "Hello");
    assert_eq!(event["data"]["message"]["direction"], "incoming");
    assert_eq!(event["data"]["message"]["channelType"], "whatsapp");
}

/// Qpien reports every update, those made through the facade too: its report of one
/// the facade made (the same state) is not a second event; a change made in Qpien is.
#[tokio::test]
async fn qpiens_report_of_an_update_made_through_the_facade_is_not_a_second_event() {
    let app = feed_app(|_| {}).await;
    let sandbox = app.sandbox.as_ref().unwrap();
    sandbox
        .register_webhook_with_secret(
            &format!("{}/webhooks/qpien", app.address),
            &WebhookEvent::ALL,
            SECRET,
        )
        .unwrap();
    let id = app.some_conversation_id().await;
    let start = app.cursor_now().await;
    let app = &app;
    let delivered = |n: u64| async move {
        eventually("Qpien's deliveries to be answered", PATIENCE, async || {
            let stats = app.upstream_stats().webhook_deliveries;
            (stats.succeeded >= n && stats.pending == 0).then_some(())
        })
        .await
    };

    let starred = app.toggle_star(&id).await;
    delivered(1).await;
    let after_own = app.changes(&format!("?after={start}")).await;
    let before: Value = app.get_conversation(&id).await.json().await.unwrap();
    let other = if before["status"] == "pending" {
        "resolved"
    } else {
        "pending"
    };
    app.change_upstream(&id, json!({"status": other.to_uppercase()}))
        .await;
    delivered(2).await;
    let after_qpiens = app.changes(&format!("?after={start}")).await;

    let own = after_own["items"].as_array().unwrap();
    assert_eq!(own.len(), 1, "one event for one update: {after_own}");
    // Whichever report came first: the facade's own, or Qpien's.
    assert_eq!(own[0]["data"]["conversation"]["starred"], starred);
    let all = after_qpiens["items"].as_array().unwrap();
    assert_eq!(
        all.len(),
        2,
        "a change made in Qpien is an event: {after_qpiens}"
    );
    assert_eq!(all[1]["qpienType"], "CONVERSATION_UPDATED");
    assert_eq!(all[1]["data"]["conversation"]["status"], other);
}

#[tokio::test]
async fn the_stream_sends_changes_live_and_resumes_after_a_dropped_connection_missing_none() {
    let app = feed_app(|_| {}).await;
    let page: Value = app
        .list_conversations("?pageSize=4")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();

    let mut stream = app.stream("", None).await;
    let greeting = stream.block(PATIENCE).await.unwrap();
    app.toggle_star(&ids[0]).await;
    let (first_id, first) = stream.event().await;
    let heartbeat = stream.block(Duration::from_secs(5)).await.unwrap();
    drop(stream);
    // While the client is away.
    app.toggle_star(&ids[1]).await;
    app.toggle_star(&ids[2]).await;
    let mut resumed = app.stream("", Some(&first_id)).await;
    let (_, second) = resumed.event().await;
    let (_, third) = resumed.event().await;
    app.toggle_star(&ids[3]).await;
    let (_, live) = resumed.event().await;

    assert!(greeting.contains("retry: "), "{greeting}");
    assert_eq!(first["conversationId"], ids[0].as_str());
    assert_eq!(first["id"], first_id.as_str());
    assert_eq!(heartbeat, ": heartbeat", "an idle stream says it is alive");
    let order: Vec<&Value> = [&second, &third, &live]
        .iter()
        .map(|e| &e["conversationId"])
        .collect();
    assert_eq!(order, [&json!(ids[1]), &json!(ids[2]), &json!(ids[3])]);
}

#[tokio::test]
async fn the_stream_filters_and_replays_from_a_cursor_given_as_after() {
    let app = feed_app(|_| {}).await;
    let id = app.some_conversation_id().await;
    let start = app.cursor_now().await;
    app.toggle_star(&id).await;
    let message = json!({"_id": "e-stream-1", "event": "NEW_OUTGOING_MESSAGE",
        "data": {"message": {"_id": "m1", "conversation": id, "senderType": "AGENT", "content": "On it"}}});
    assert_eq!(app.deliver_as_qpien(&message).await.status(), 200);

    let mut messages = app
        .stream(
            &format!("?after={start}&types=conversation.message_sent"),
            None,
        )
        .await;
    let (_, event) = messages.event().await;

    assert_eq!(event["type"], "conversation.message_sent");
    assert_eq!(event["data"]["message"]["content"], "On it");
}

#[tokio::test]
async fn each_caller_key_holds_a_bounded_number_of_streams_and_needs_the_read_scope() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    let reader = add_key(&file, "dashboard", "read", None);
    let writer = add_key(&file, "writer", "write", None);
    let keys = file.clone();
    let app = feed_app(move |s| {
        s.api_keys_file = Some(keys);
        s.event_log.streams_per_key = 2;
    })
    .await;
    let as_reader = [("x-api-key", reader.as_str())];

    let one = app.open_stream("", &as_reader).await;
    let two = app.open_stream("", &as_reader).await;
    let three = app.open_stream("", &as_reader).await;
    let retry_after = header(&three, "retry-after");
    let refused = assert_problem(three, 429).await;
    let wrong_scope = app.open_stream("", &[("x-api-key", &writer)]).await;
    drop(one);
    let reopened = eventually("a slot freed by a closed stream", PATIENCE, async || {
        let response = app.open_stream("", &as_reader).await;
        (response.status() == 200).then_some(response)
    })
    .await;

    assert_eq!(two.status(), 200);
    assert_eq!(refused["type"], "/problems/too-many-streams");
    assert!(retry_after.parse::<u64>().is_ok(), "{retry_after}");
    assert_eq!(
        assert_problem(wrong_scope, 403).await["type"],
        "/problems/insufficient-key-scope"
    );
    assert_eq!(reopened.status(), 200);
}

#[tokio::test]
async fn the_trigger_answers_202_until_something_changes_then_200_with_the_events() {
    let app = feed_app(|s| s.event_log.trigger_poll = Duration::from_secs(42)).await;
    let id = app.some_conversation_id().await;
    let poll = async |url: &str| app.http.get(url).send().await.unwrap();

    let first = app
        .get("/triggers/conversation-changed?types=conversation.updated")
        .await;
    let location = header(&first, "location");
    let quiet = poll(&location).await;
    app.toggle_star(&id).await;
    let fired = poll(&header(&quiet, "location")).await;
    let fired_location = header(&fired, "location");
    let fired_status = fired.status();
    let events: Value = fired.json().await.unwrap();
    let after = poll(&fired_location).await;
    let stale = app
        .get("/triggers/conversation-changed?after=99999999999999999999")
        .await;

    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "retry-after"), "42");
    assert!(location.contains("after="), "{location}");
    assert!(
        location.contains("types=conversation.updated"),
        "{location}"
    );
    assert_eq!(quiet.status(), 202);
    assert_eq!(fired_status, 200);
    assert_eq!(events.as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events[0]["conversationId"], id.as_str());
    assert_ne!(fired_location, location);
    assert_eq!(after.status(), 202, "nothing new since");
    assert_eq!(stale.status(), 202, "an old cursor starts again from now");
}

/// With Redis, every replica reads one log: a cursor from one is good on another, and a
/// stream on one sees an update made through another.
#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn replicas_sharing_redis_share_one_feed() {
    let redis = RedisServer::start().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::start(listener, SandboxConfig::default()).unwrap();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let shared = redis.settings();
        apps.push(
            spawn_app_with(Setup {
                upstream_url: Some(sandbox.url()),
                settings: Box::new(move |s| {
                    s.upstream.replicas = 2;
                    s.redis = Some(shared);
                }),
                ..Setup::default()
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let id = a.some_conversation_id().await;
    let start = a.cursor_now().await;
    let mut on_b = b.stream("", None).await;
    on_b.block(PATIENCE).await.unwrap();

    a.toggle_star(&id).await;
    let (streamed_id, _) = on_b.event().await;
    let from_b = b.changes(&format!("?after={start}")).await;

    assert_eq!(from_b["items"].as_array().unwrap().len(), 1, "{from_b}");
    assert_eq!(from_b["items"][0]["id"], streamed_id.as_str());
    assert_eq!(from_b["items"][0]["conversationId"], id.as_str());
}

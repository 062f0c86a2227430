//! Reads that spare Qpien: coalescing, the per-credential cache, conditional requests,
//! stale answers on trouble, the write reserve. Qpien calls are counted by the sandbox
//! (or wiremock), never by the facade's own counters.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use qpien_rest::settings::Settings;
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, SandboxConfig};
use reqwest::Response;
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    PATIENCE, Setup, assert_problem, eventually, graphql_url, header, pass_through_app, spawn_app,
    spawn_app_with,
};

/// The first answer of `read` (asked again and again) that is not a fresh hit: what the
/// facade does once the entry's TTL has run out. Hits cost Qpien nothing, so asking
/// until then adds no call to the counts the tests check.
async fn first_after_fresh_hits(mut read: impl AsyncFnMut() -> Response) -> Response {
    eventually("the cached answer's TTL to run out", PATIENCE, async || {
        let response = read().await;
        (!fresh_hit(&response)).then_some(response)
    })
    .await
}

/// A hit within the TTL: a stale answer is a hit too, but one that names why (`fwd=`).
fn fresh_hit(response: &Response) -> bool {
    let status = header(response, "cache-status");
    status.starts_with("qpien-rest; hit") && !status.contains("fwd=")
}

/// Service mode against a sandbox that takes `latency` per operation.
async fn slow_app(latency: Duration, ttl: Duration) -> crate::helpers::TestApp {
    spawn_app_with(Setup {
        sandbox: SandboxConfig {
            latency,
            ..Default::default()
        },
        settings: Box::new(move |s| s.read_cache.ttl = ttl),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn a_hundred_simultaneous_identical_reads_cost_qpien_one_call() {
    // The cache is off: only coalescing can spare Qpien here.
    let app = slow_app(Duration::from_millis(300), Duration::ZERO).await;

    let responses = join_all((0..100).map(|_| app.list_conversations("?status=open"))).await;

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    assert_eq!(app.upstream_calls_of("getConversationList"), 1);
    let collapsed = responses
        .iter()
        .filter(|r| header(r, "cache-status").contains("collapsed"))
        .count();
    assert_eq!(
        collapsed, 99,
        "one request called Qpien, the others waited on it"
    );
    let tags: Vec<String> = responses.iter().map(|r| header(r, "etag")).collect();
    assert!(tags.iter().all(|t| t == &tags[0]), "one answer for all");
}

#[tokio::test]
async fn a_failed_call_fails_only_the_requests_that_waited_on_it() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_delay(Duration::from_millis(300)))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": {"getConversation": {"_id": "6650a1000000000000000001"}}}),
        ))
        .mount(&upstream)
        .await;
    let app = pass_through_app(graphql_url(&upstream)).await;

    let during =
        join_all((0..5).map(|_| app.get_with_bearer("/conversations/6650a1000000000000000001")))
            .await;
    let after = app
        .get_with_bearer("/conversations/6650a1000000000000000001")
        .await;

    for response in during {
        assert_problem(response, 502).await;
    }
    assert_eq!(
        after.status().as_u16(),
        200,
        "a later read makes its own call"
    );
    assert_eq!(upstream.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_caller_who_goes_away_cancels_nothing_for_the_others() {
    let app = slow_app(Duration::from_millis(400), Duration::from_secs(5)).await;
    let id = "6650a1000000000000000001";
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();

    // The impatient caller starts the flight and leaves; the other joins it.
    let leaving = impatient
        .get(format!("{}/conversations/{id}", app.address))
        .send();
    let staying = async {
        eventually("the first caller's flight to start", PATIENCE, async || {
            (app.upstream_requests() >= 1).then_some(())
        })
        .await;
        app.get_conversation(id).await
    };
    let (left, stayed) = tokio::join!(leaving, staying);

    assert!(left.is_err(), "the impatient caller gave up");
    assert_eq!(stayed.status().as_u16(), 200);
    assert_eq!(app.upstream_calls_of("getConversation"), 1);
}

#[tokio::test]
async fn a_fresh_answer_is_served_from_the_cache_and_says_so() {
    let app = spawn_app().await;

    let first = app.list_conversations("?status=open").await;
    let second = app.list_conversations("?status=open").await;

    assert_eq!(app.upstream_calls_of("getConversationList"), 1);
    assert_eq!(
        header(&first, "cache-status"),
        "qpien-rest; fwd=miss; stored"
    );
    assert!(header(&second, "cache-status").starts_with("qpien-rest; hit; ttl="));
    assert_eq!(header(&second, "cache-control"), "private, max-age=5");
    assert!(header(&second, "age").parse::<u64>().unwrap() <= 5);
    assert_eq!(
        header(&second, "vary"),
        "",
        "service mode: no per-caller answers"
    );
    assert_eq!(header(&first, "etag"), header(&second, "etag"));
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        second.json::<Value>().await.unwrap()
    );
}

#[tokio::test]
async fn an_answer_older_than_the_ttl_is_fetched_again() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| s.read_cache.ttl = Duration::from_millis(200)),
        ..Default::default()
    })
    .await;

    let stored = Instant::now();
    app.get_conversation("6650a1000000000000000001").await;
    let again =
        first_after_fresh_hits(async || app.get_conversation("6650a1000000000000000001").await)
            .await;

    assert!(
        stored.elapsed() < Duration::from_secs(2),
        "fresh for longer than the TTL: {:?}",
        stored.elapsed()
    );
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(app.upstream_calls_of("getConversation"), 2);
    assert_eq!(header(&again, "cache-control"), "private, max-age=0");
}

#[tokio::test]
async fn a_ttl_of_zero_turns_the_cache_off() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| s.read_cache.ttl = Duration::ZERO),
        ..Default::default()
    })
    .await;

    app.get_conversation("6650a1000000000000000001").await;
    let second = app.get_conversation("6650a1000000000000000001").await;

    assert_eq!(app.upstream_calls_of("getConversation"), 2);
    assert_eq!(header(&second, "cache-control"), "private, no-cache");
    assert_eq!(header(&second, "cache-status"), "qpien-rest; fwd=miss");
}

#[tokio::test]
async fn another_token_gets_its_own_call_and_a_rejected_token_never_a_cached_answer() {
    let app = spawn_app_with(Setup::pass_through()).await;
    let alice = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;
    let bob = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;
    let path = "/conversations/6650a1000000000000000001";

    let for_alice = app.get_as(path, &alice).await;
    let for_bob = app.get_as(path, &bob).await;
    let for_mallory = app.get_as(path, "a-token-qpien-never-issued").await;

    assert_eq!(header(&for_alice, "vary"), "Authorization");
    assert_eq!(
        header(&for_bob, "cache-status"),
        "qpien-rest; fwd=miss; stored"
    );
    assert_eq!(for_bob.status().as_u16(), 200);
    assert_problem(for_mallory, 401).await;
    assert_eq!(
        app.upstream_calls_of("getConversation"),
        3,
        "every credential asked Qpien itself"
    );
    let alice_again = app.get_as(path, &alice).await;
    assert!(header(&alice_again, "cache-status").contains("hit"));
    assert_eq!(app.upstream_calls_of("getConversation"), 3);
}

#[tokio::test]
async fn if_none_match_with_the_current_tag_is_a_304_that_costs_qpien_nothing() {
    let app = spawn_app().await;
    let first = app.get_conversation("6650a1000000000000000001").await;
    let etag = header(&first, "etag");
    assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");

    let again = app
        .get_with(
            "/conversations/6650a1000000000000000001",
            &[("If-None-Match", &etag)],
        )
        .await;
    let other = app
        .get_with(
            "/conversations/6650a1000000000000000001",
            &[("If-None-Match", "\"0000000000000000\"")],
        )
        .await;

    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(header(&again, "etag"), etag);
    assert!(header(&again, "cache-control").starts_with("private, max-age="));
    assert!(again.bytes().await.unwrap().is_empty());
    assert_eq!(other.status().as_u16(), 200, "another tag gets the body");
    assert_eq!(app.upstream_calls_of("getConversation"), 1);
}

#[tokio::test]
async fn a_list_page_has_a_tag_of_its_own_and_answers_304_too() {
    let app = spawn_app().await;
    let first = app.list_conversations("?pageSize=3").await;
    let etag = header(&first, "etag");

    let again = app
        .get_with("/conversations?pageSize=3", &[("If-None-Match", &etag)])
        .await;
    let other_page = app.list_conversations("?pageSize=3&page=2").await;

    assert_eq!(again.status().as_u16(), 304);
    assert_ne!(header(&other_page, "etag"), etag);
}

#[tokio::test]
async fn cache_control_no_cache_asks_qpien_again_still_coalesced() {
    let app = slow_app(Duration::from_millis(200), Duration::from_secs(5)).await;
    app.list_conversations("?status=open").await;

    let revalidated = join_all((0..10).map(|_| {
        app.get_with(
            "/conversations?status=open",
            &[("Cache-Control", "no-cache")],
        )
    }))
    .await;

    assert!(revalidated.iter().all(|r| r.status().as_u16() == 200));
    assert_eq!(
        app.upstream_calls_of("getConversationList"),
        2,
        "ten revalidations, one call"
    );
}

#[tokio::test]
async fn an_update_replaces_the_cached_item_and_drops_the_lists() {
    let app = spawn_app().await;
    let id = "6650a1000000000000000001";
    let before: Value = app.get_conversation(id).await.json().await.unwrap();
    app.list_conversations("?pageSize=100").await;
    let status = if before["status"] == "closed" {
        "open"
    } else {
        "closed"
    };

    let patched = app.merge_patch(id, json!({"status": status})).await;
    let patched_tag = header(&patched, "etag");
    let item = app.get_conversation(id).await;
    let item_tag = header(&item, "etag");
    let item: Value = item.json().await.unwrap();
    let list: Value = app
        .list_conversations("?pageSize=100")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(item["status"], status, "the caller reads its own write");
    assert_eq!(
        item_tag, patched_tag,
        "the update's answer is the cached item"
    );
    assert_eq!(
        app.upstream_calls_of("getConversation"),
        1,
        "the item came from the cache"
    );
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap();
    assert_eq!(listed["status"], status, "the list was fetched again");
    assert_eq!(app.upstream_calls_of("getConversationList"), 2);
}

#[tokio::test]
async fn if_match_is_checked_against_qpien_not_the_cache() {
    let app = spawn_app().await;
    let id = "6650a1000000000000000002";
    let read = app.get_conversation(id).await;
    let etag = header(&read, "etag");

    // Someone changes it in Qpien's own app; the facade's cache still holds the old one.
    app.change_upstream(id, json!({"priority": "URGENT", "isStarred": true}))
        .await;
    let refused = app
        .merge_patch_if(id, json!({"status": "resolved"}), &etag)
        .await;

    let current = header(&refused, "etag");
    assert_ne!(current, etag);
    let problem = assert_problem(refused, 412).await;
    assert_eq!(problem["type"], "/problems/precondition-failed");
    assert_eq!(
        app.upstream_calls_of("updateConversation"),
        1,
        "only our change"
    );

    let accepted = app
        .merge_patch_if(id, json!({"status": "resolved"}), &current)
        .await;
    assert_eq!(accepted.status().as_u16(), 200);
    assert_ne!(header(&accepted, "etag"), current);
    assert_eq!(app.upstream_calls_of("updateConversation"), 2);
}

#[tokio::test]
async fn two_updates_with_the_same_tag_cannot_both_win() {
    let app = slow_app(Duration::from_millis(100), Duration::from_secs(5)).await;
    let id = "6650a1000000000000000003";
    let read = app.get_conversation(id).await;
    let etag = header(&read, "etag");
    let starred = read.json::<Value>().await.unwrap()["starred"]
        .as_bool()
        .unwrap();

    // Both would flip the flag: whichever runs second no longer holds the current tag.
    let (a, b) = tokio::join!(
        app.merge_patch_if(id, json!({"starred": !starred}), &etag),
        app.merge_patch_if(id, json!({"starred": !starred}), &etag),
    );

    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 412]);
}

#[tokio::test]
async fn if_match_star_or_absent_updates_as_before_and_a_malformed_one_is_a_400() {
    let app = spawn_app().await;
    let id = "6650a1000000000000000004";

    let star = app.merge_patch_if(id, json!({"starred": true}), "*").await;
    let none = app.merge_patch(id, json!({"starred": false})).await;
    let malformed = app
        .merge_patch_if(id, json!({"starred": true}), "not-a-tag")
        .await;

    assert_eq!(star.status().as_u16(), 200);
    assert_eq!(none.status().as_u16(), 200);
    let problem = assert_problem(malformed, 400).await;
    assert_eq!(problem["errors"][0]["parameter"], "If-Match");
    assert_eq!(app.upstream_calls_of("updateConversation"), 2);
}

#[tokio::test]
async fn a_spent_budget_serves_the_stale_answer_at_once_and_a_429_without_one() {
    // Two requests a minute: the token and the first page.
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.upstream.rate_limit_per_minute = 2;
            s.read_cache.ttl = Duration::from_millis(200);
        }),
        ..Default::default()
    })
    .await;
    app.list_conversations("?pageSize=2").await;

    let (stale, waited) = eventually("the cached answer's TTL to run out", PATIENCE, async || {
        let started = Instant::now();
        let response = app.list_conversations("?pageSize=2").await;
        let waited = started.elapsed();
        (!fresh_hit(&response)).then_some((response, waited))
    })
    .await;
    let uncached = app.list_conversations("?pageSize=3").await;

    assert_eq!(stale.status().as_u16(), 200);
    assert!(
        waited < Duration::from_millis(500),
        "no wait for budget: {waited:?}"
    );
    let status = header(&stale, "cache-status");
    assert!(
        status.contains("fwd=stale") && status.contains("detail=budget-exhausted"),
        "{status}"
    );
    assert!(status.contains("ttl=-"), "{status}");
    assert!(!header(&stale, "age").is_empty());
    assert_eq!(header(&uncached, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&uncached, "ratelimit-policy"), "\"qpien\";q=2;w=60");
    assert!(!header(&uncached, "retry-after").is_empty());
    assert_problem(uncached, 429).await;
    assert_eq!(app.upstream_requests(), 2);
}

/// Pass-through in front of a Qpien that answers one read, then only HTTP 500; answers
/// are fresh for 100 ms.
async fn answers_once_then_fails(
    tune: impl FnOnce(&mut Settings) + 'static,
) -> (MockServer, crate::helpers::TestApp) {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": {"getConversation": {"_id": "6650a1000000000000000001"}}}),
        ))
        .up_to_n_times(1)
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&upstream)
        .await;
    let app = spawn_app_with(Setup {
        upstream_url: Some(graphql_url(&upstream)),
        settings: Box::new(|s| {
            s.read_cache.ttl = Duration::from_millis(100);
            tune(s);
        }),
        ..Setup::pass_through()
    })
    .await;
    (upstream, app)
}

#[tokio::test]
async fn a_failing_qpien_is_hidden_by_a_stale_answer_naming_why() {
    let (upstream, app) = answers_once_then_fails(|_| {}).await;
    let path = "/conversations/6650a1000000000000000001";
    let fresh = app.get_with_bearer(path).await;

    let stale = first_after_fresh_hits(async || app.get_with_bearer(path).await).await;

    assert_eq!(stale.status().as_u16(), 200);
    let status = header(&stale, "cache-status");
    assert!(
        status.contains("fwd=stale; fwd-status=500; detail=upstream-error"),
        "{status}"
    );
    assert_eq!(header(&stale, "etag"), header(&fresh, "etag"));
    assert_eq!(upstream.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn past_the_stale_window_qpiens_trouble_is_the_answer() {
    let (_upstream, app) =
        answers_once_then_fails(|s| s.read_cache.stale_if_error = Duration::ZERO).await;
    let path = "/conversations/6650a1000000000000000001";
    app.get_with_bearer(path).await;

    let expired = first_after_fresh_hits(async || app.get_with_bearer(path).await).await;
    assert_problem(expired, 502).await;
}

#[tokio::test]
async fn an_update_gets_through_while_pollers_spend_the_read_budget() {
    // Ten a minute: reads stop at nine (the token is one of them), the tenth is for writes.
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.upstream.rate_limit_per_minute = 10;
            s.upstream.rate_limit_max_wait = Duration::ZERO;
        }),
        ..Default::default()
    })
    .await;
    let pages: Vec<String> = (1..=30).map(|p| format!("?pageSize=1&page={p}")).collect();

    let polled = join_all(pages.iter().map(|q| app.list_conversations(q))).await;
    let update = app
        .merge_patch("6650a1000000000000000005", json!({"starred": true}))
        .await;

    let refused = polled.iter().filter(|r| r.status().as_u16() == 429).count();
    assert_eq!(refused, 22, "8 reads besides the token, then 429");
    assert_eq!(update.status().as_u16(), 200);
    assert_eq!(app.upstream_requests(), 10);
}

#[tokio::test]
async fn readiness_stays_200_while_the_budget_is_used_up_and_reports_it() {
    // The token takes the one request of the minute; the readiness probe gets none.
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.upstream.rate_limit_per_minute = 1;
            s.upstream.rate_limit_max_wait = Duration::ZERO;
        }),
        ..Default::default()
    })
    .await;

    let ready = app.get("/readyz").await;

    assert_eq!(ready.status().as_u16(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["budget"]["limit"], 1);
    assert_eq!(body["budget"]["remaining"], 0);
    assert!(body["budget"]["resetSeconds"].as_u64().unwrap() <= 60);
}

#[tokio::test]
async fn bad_input_is_refused_before_any_cache_or_qpien_work() {
    let app = spawn_app().await;

    assert_problem(app.get_conversation("not-an-id").await, 400).await;
    assert_problem(app.list_conversations("?status=done").await, 400).await;

    assert_eq!(app.upstream_requests(), 0);
}

#[tokio::test]
async fn the_cache_reports_hits_misses_coalesced_reads_stale_answers_304s_and_412s() {
    let app = slow_app(Duration::from_millis(200), Duration::from_secs(5)).await;
    let id = "6650a1000000000000000006";
    join_all((0..3).map(|_| app.get_conversation(id))).await;
    let etag = header(&app.get_conversation(id).await, "etag");
    app.get_with(&format!("/conversations/{id}"), &[("If-None-Match", &etag)])
        .await;
    app.merge_patch_if(id, json!({"starred": true}), "\"0000000000000000\"")
        .await;

    let metrics = app.get("/metrics").await.text().await.unwrap();

    for line in [
        "qpien_rest_reads_total{read=\"conversation\",result=\"miss\"} 1",
        "qpien_rest_reads_total{read=\"conversation\",result=\"coalesced\"} 2",
        "qpien_rest_reads_total{read=\"conversation\",result=\"hit\"} 2",
        "qpien_rest_conditional_responses_total{status=\"304\"} 1",
        "qpien_rest_conditional_responses_total{status=\"412\"} 1",
        "qpien_rest_upstream_calls_total{operation=\"GetConversation\",outcome=\"ok\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test]
async fn a_malformed_if_none_match_matches_nothing_and_if_match_on_a_missing_conversation_is_a_404()
{
    let app = spawn_app().await;

    let malformed = app
        .get_with(
            "/conversations/6650a1000000000000000001",
            &[("If-None-Match", "not-a-tag")],
        )
        .await;
    let missing = app
        .merge_patch_if(
            crate::helpers::UNKNOWN_ID,
            json!({"starred": true}),
            "\"0000000000000000\"",
        )
        .await;

    assert_eq!(malformed.status().as_u16(), 200, "the full answer");
    assert_problem(missing, 404).await;
    assert_eq!(app.upstream_calls_of("updateConversation"), 0);
}

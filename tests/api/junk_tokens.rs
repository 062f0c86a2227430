//! Pass-through mode against junk bearers: a bearer Qpien refused is answered from
//! memory, bearers Qpien has not accepted yet are capped, and a proven one is never held
//! back. Calls are counted on the sandbox's side.

use std::time::Duration;

use qpien_rest::settings::{RedisSettings, Secret};
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET};
use serde_json::Value;

use crate::helpers::{Setup, TestApp, assert_problem, header, spawn_app_with};
use crate::redis_server::RedisServer;

/// Pass-through mode over a sandbox, with caps of `per_client` and `total` requests a
/// minute for unproven bearers.
async fn capped_app(per_client: u32, total: u32) -> TestApp {
    spawn_app_with(Setup {
        settings: Box::new(move |s| {
            s.upstream.bearers.unproven_per_client = per_client;
            s.upstream.bearers.unproven_total = total;
        }),
        ..Setup::pass_through()
    })
    .await
}

#[tokio::test]
async fn a_bearer_qpien_refused_costs_one_call_however_often_it_is_sent() {
    let app = capped_app(60, 600).await;

    let mut problems = Vec::new();
    for _ in 0..5 {
        let response = app.get_as("/conversations", "made-up-token").await;
        assert_eq!(
            header(&response, "www-authenticate"),
            "Bearer realm=\"qpien\", error=\"invalid_token\""
        );
        problems.push(assert_problem(response, 401).await);
    }

    assert_eq!(app.upstream_requests(), 1, "Qpien was asked once");
    for problem in &problems {
        assert_eq!(problem["type"], "/problems/upstream-unauthorized");
        assert_eq!(problem["code"], "UNAUTHORIZED");
        assert_eq!(problem["detail"], problems[0]["detail"]);
    }
}

#[tokio::test]
async fn unproven_bearers_past_the_per_client_cap_get_a_429_with_retry_after_and_cost_nothing() {
    let app = capped_app(3, 600).await;
    for n in 1..=3 {
        let response = app.get_as("/conversations", &format!("junk-{n}")).await;
        assert_problem(response, 401).await;
    }

    let response = app
        .get_as("/conversations/6650a1000000000000000001", "junk-4")
        .await;

    let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem = assert_problem(response, 429).await;
    assert_eq!(problem["type"], "/problems/unproven-tokens-limited");
    assert!(
        problem["detail"].as_str().unwrap().contains("this address"),
        "{problem}"
    );
    assert_eq!(
        app.upstream_requests(),
        3,
        "the fourth bearer reached nothing"
    );
}

#[tokio::test]
async fn unproven_bearers_past_the_total_cap_get_a_429() {
    let app = capped_app(100, 2).await;
    for n in 1..=2 {
        assert_problem(
            app.get_as("/conversations", &format!("junk-{n}")).await,
            401,
        )
        .await;
    }

    let problem = assert_problem(app.get_as("/conversations", "junk-3").await, 429).await;

    assert_eq!(problem["type"], "/problems/unproven-tokens-limited");
    assert_eq!(app.upstream_requests(), 2);
}

#[tokio::test]
async fn a_token_qpien_accepted_keeps_working_while_junk_floods() {
    let app = capped_app(3, 5).await;
    let token = app.sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await;
    assert_eq!(app.get_as("/conversations", &token).await.status(), 200);
    let before = app.upstream_requests();

    let flood = (0..40).map(|n| {
        let app = &app;
        async move {
            app.get_as("/conversations", &format!("junk-{n}"))
                .await
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(flood).await;
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );
    // The token's own first request, unproven then, took one of the three slots.
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 2);
    assert_eq!(app.upstream_requests() - before, 2, "the cap held");

    // Another page: an answer only Qpien can give.
    let response = app.get_as("/conversations?page=2", &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["items"].is_array());
    assert_eq!(app.upstream_requests() - before, 3);
}

/// Behind a balancer with Redis, a caller's reads land on replicas that never called
/// Qpien for its token: an answer another replica cached for it proves it there too.
#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn an_answer_cached_through_redis_proves_the_token_on_every_replica() {
    let redis = RedisServer::start().await;
    let first = spawn_app_with(Setup::pass_through()).await;
    let sandbox_url = first.sandbox.as_ref().unwrap().url();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let (url, redis_url) = (sandbox_url.clone(), redis.url());
        replicas.push(
            spawn_app_with(Setup {
                upstream_url: Some(url),
                settings: Box::new(move |s| {
                    s.upstream.bearers.unproven_per_client = 1;
                    s.read_cache.ttl = Duration::from_secs(60);
                    s.redis = Some(RedisSettings {
                        url: Secret::new(redis_url),
                        key_prefix: "qpien-rest-test:".into(),
                        timeout: Duration::from_secs(2),
                        hash_secret: Some(Secret::new("a shared secret of the replicas")),
                    });
                }),
                ..Setup::pass_through()
            })
            .await,
        );
    }
    let token = first
        .sandbox_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        .await;
    assert_eq!(
        replicas[0].get_as("/conversations", &token).await.status(),
        200
    );

    for _ in 0..5 {
        let response = replicas[1].get_as("/conversations", &token).await;
        assert_eq!(response.status(), 200, "held back on the second replica");
    }
    assert_eq!(first.upstream_calls_of("getConversationList"), 1);
}

//! Several replicas, one Qpien account, a real `redis-server`: one rate budget, one
//! token, one read cache; and Redis faults that are not outages. Qpien's side is counted
//! by the sandbox (or wiremock), never by the facade.

use std::time::Duration;

use futures_util::future::join_all;
use qpien_rest::settings::{RedisSettings, Secret, Settings};
use qpien_sandbox::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, Sandbox, SandboxConfig};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header as has_header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    PATIENCE, Setup, TestApp, assert_problem, eventually, graphql_error, header, spawn_app_with,
    token_answer,
};
use crate::redis_server::RedisServer;

/// `n` replicas in service mode behind one sandbox, sharing `redis` (or nothing).
struct Replicas {
    sandbox: Sandbox,
    apps: Vec<TestApp>,
}

fn shared_through(redis: Option<&RedisServer>, n: u32) -> impl Fn(&mut Settings) + Clone + use<> {
    let url = redis.map(RedisServer::url);
    move |s: &mut Settings| {
        s.upstream.replicas = n;
        // Generous: on a loaded machine a 250 ms command can happen, and a replica that
        // takes Redis for down goes on alone, which these tests would count as a fault.
        s.redis = url.clone().map(|url| RedisSettings {
            url: Secret::new(url),
            key_prefix: "qpien-rest-test:".into(),
            timeout: Duration::from_secs(2),
            hash_secret: None,
        });
    }
}

async fn replicas(
    n: u32,
    sandbox: SandboxConfig,
    redis: Option<&RedisServer>,
    tune: impl Fn(&mut Settings) + Clone + 'static,
) -> Replicas {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::start(listener, sandbox).unwrap();
    let mut apps = Vec::new();
    for _ in 0..n {
        let share = shared_through(redis, n);
        let tune = tune.clone();
        apps.push(
            spawn_app_with(Setup {
                upstream_url: Some(sandbox.url()),
                settings: Box::new(move |s| {
                    share(s);
                    tune(s);
                }),
                ..Setup::default()
            })
            .await,
        );
    }
    Replicas { sandbox, apps }
}

/// `n` replicas with the default settings, sharing `redis`.
async fn sharing(redis: &RedisServer, n: u32) -> Replicas {
    replicas(
        n,
        SandboxConfig::default(),
        Some(redis),
        |_: &mut Settings| {},
    )
    .await
}

fn limits(per_minute: u32) -> impl Fn(&mut Settings) + Clone {
    move |s: &mut Settings| {
        s.upstream.rate_limit_per_minute = per_minute;
        s.upstream.rate_limit_max_wait = Duration::ZERO;
    }
}

fn sandbox_limit(per_minute: u32) -> SandboxConfig {
    SandboxConfig {
        rate_limit_per_minute: per_minute,
        ..Default::default()
    }
}

/// `count` different pages, spread over the replicas, all at once.
async fn flood(replicas: &Replicas, count: usize) -> Vec<reqwest::Response> {
    let paths: Vec<String> = (1..=count)
        .map(|page| format!("/conversations?pageSize=1&page={page}"))
        .collect();
    let n = replicas.apps.len();
    join_all(
        paths
            .iter()
            .enumerate()
            .map(|(i, path)| replicas.apps[i % n].get(path)),
    )
    .await
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn three_replicas_share_one_budget_and_qpien_answers_no_429() {
    let redis = RedisServer::start().await;
    let replicas = replicas(3, sandbox_limit(10), Some(&redis), limits(10)).await;

    let responses = flood(&replicas, 60).await;

    let stats = replicas.sandbox.stats();
    assert_eq!(stats.rate_limited, 0, "Qpien never had to refuse");
    assert!(
        stats.requests <= 10,
        "{} requests reached Qpien",
        stats.requests
    );
    for response in responses {
        match response.status().as_u16() {
            200 => {}
            429 => {
                assert!(!header(&response, "retry-after").is_empty());
            }
            other => panic!("a caller got {other}"),
        }
    }
}

#[tokio::test]
async fn without_redis_the_same_three_replicas_overspend_the_account() {
    // The control: each replica believes the whole limit is its own.
    let replicas = replicas(3, sandbox_limit(10), None, move |s: &mut Settings| {
        limits(10)(s);
        s.upstream.replicas = 1;
    })
    .await;

    flood(&replicas, 60).await;

    assert!(replicas.sandbox.stats().rate_limited > 0);
}

#[tokio::test]
async fn without_redis_each_replica_keeps_to_its_share() {
    let replicas = replicas(3, sandbox_limit(10), None, limits(10)).await;

    flood(&replicas, 60).await;

    let stats = replicas.sandbox.stats();
    assert_eq!(stats.rate_limited, 0);
    assert!(stats.requests <= 10, "{}", stats.requests);
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn three_replicas_meeting_an_expired_token_renew_it_once() {
    let redis = RedisServer::start().await;
    let sandbox = SandboxConfig {
        token_ttl: Duration::from_secs(4),
        rate_limit_per_minute: 10_000,
        ..Default::default()
    };
    let replicas = replicas(3, sandbox, Some(&redis), limits(10_000)).await;
    for (i, app) in replicas.apps.iter().enumerate() {
        let first = app
            .get(&format!("/conversations?pageSize=2&page={}", i + 1))
            .await;
        assert_eq!(first.status().as_u16(), 200);
    }
    let operations = |r: &Replicas| {
        r.sandbox
            .stats()
            .operations
            .get("generateOAuthToken")
            .copied()
    };
    assert_eq!(operations(&replicas), Some(1), "one token for the three");
    tokio::time::sleep(Duration::from_millis(4_100)).await;

    let paths: Vec<String> = (1..=300)
        .map(|page| format!("/conversations?pageSize=3&page={page}"))
        .collect();
    let responses = join_all(
        paths
            .iter()
            .enumerate()
            .map(|(i, path)| replicas.apps[i % 3].get(path)),
    )
    .await;

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    assert_eq!(operations(&replicas), Some(2), "exactly one renewal");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn token_expired_seen_by_three_replicas_throws_the_shared_token_away_once() {
    let redis = RedisServer::start().await;
    let upstream = MockServer::start().await;
    let token = |t: &str| {
        Mock::given(method("POST"))
            .and(body_partial_json(
                json!({"operationName": "GenerateOAuthToken"}),
            ))
            .respond_with(token_answer(t))
    };
    token("old").up_to_n_times(1).mount(&upstream).await;
    token("new").mount(&upstream).await;
    Mock::given(method("POST"))
        .and(has_header("authorization", "Bearer old"))
        .respond_with(graphql_error("TOKEN_EXPIRED"))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(has_header("authorization", "Bearer new"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"data": {"getConversation": {"_id": "6650a1000000000000000001"}}}),
        ))
        .mount(&upstream)
        .await;
    let mut apps = Vec::new();
    for _ in 0..3 {
        let share = shared_through(Some(&redis), 3);
        apps.push(
            spawn_app_with(Setup {
                upstream_url: Some(crate::helpers::graphql_url(&upstream)),
                settings: Box::new(move |s| share(s)),
                ..Setup::default()
            })
            .await,
        );
    }
    // Each replica adopts the old token first (the first one asks Qpien for it).
    for app in &apps {
        let _ = app.get("/readyz").await;
    }

    let responses = join_all(
        apps.iter()
            .map(|a| a.get_conversation("6650a1000000000000000001")),
    )
    .await;

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    let requests = upstream.received_requests().await.unwrap();
    let renewals = requests
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("GenerateOAuthToken"))
        .count();
    assert_eq!(renewals, 2, "the first token and one renewal, not three");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_write_through_one_replica_is_what_the_others_read_next() {
    let redis = RedisServer::start().await;
    let replicas = sharing(&redis, 3).await;
    let [a, b, c] = [&replicas.apps[0], &replicas.apps[1], &replicas.apps[2]];
    let id = "6650a1000000000000000007";
    let before = a.get_conversation(id).await;
    let etag = header(&before, "etag");
    let status: Value = before.json().await.unwrap();
    let next = if status["status"] == "closed" {
        "open"
    } else {
        "closed"
    };
    a.list_conversations("?pageSize=100").await;

    let not_modified = b
        .get_with(&format!("/conversations/{id}"), &[("If-None-Match", &etag)])
        .await;
    let patched = b.merge_patch_if(id, json!({"status": next}), &etag).await;
    let item = a.get_conversation(id).await;
    let refused = c
        .merge_patch_if(id, json!({"status": "pending"}), &etag)
        .await;
    let list: Value = c
        .list_conversations("?pageSize=100")
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(not_modified.status().as_u16(), 304, "B knows A's answer");
    assert_eq!(patched.status().as_u16(), 200);
    assert_eq!(header(&item, "etag"), header(&patched, "etag"));
    let item: Value = item.json().await.unwrap();
    assert_eq!(item["status"], next, "A reads B's write");
    assert_problem(refused, 412).await;
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap();
    assert_eq!(
        listed["status"], next,
        "C's list is not the page cached before"
    );
    let stats = replicas.sandbox.stats();
    assert_eq!(
        stats.operations.get("getConversation").copied(),
        Some(3),
        "A's read and the If-Match checks of B and C; A's second read came from Redis"
    );
    assert_eq!(
        stats.operations.get("getConversationList").copied(),
        Some(2)
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn identical_misses_on_three_replicas_cost_qpien_one_call() {
    let redis = RedisServer::start().await;
    let sandbox = SandboxConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    };
    let replicas = replicas(3, sandbox, Some(&redis), |_: &mut Settings| {}).await;
    // Each replica holds the token before the reads race.
    for app in &replicas.apps {
        app.get("/readyz").await;
    }

    let responses =
        join_all((0..30).map(|i| replicas.apps[i % 3].list_conversations("?status=pending"))).await;

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    let calls = replicas
        .sandbox
        .stats()
        .operations
        .get("getConversationList")
        .copied();
    assert_eq!(calls, Some(1));
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn redis_killed_and_restarted_under_load_is_no_outage() {
    let mut redis = RedisServer::start().await;
    let replicas = replicas(3, sandbox_limit(30), Some(&redis), limits(30)).await;
    // The load goes on until Redis is back, at a pace that spreads it over the faults.
    let faults_over = std::sync::atomic::AtomicBool::new(false);
    let load = async {
        let mut statuses = Vec::new();
        let mut round = 0;
        while round < 8 || !faults_over.load(std::sync::atomic::Ordering::SeqCst) {
            let paths: Vec<String> = (0..6)
                .map(|i| {
                    format!(
                        "/conversations?pageSize=1&page={}",
                        (round * 6 + i) % 50 + 1
                    )
                })
                .collect();
            let responses = join_all(
                paths
                    .iter()
                    .enumerate()
                    .map(|(i, path)| replicas.apps[i % 3].get(path)),
            )
            .await;
            statuses.extend(responses.iter().map(|r| r.status().as_u16()));
            round += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        statuses
    };
    let app = &replicas.apps[0];
    let readiness =
        async |app: &TestApp| -> Value { app.get("/readyz").await.json().await.unwrap() };
    let faults = async {
        // Every replica holds a token and keeps its state in Redis before it goes.
        for replica in &replicas.apps {
            eventually("every replica ready with Redis", PATIENCE, async || {
                let ready = readiness(replica).await;
                (ready["sharedState"] == "redis").then_some(())
            })
            .await;
        }
        redis.kill();
        // The load's reads go through Redis, so the replica notices.
        let ready = eventually(
            "readiness to say Redis is unreachable",
            PATIENCE,
            async || {
                let ready = readiness(app).await;
                (ready["sharedState"] == "in-process (Redis unreachable)").then_some(ready)
            },
        )
        .await;
        let metrics = app.get("/metrics").await.text().await.unwrap();
        redis.restart().await;
        let back = eventually("readiness to say Redis is back", PATIENCE, async || {
            let ready = readiness(app).await;
            (ready["sharedState"] == "redis").then_some(ready)
        })
        .await;
        faults_over.store(true, std::sync::atomic::Ordering::SeqCst);
        (ready, metrics, back)
    };

    let (statuses, (during, metrics, after)) = tokio::join!(load, faults);

    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(
        replicas.sandbox.stats().rate_limited,
        0,
        "Qpien never had to refuse"
    );
    assert_eq!(during["status"], "ready");
    assert_eq!(during["sharedState"], "in-process (Redis unreachable)");
    assert!(metrics.contains("qpien_rest_redis_up 0"), "{metrics}");
    assert_eq!(after["sharedState"], "redis");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_redis_that_stops_answering_holds_no_request_up() {
    let redis = RedisServer::start().await;
    let replicas = replicas(
        1,
        SandboxConfig::default(),
        Some(&redis),
        |s: &mut Settings| {
            s.redis.as_mut().unwrap().timeout = Duration::from_millis(250);
        },
    )
    .await;
    let app = &replicas.apps[0];
    app.get("/conversations?pageSize=1").await;
    let mut connection = redis.connection().await.unwrap();
    // Redis sleeps five seconds: every command in that time would hang on it.
    let sleeping = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(5)
            .query_async(&mut connection)
            .await;
    });
    // Asleep: a PING on a connection of its own gets no answer.
    eventually("Redis to fall asleep", PATIENCE, async || {
        let ping = tokio::time::timeout(Duration::from_millis(100), redis.connection()).await;
        ping.is_err().then_some(())
    })
    .await;

    let started = std::time::Instant::now();
    let paths: Vec<String> = (2..=6)
        .map(|p| format!("/conversations?pageSize=1&page={p}"))
        .collect();
    let responses = join_all(paths.iter().map(|p| app.get(p))).await;
    let took = started.elapsed();

    assert!(responses.iter().all(|r| r.status().as_u16() == 200));
    assert!(
        took < Duration::from_millis(3_500),
        "requests waited on Redis: {took:?}"
    );
    // Not waited for: the server is killed with the test, asleep or not.
    sleeping.abort();
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn redis_holds_no_token_or_secret_in_clear() {
    let redis = RedisServer::start().await;
    // Pass-through: the caller's token is the credential.
    let upstream = replicas(1, SandboxConfig::default(), None, |_: &mut Settings| {}).await;
    let url = redis.url();
    let pass_through = spawn_app_with(Setup {
        upstream_url: Some(upstream.sandbox.url()),
        settings: Box::new(move |s| {
            s.redis = Some(RedisSettings {
                url: Secret::new(url),
                key_prefix: "qpien-rest-test:".into(),
                timeout: Duration::from_millis(250),
                hash_secret: Some(Secret::new("a shared secret of the replicas")),
            });
        }),
        ..Setup::pass_through()
    })
    .await;
    let token = upstream.apps[0]
        .sandbox_token_at(&upstream.sandbox.url(), DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)
        .await;
    assert_eq!(
        pass_through
            .get_as("/conversations?pageSize=2", &token)
            .await
            .status()
            .as_u16(),
        200
    );
    // Service mode: the service's token and secret.
    let service = sharing(&redis, 1).await;
    service.apps[0].get("/conversations?pageSize=2").await;

    let everything = redis.dump().await;

    assert!(
        everything.iter().any(|(k, _)| k.contains(":token:")),
        "the service token is shared"
    );
    for (key, value) in &everything {
        let text = String::from_utf8_lossy(value);
        for secret in [token.as_str(), DEMO_CLIENT_SECRET] {
            assert!(
                !key.contains(secret) && !text.contains(secret),
                "{key} holds a secret"
            );
        }
        let hex_run = text
            .as_bytes()
            .split(|b| !b.is_ascii_hexdigit())
            .any(|run| run.len() >= 64);
        assert!(!hex_run, "{key} holds what looks like an access token");
    }
}

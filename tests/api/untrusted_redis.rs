//! Redis is not trusted: values written into it by anyone but a replica (planted, moved
//! from another key, dated ahead, junk of any type, a lock that never expires) are
//! ignored and counted, the facade keeps serving Qpien's data, and Redis is not taken for
//! down. Values are written with a plain Redis client; Qpien's side is counted by the
//! sandbox.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qpien_rest::settings::{RedisSettings, Secret, Settings};
use qpien_rest::state::trust::ValueMac;
use qpien_sandbox::{DEMO_CLIENT_SECRET, Sandbox, SandboxConfig};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{PATIENCE, Setup, TestApp, eventually, spawn_app_with};
use crate::redis_server::RedisServer;

const PREFIX: &str = "qpien-rest-test:";
const A: &str = "6650a1000000000000000001";
const B: &str = "6650a1000000000000000002";

fn sandbox() -> Sandbox {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    Sandbox::start(listener, SandboxConfig::default()).unwrap()
}

/// A replica in service mode (the demo key: its secret keys the MACs) in front of
/// `sandbox`, sharing `redis`, with Qpien's deadline `timeout`.
async fn replica(redis: &RedisServer, sandbox: &Sandbox, timeout: Duration) -> TestApp {
    let url = redis.url();
    spawn_app_with(Setup {
        upstream_url: Some(sandbox.url()),
        settings: Box::new(move |s: &mut Settings| {
            s.upstream.request_timeout = timeout;
            s.redis = Some(RedisSettings {
                url: Secret::new(url),
                key_prefix: PREFIX.into(),
                timeout: Duration::from_secs(2),
                hash_secret: None,
            });
        }),
        ..Setup::default()
    })
    .await
}

fn calls(sandbox: &Sandbox, operation: &str) -> u64 {
    sandbox
        .stats()
        .operations
        .get(operation)
        .copied()
        .unwrap_or(0)
}

/// The one key matching `pattern`.
async fn key(redis: &RedisServer, pattern: &str) -> String {
    let mut c = redis.connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "one key matches {pattern}: {keys:?}");
    keys.into_iter().next().unwrap()
}

/// Sends `command` as anyone with access to Redis could.
async fn send(redis: &RedisServer, command: &redis::Cmd) {
    let mut c = redis.connection().await.unwrap();
    let _: redis::Value = command.query_async(&mut c).await.unwrap();
}

async fn get(redis: &RedisServer, key: &str) -> Vec<u8> {
    let mut c = redis.connection().await.unwrap();
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

/// The count of `rejected{kind, reason}` (0 when never counted).
fn rejected(metrics: &str, kind: &str, reason: &str) -> u64 {
    let series =
        format!("qpien_rest_redis_values_rejected_total{{kind=\"{kind}\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.parse().unwrap())
}

async fn assert_redis_up(app: &TestApp) {
    assert!(
        metrics(app).await.contains("\nqpien_rest_redis_up 1\n"),
        "Redis was taken for down"
    );
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn json_of(app: &TestApp, id: &str) -> Value {
    let response = app.get_conversation(id).await;
    assert_eq!(response.status().as_u16(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn an_answer_planted_or_moved_in_redis_is_never_served() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let app = replica(&redis, &sandbox, Duration::from_secs(10)).await;
    let real_a = json_of(&app, A).await;
    json_of(&app, B).await;
    let key_a = key(&redis, &format!("{PREFIX}read:*:c:{A}")).await;
    let key_b = key(&redis, &format!("{PREFIX}read:*:c:{B}")).await;

    // Planted: the form of an answer, fresh, with 32 bytes where a MAC would be.
    let planted = format!(
        "{}:0:0:{}",
        now_ms(),
        json!({"id": A, "subject": "planted"})
    );
    let planted = [planted.as_bytes(), &[7u8; 32]].concat();
    send(&redis, redis::cmd("SET").arg(&key_a).arg(&planted)).await;
    let after_planted = json_of(&app, A).await;
    assert_redis_up(&app).await;
    // Moved: B's genuine answer under A's key.
    let b_value = get(&redis, &key_b).await;
    send(&redis, redis::cmd("SET").arg(&key_a).arg(&b_value)).await;
    let after_moved = json_of(&app, A).await;
    assert_redis_up(&app).await;
    let again = json_of(&app, A).await;

    assert_eq!(after_planted, real_a, "the planted answer is not served");
    assert_eq!(after_moved, real_a, "B's answer is not served for A");
    assert_eq!(again, real_a);
    assert_eq!(
        calls(&sandbox, "getConversation"),
        4,
        "A and B, then A fetched afresh twice; the answer stored then is a hit"
    );
    let metrics = metrics(&app).await;
    assert_eq!(rejected(&metrics, "read", "unauthenticated"), 2);
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn an_answer_dated_ahead_is_refused_and_gives_way_to_the_next_one() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let app = replica(&redis, &sandbox, Duration::from_secs(10)).await;
    let real = json_of(&app, A).await;
    let key_a = key(&redis, &format!("{PREFIX}read:*:c:{A}")).await;
    // As a replica whose clock runs an hour ahead would store it, with a good MAC.
    let ahead = format!(
        "{}:0:0:{}",
        now_ms() + 3_600_000,
        json!({"id": A, "subject": "from the future"})
    );
    let sealed = ValueMac::new(DEMO_CLIENT_SECRET).seal(&key_a, ahead.as_bytes());
    send(&redis, redis::cmd("SET").arg(&key_a).arg(&sealed)).await;

    let refused = json_of(&app, A).await;
    let next = json_of(&app, A).await;

    assert_eq!(refused, real, "the answer dated ahead is not served");
    assert_eq!(next, real);
    assert_eq!(
        calls(&sandbox, "getConversation"),
        2,
        "fetched afresh once; that answer replaced the one dated ahead in Redis"
    );
    assert_eq!(rejected(&metrics(&app).await, "read", "future"), 1);
    assert_redis_up(&app).await;
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn junk_in_every_shared_key_keeps_the_service_up_and_redis_shared() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let app = replica(&redis, &sandbox, Duration::from_secs(10)).await;
    json_of(&app, A).await;
    assert_eq!(app.list_conversations("?pageSize=2").await.status(), 200);
    let budget = key(&redis, &format!("{PREFIX}budget:*")).await;
    let token = key(&redis, &format!("{PREFIX}token:*")).await;
    let read_a = key(&redis, &format!("{PREFIX}read:*:c:{A}")).await;
    // `read:<credential>:c:<id>`: the credential's list generation is `generation:<credential>`.
    let credential = read_a.split(':').nth(2).unwrap();
    let generation = format!("{PREFIX}generation:{credential}");
    send(
        &redis,
        redis::cmd("SET")
            .arg(b"qpien-rest-test:changes:sequence")
            .arg(b"junk"),
    )
    .await;
    send(
        &redis,
        redis::cmd("HSET")
            .arg(b"qpien-rest-test:changed:all")
            .arg(b"f")
            .arg(b"v"),
    )
    .await;
    send(&redis, redis::cmd("SET").arg(&generation).arg(b"junk")).await;
    send(&redis, redis::cmd("SET").arg(&budget).arg(b"junk")).await;
    send(&redis, redis::cmd("SET").arg(&token).arg(b"junk")).await;
    send(&redis, redis::cmd("SET").arg(&read_a).arg(b"junk")).await;

    let read = app.get_conversation(A).await.status().as_u16();
    assert_redis_up(&app).await;
    let listed = app
        .list_conversations("?pageSize=2")
        .await
        .status()
        .as_u16();
    assert_redis_up(&app).await;
    let patched = app.merge_patch(B, json!({"starred": true})).await;
    assert_redis_up(&app).await;
    let after: Value = app.get_conversation(B).await.json().await.unwrap();

    assert_eq!((read, listed, patched.status().as_u16()), (200, 200, 200));
    assert_eq!(after["starred"], true, "the update is read back");
    let metrics = metrics(&app).await;
    for kind in ["change", "generation", "budget"] {
        assert!(
            rejected(&metrics, kind, "malformed") > 0,
            "junk {kind} counted:\n{metrics}"
        );
    }
    assert_eq!(rejected(&metrics, "read", "unauthenticated"), 1);
    // Repaired as the service went on: the budget is a window again.
    let mut c = redis.connection().await.unwrap();
    let kind: String = redis::cmd("TYPE")
        .arg(&budget)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_token_renewal_lock_planted_in_redis_stalls_no_replica_past_the_locks_hold() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    // Qpien's deadline 1.5 s: a renewal holds the lock at most 2.5 s, so the wait ends
    // in the middle of a request (at its end, the deadline could cut the renewal short).
    let timeout = Duration::from_millis(1_500);
    let first = replica(&redis, &sandbox, timeout).await;
    assert_eq!(first.list_conversations("?pageSize=1").await.status(), 200);
    let token = key(&redis, &format!("{PREFIX}token:*")).await;
    let lock = token.replace(":token:", ":token-lock:");

    // A lock without expiry, which no replica sets: taken over at once.
    send(&redis, redis::cmd("DEL").arg(&token)).await;
    send(&redis, redis::cmd("SET").arg(&lock).arg(b"planted")).await;
    let second = replica(&redis, &sandbox, timeout).await;
    let started = Instant::now();
    // Each replica reads a page no other cached: it needs the token.
    let status = second.list_conversations("?pageSize=2").await.status();
    let unexpiring_took = started.elapsed();
    // A lock held for ten minutes: waited on no longer than a renewal may hold it.
    send(&redis, redis::cmd("DEL").arg(&token)).await;
    send(
        &redis,
        redis::cmd("SET")
            .arg(&lock)
            .arg(b"planted")
            .arg(b"PX")
            .arg(b"600000"),
    )
    .await;
    let third = replica(&redis, &sandbox, timeout).await;
    let started = Instant::now();
    eventually("the third replica to serve", PATIENCE, async || {
        (third.list_conversations("?pageSize=3").await.status() == 200).then_some(())
    })
    .await;
    let long_took = started.elapsed();

    assert_eq!(status, 200);
    assert!(unexpiring_took < timeout, "{unexpiring_took:?}");
    assert!(long_took < Duration::from_secs(5), "{long_took:?}");
    assert_eq!(
        calls(&sandbox, "generateOAuthToken"),
        3,
        "each replica renewed once"
    );
    assert_eq!(rejected(&metrics(&second).await, "lock", "unexpiring"), 1);
    // The token the third replica got alone is the one the others find next.
    assert!(!get(&redis, &token).await.is_empty());
    assert_redis_up(&third).await;
}

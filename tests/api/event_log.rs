//! The event log in Redis Streams, against a real `redis-server`: cursors shared by the
//! replicas, live events from every replica, retention, and no acknowledged event lost
//! when Redis (with its append-only file) is killed and restarted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use qpien_rest::events::log::{Cursor, EARLIEST, EventKind, EventLog, Filter, LogError, NewEvent};
use qpien_rest::metrics::Metrics;
use qpien_rest::settings::{EventLogSettings, Secret, Settings};
use qpien_rest::state::redis::RedisState;
use serde_json::json;

use crate::redis_server::RedisServer;

const A: &str = "6650a1000000000000000001";
const B: &str = "6650a1000000000000000002";

/// One replica's log on `server`.
async fn replica(server: &RedisServer, retention: Duration) -> Arc<EventLog> {
    let redis = server.settings();
    let secret = Secret::new("a secret the replicas share");
    let state = RedisState::connect(&redis, &secret, Arc::new(Metrics::default()))
        .await
        .unwrap();
    let settings = Settings {
        redis: Some(redis),
        event_log: EventLogSettings {
            retention,
            ..EventLogSettings::default()
        },
        data_dir: "/nonexistent/the-log-must-be-in-redis".into(),
        ..Settings::default()
    };
    EventLog::open(&settings, Some(state)).await.unwrap()
}

fn event(kind: EventKind, conversation: &str, n: u64) -> NewEvent {
    NewEvent {
        kind,
        qpien_type: Some("NEW_INCOMING_MESSAGE".into()),
        occurred_at: Utc::now(),
        conversation_id: Some(conversation.into()),
        data: json!({ "n": n }),
    }
}

const WEEK: Duration = Duration::from_secs(7 * 86_400);

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_cursor_from_one_replica_reads_on_another_and_each_sees_the_others_events_live() {
    let server = RedisServer::start().await;
    let (one, two) = (replica(&server, WEEK).await, replica(&server, WEEK).await);
    let mut live_on_two = two.subscribe();
    let start = one.after(None, &Filter::default(), 10).await.unwrap();
    assert!(start.events.is_empty());

    let mut appended = Vec::new();
    for n in 0..5 {
        appended.push(one.append(event(EventKind::Updated, A, n)).await.unwrap());
    }
    let first = two.after(Some(&start.next), &Filter::default(), 3).await;
    let first = first.unwrap();
    let second = two.after(Some(&first.next), &Filter::default(), 3).await;
    let second = second.unwrap();

    assert_eq!(first.events, appended[..3]);
    assert_eq!(second.events, appended[3..]);
    assert_eq!(second.next, two.latest().await.unwrap());
    assert!(
        appended
            .windows(2)
            .all(|w| w[0].id.as_str() < w[1].id.as_str()),
        "ids sort as strings"
    );
    for expected in &appended {
        let got = tokio::time::timeout(Duration::from_secs(2), live_on_two.recv()).await;
        assert_eq!(&got.expect("live within 2 s").unwrap(), expected);
    }
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_filtered_read_returns_only_matches_and_its_cursor_passes_the_rest() {
    let server = RedisServer::start().await;
    let log = replica(&server, WEEK).await;
    let start = log.latest().await.unwrap();
    log.append(event(EventKind::Updated, A, 0)).await.unwrap();
    let wanted = log.append(event(EventKind::Joined, B, 1)).await.unwrap();
    log.append(event(EventKind::Joined, A, 2)).await.unwrap();
    let filter = Filter {
        types: vec![EventKind::Joined],
        conversation_id: Some(B.into()),
    };

    let page = log.after(Some(&start), &filter, 10).await.unwrap();

    assert_eq!(page.events, vec![wanted]);
    assert_eq!(page.next, log.latest().await.unwrap());
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_cursor_before_trimmed_events_or_not_from_this_log_is_gone() {
    let server = RedisServer::start().await;
    let log = replica(&server, Duration::from_millis(300)).await;
    let start = log.latest().await.unwrap();
    let old = log.append(event(EventKind::Updated, A, 0)).await.unwrap();
    let last_old = log.append(event(EventKind::Updated, A, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = log.append(event(EventKind::Updated, A, 2)).await.unwrap();

    assert_eq!(log.prune().await.unwrap(), 2, "the two older than 300 ms");

    let future = Cursor::new("9999999999999-000000");
    for gone in [&start, &old.id, &Cursor::new("abc"), &future] {
        let answer = log.after(Some(gone), &Filter::default(), 10).await;
        assert!(matches!(answer, Err(LogError::Gone)), "{gone}: {answer:?}");
    }
    let kept = log.after(Some(&last_old.id), &Filter::default(), 10).await;
    assert_eq!(kept.unwrap().events, vec![new.clone()]);
    let earliest = Cursor::new(EARLIEST);
    let all_kept = log.after(Some(&earliest), &Filter::default(), 10).await;
    assert_eq!(
        all_kept.unwrap().events,
        vec![new],
        "all that is kept, never gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn a_killed_and_restarted_redis_with_its_append_only_file_loses_no_acknowledged_event() {
    let mut server = RedisServer::start_persistent().await;
    let log = replica(&server, WEEK).await;
    let (acks, mut acknowledged) = tokio::sync::mpsc::unbounded_channel();
    let began = Instant::now();
    for t in 0..8u64 {
        let (log, acks) = (log.clone(), acks.clone());
        tokio::spawn(async move {
            for n in (t..).step_by(8) {
                match log.append(event(EventKind::Updated, A, n)).await {
                    Ok(stored) => acks.send((stored.id, n)).unwrap(),
                    Err(_) => return,
                }
            }
        });
    }
    drop(acks);
    let mut stored_before_kill = Vec::new();
    while stored_before_kill.len() < 1_000 {
        stored_before_kill.push(acknowledged.recv().await.unwrap());
    }
    let elapsed = began.elapsed();

    server.kill(); // SIGKILL, appends in flight
    while let Some(ack) = acknowledged.recv().await {
        stored_before_kill.push(ack);
    }
    server.restart().await;

    let log = replica(&server, WEEK).await;
    let mut stored = std::collections::HashMap::new();
    let mut cursor = Cursor::new("0-0");
    loop {
        let page = log.after(Some(&cursor), &Filter::default(), 1_000).await;
        let page = page.unwrap();
        if page.events.is_empty() {
            break;
        }
        for event in page.events {
            stored.insert(event.id.clone(), event.data["n"].as_u64().unwrap());
        }
        cursor = page.next;
    }
    for (id, n) in &stored_before_kill {
        assert_eq!(stored.get(id), Some(n), "event {id} lost");
    }
    eprintln!(
        "redis (appendfsync always): 1000 appends from 8 tasks in {elapsed:?} ({:.0}/s); {} acknowledged before the kill, none lost",
        1_000.0 / elapsed.as_secs_f64(),
        stored_before_kill.len()
    );
}

#[tokio::test]
#[cfg_attr(
    not(redis_server),
    ignore = "no redis-server on PATH: apt-get install redis-server"
)]
async fn entries_planted_in_the_stream_are_neither_read_nor_sent_live() {
    let server = RedisServer::start().await;
    let log = replica(&server, WEEK).await;
    let mut live = log.subscribe();
    let start = log.latest().await.unwrap();
    let before = log.append(event(EventKind::Updated, A, 0)).await.unwrap();
    // A well-formed event without a MAC, one with a wrong MAC, and junk.
    let body = serde_json::to_string(&event(EventKind::Joined, B, 1)).unwrap();
    let mut c = server.connection().await.unwrap();
    for fields in [
        vec!["e", body.as_str()],
        vec!["e", body.as_str(), "m", &"0".repeat(64)],
        vec!["x", "y"],
    ] {
        let _: String = redis::cmd("XADD")
            .arg("qpien-rest-test:events:log")
            .arg("*")
            .arg(&fields)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let after = log.append(event(EventKind::Updated, A, 2)).await.unwrap();

    let page = log
        .after(Some(&start), &Filter::default(), 10)
        .await
        .unwrap();

    assert_eq!(page.events, vec![before.clone(), after.clone()]);
    assert_eq!(page.next, log.latest().await.unwrap());
    for expected in [before, after] {
        let got = tokio::time::timeout(Duration::from_secs(2), live.recv()).await;
        assert_eq!(got.expect("live within 2 s").unwrap(), expected);
    }
    let more = tokio::time::timeout(Duration::from_millis(300), live.recv()).await;
    assert!(more.is_err(), "a planted entry went out live: {more:?}");
}

//! `feed log`: appends and catch-up reads of the event log as a library, on the store
//! its environment names. Appends run for `SECONDS_PER_LEVEL` at each concurrency; the
//! log is then filled up to `EVENTS` events, and readers ask for pages of 100 after
//! cursors picked at random among them, for `SECONDS_PER_LEVEL` at each concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use qpien_rest::events::log::{Cursor, EventKind, EventLog, Filter, NewEvent};
use qpien_rest::metrics::Metrics;
use qpien_rest::settings::{Secret, Settings};
use qpien_rest::state::redis::RedisState;
use serde_json::{Value, json};

use crate::{number, percentile};

const PAGE: usize = 100;

/// An event of the size the sandbox's activity makes: a message received.
fn event(n: u64) -> NewEvent {
    let now = Utc::now();
    NewEvent {
        kind: EventKind::MessageReceived,
        qpien_type: Some("NEW_INCOMING_MESSAGE".into()),
        occurred_at: now,
        conversation_id: Some(format!("6650a1{:018x}", n % 500)),
        data: json!({"message": {
            "id": format!("6650f1{n:018x}"),
            "content": "Hello! Is my order on its way? It was due yesterday.",
            "channelType": "whatsapp",
            "direction": "incoming",
            "sentAt": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }}),
    }
}

/// What a set of appenders did: the ids given, latencies in µs, failures.
#[derive(Default)]
struct Appended {
    ids: Vec<Cursor>,
    micros: Vec<u64>,
    failed: u64,
}

/// `appenders` tasks appending until `deadline` or until `budget` appends were made.
async fn append(log: &Arc<EventLog>, appenders: usize, deadline: Instant, budget: u64) -> Appended {
    let made = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let (log, made) = (log.clone(), made.clone());
            tokio::spawn(async move {
                let mut done = Appended::default();
                while Instant::now() < deadline {
                    let n = made.fetch_add(1, Ordering::Relaxed);
                    if n >= budget {
                        break;
                    }
                    let started = Instant::now();
                    match log.append(event(n)).await {
                        Ok(stored) => {
                            done.micros.push(started.elapsed().as_micros() as u64);
                            done.ids.push(stored.id);
                        }
                        Err(_) => done.failed += 1,
                    }
                }
                done
            })
        })
        .collect();
    let mut all = Appended::default();
    for task in tasks {
        let done = task.await.expect("an appender panicked");
        all.ids.extend(done.ids);
        all.micros.extend(done.micros);
        all.failed += done.failed;
    }
    all
}

/// `readers` tasks reading pages after random cursors of `ids` (sorted) for `time`.
async fn read(
    log: &Arc<EventLog>,
    ids: &Arc<Vec<Cursor>>,
    readers: usize,
    time: Duration,
) -> Value {
    let started = Instant::now();
    let deadline = started + time;
    let tasks: Vec<_> = (0..readers)
        .map(|_| {
            let (log, ids) = (log.clone(), ids.clone());
            tokio::spawn(async move {
                let (mut pages, mut short, mut failed, mut micros) = (0u64, 0u64, 0u64, Vec::new());
                while Instant::now() < deadline {
                    let cursor = &ids[fastrand::usize(..ids.len() - PAGE)];
                    let asked = Instant::now();
                    match log.after(Some(cursor), &Filter::default(), PAGE).await {
                        Ok(page) => {
                            micros.push(asked.elapsed().as_micros() as u64);
                            pages += 1;
                            short += u64::from(page.events.len() < PAGE);
                        }
                        Err(_) => failed += 1,
                    }
                }
                (pages, short, failed, micros)
            })
        })
        .collect();
    let (mut pages, mut short, mut failed, mut micros) = (0, 0, 0, Vec::new());
    for task in tasks {
        let (p, s, f, m) = task.await.expect("a reader panicked");
        (pages, short, failed) = (pages + p, short + s, failed + f);
        micros.extend(m);
    }
    let elapsed = started.elapsed().as_secs_f64();
    micros.sort_unstable();
    json!({
        "pagesPerSecond": (pages as f64 / elapsed).round(),
        "shortPages": short,
        "failed": failed,
        "p50Micros": percentile(&micros, 50.0),
        "p99Micros": percentile(&micros, 99.0),
    })
}

pub async fn run() -> Value {
    let level = Duration::from_secs(number("SECONDS_PER_LEVEL", 5));
    let wanted = number("EVENTS", 100_000);
    // The store as the service would open it from its environment; a longer Redis
    // timeout than the service's 250 ms, so that a slow fsync is a slow append here
    // rather than an outage.
    let mut vars: Vec<(String, String)> = ["DATA_DIR", "REDIS_URL"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
        .collect();
    vars.push(("REDIS_TIMEOUT_MS".into(), "5000".into()));
    vars.push(("REDIS_KEY_PREFIX".into(), "feedbench:".into()));
    let settings =
        Settings::from_lookup(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
            .expect("the store's settings are valid");
    let redis = match &settings.redis {
        Some(redis) => Some(
            // The benchmark's own secret: what authenticates the stream's entries.
            RedisState::connect(
                redis,
                &Secret::new("feed benchmark hash secret"),
                Arc::new(Metrics::default()),
            )
            .await
            .expect("REDIS_URL is usable"),
        ),
        None => None,
    };
    let log = EventLog::open(&settings, redis)
        .await
        .expect("the event log opens");

    let mut ids = Vec::new();
    let mut appends = serde_json::Map::new();
    for appenders in [1usize, 8, 64] {
        let started = Instant::now();
        let mut done = append(&log, appenders, started + level, u64::MAX).await;
        let elapsed = started.elapsed().as_secs_f64();
        done.micros.sort_unstable();
        appends.insert(
            appenders.to_string(),
            json!({
                "perSecond": (done.ids.len() as f64 / elapsed).round(),
                "failed": done.failed,
                "p50Micros": percentile(&done.micros, 50.0),
                "p99Micros": percentile(&done.micros, 99.0),
            }),
        );
        ids.extend(done.ids);
    }
    while (ids.len() as u64) < wanted {
        let far = Instant::now() + Duration::from_secs(3600);
        let done = append(&log, 64, far, wanted - ids.len() as u64).await;
        assert!(done.failed == 0, "appends failed while filling the log");
        ids.extend(done.ids);
    }
    ids.sort_unstable();
    let ids = Arc::new(ids);
    let mut reads = serde_json::Map::new();
    for readers in [1usize, 8] {
        reads.insert(readers.to_string(), read(&log, &ids, readers, level).await);
    }
    json!({"events": ids.len(), "appends": appends, "reads": reads})
}

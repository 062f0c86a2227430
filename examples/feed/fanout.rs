//! `feed fanout`: `STREAMS` clients of `GET /events` on one facade, all from the same
//! cursor, then a `PATCH` through the facade every second for `SECONDS` while the
//! embedded sandbox's activity goes on. Every stream records each event id it gets and
//! when; at the end the feed itself (`GET /conversations/changes` after the same
//! cursor) says what every stream should have had, in order.
//!
//! Latency is measured only for events recorded once every stream was open: for a
//! `PATCH`'s event (`conversation.updated` without a Qpien type, the only source of
//! those, taken in the order the `PATCH`es were answered) from the `PATCH`'s answer, on
//! this process's clock (exact; negative when the event came first: it is appended
//! before the answer), and from the `PATCH`'s sending (its whole path: the call to the
//! sandbox, the append, the fan-out); for the sandbox's from its `occurredAt`, which
//! also holds the sandbox's delivery to the facade's webhook receiver (an upper bound).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{now_ms, number, percentile, setting};

/// What one stream received: each event id, when (this process's clock and wall clock).
#[derive(Default)]
struct Received {
    events: Vec<(String, Instant, i64)>,
    /// The answer's status when it was not a stream.
    refused: Option<String>,
    /// The facade ended the stream before the run did.
    ended_early: bool,
}

async fn follow(
    http: reqwest::Client,
    url: String,
    connected: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut got = Received::default();
    let mut response = match http.get(&url).send().await {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            got.refused = Some(r.status().to_string());
            return got;
        }
        Err(e) => {
            got.refused = Some(e.to_string());
            return got;
        }
    };
    connected.fetch_add(1, Ordering::Relaxed);
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            chunk = response.chunk() => {
                let Ok(Some(chunk)) = chunk else {
                    got.ended_early = true;
                    return got;
                };
                let (at, wall) = (Instant::now(), now_ms());
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                    let message: Vec<u8> = buffer.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&message);
                    if let Some(id) = text.lines().find_map(|l| l.strip_prefix("id: ")) {
                        got.events.push((id.to_owned(), at, wall));
                    }
                }
            }
            _ = stop.changed() => return got,
        }
    }
}

fn rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("the facade answers");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    response.json().await.expect("a JSON answer")
}

/// Every event after `after`, oldest first, from the feed itself.
async fn feed_after(http: &reqwest::Client, facade: &str, after: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor = after.to_owned();
    loop {
        let url = format!("{facade}/conversations/changes?after={cursor}&pageSize=500");
        let page = get_json(http, &url).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        cursor = page["next"].as_str().expect("a next cursor").to_owned();
        let full = items.len() == 500;
        events.extend(items);
        if !full {
            return events;
        }
    }
}

/// p50, p99 and max of samples in ms (one decimal).
fn spread(mut samples: Vec<f64>) -> Value {
    samples.sort_unstable_by(f64::total_cmp);
    let round = |v: Option<f64>| v.map(|v| (v * 10.0).round() / 10.0);
    json!({
        "samples": samples.len(),
        "p50": round(percentile(&samples, 50.0)),
        "p99": round(percentile(&samples, 99.0)),
        "max": round(samples.last().copied()),
    })
}

pub async fn run() -> Value {
    let facade = setting("FACADE", "http://127.0.0.1:8080");
    let pid = number("FACADE_PID", 0);
    let streams = number("STREAMS", 1000) as usize;
    let seconds = number("SECONDS", 90);
    let clock_ticks = number("CLK_TCK", 100) as f64;
    let http = reqwest::Client::new();

    let listed = get_json(&http, &format!("{facade}/conversations?pageSize=10")).await;
    let conversations: Vec<String> = listed["items"]
        .as_array()
        .expect("a list page")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let start = get_json(&http, &format!("{facade}/conversations/changes")).await["next"]
        .as_str()
        .expect("the current cursor")
        .to_owned();
    let rss_before = rss_kib(pid);

    let connected = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let url = format!("{facade}/events?after={start}");
    let opening = Instant::now();
    let followers: Vec<_> = (0..streams)
        .map(|_| {
            let task = follow(
                http.clone(),
                url.clone(),
                connected.clone(),
                stopped.clone(),
            );
            tokio::spawn(task)
        })
        .collect();
    while connected.load(Ordering::Relaxed) < streams && opening.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_secs = opening.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(pid);

    // The measured window: from here on every stream is open.
    let window = get_json(&http, &format!("{facade}/conversations/changes")).await["next"]
        .as_str()
        .expect("the current cursor")
        .to_owned();
    let (facade_cpu, own_cpu) = (cpu_ticks(&pid.to_string()), cpu_ticks("self"));
    let began = Instant::now();
    let mut answered = Vec::new();
    let mut patch_failures = 0u64;
    let mut starred: HashMap<String, bool> = HashMap::new();
    for k in 0..seconds {
        tokio::time::sleep_until((began + Duration::from_secs(k)).into()).await;
        let id = &conversations[k as usize % conversations.len()];
        let flag = starred.entry(id.clone()).or_default();
        *flag = !*flag;
        let sent_at = Instant::now();
        let sent = http
            .patch(format!("{facade}/conversations/{id}"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({ "starred": *flag }).to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => answered.push((sent_at, Instant::now())),
            _ => patch_failures += 1,
        }
    }
    let busy = began.elapsed().as_secs_f64();
    let facade_cores = (cpu_ticks(&pid.to_string()) - facade_cpu) as f64 / clock_ticks / busy;
    let own_cores = (cpu_ticks("self") - own_cpu) as f64 / clock_ticks / busy;
    // Stragglers arrive; then what the feed holds is what every stream should have had.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_end = rss_kib(pid);
    let expected = feed_after(&http, &facade, &start).await;
    let _ = stop.send(true);
    let mut received = Vec::new();
    for follower in followers {
        received.push(follower.await.expect("a stream panicked"));
    }

    let expected_ids: Vec<&str> = expected.iter().filter_map(|e| e["id"].as_str()).collect();
    let last = expected_ids.last().copied().unwrap_or("");
    // When each event in the window became known: a PATCH's answer, or occurredAt.
    let mut patch_events = HashMap::new();
    let mut sandbox_events = HashMap::new();
    let mut patches = answered.iter();
    for event in &expected {
        let id = event["id"].as_str().unwrap_or_default();
        let ours = event["type"] == "conversation.updated" && event["qpienType"].is_null();
        if ours && let Some(at) = patches.next().filter(|_| id > window.as_str()) {
            patch_events.insert(id, *at);
        } else if !ours && id > window.as_str() {
            let occurred = event["occurredAt"].as_str().and_then(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|t| t.timestamp_millis())
            });
            sandbox_events.extend(occurred.map(|ms| (id, ms)));
        }
    }
    let (mut from_patch, mut from_sent, mut from_occurred) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_stream_patch: HashMap<&str, f64> = HashMap::new();
    let (mut missed_pairs, mut out_of_order_streams, mut short_streams) = (0usize, 0usize, 0usize);
    let mut missed_events: HashSet<&str> = HashSet::new();
    for stream in &received {
        let got: Vec<&str> = stream
            .events
            .iter()
            .map(|(id, _, _)| id.as_str())
            .filter(|id| *id <= last)
            .collect();
        if got != expected_ids {
            out_of_order_streams += 1;
        }
        let seen: HashSet<&str> = got.iter().copied().collect();
        let missing: Vec<&str> = expected_ids
            .iter()
            .copied()
            .filter(|id| !seen.contains(id))
            .collect();
        short_streams += usize::from(!missing.is_empty());
        missed_pairs += missing.len();
        missed_events.extend(missing);
        for (id, at, wall) in &stream.events {
            if let Some((sent, answer)) = patch_events.get(id.as_str()) {
                from_sent.push(at.duration_since(*sent).as_secs_f64() * 1e3);
                let ms = if at >= answer {
                    at.duration_since(*answer).as_secs_f64() * 1e3
                } else {
                    -answer.duration_since(*at).as_secs_f64() * 1e3
                };
                from_patch.push(ms);
                let worst = last_stream_patch.entry(id.as_str()).or_insert(f64::MIN);
                *worst = worst.max(ms);
            } else if let Some(occurred) = sandbox_events.get(id.as_str()) {
                from_occurred.push((wall - occurred) as f64);
            }
        }
    }
    let deliveries = from_patch.len() + from_occurred.len();
    let idle_per_stream = (rss_idle.saturating_sub(rss_before)) as f64 / streams as f64;
    json!({
        "streams": streams,
        "opened": connected.load(Ordering::Relaxed),
        "openSeconds": (open_secs * 10.0).round() / 10.0,
        "refused": received.iter().filter(|r| r.refused.is_some()).count(),
        "refusedFirst": received.iter().find_map(|r| r.refused.clone()),
        "endedEarly": received.iter().filter(|r| r.ended_early).count(),
        "seconds": seconds,
        "patchesAnswered": answered.len(),
        "patchFailures": patch_failures,
        "eventsInFeed": expected_ids.len(),
        "patchEventsMeasured": patch_events.len(),
        "sandboxEventsMeasured": sandbox_events.len(),
        "missedPairs": missed_pairs,
        "eventsMissedByAnyStream": missed_events.len(),
        "streamsMissingEvents": short_streams,
        "streamsNotExactlyInOrder": out_of_order_streams,
        "fromPatchMs": spread(from_patch),
        "fromPatchSentMs": spread(from_sent),
        "fromPatchLastStreamMs": spread(last_stream_patch.into_values().collect()),
        "fromOccurredAtMs": spread(from_occurred),
        "rssKiB": {"before": rss_before, "idle": rss_idle, "end": rss_end},
        "idleKiBPerStream": (idle_per_stream * 10.0).round() / 10.0,
        "facadeCores": (facade_cores * 1000.0).round() / 1000.0,
        "clientCores": (own_cores * 1000.0).round() / 1000.0,
        "facadeMicrosPerDelivery": if deliveries == 0 { 0.0 } else {
            (facade_cores * busy * 1e6 / deliveries as f64 * 10.0).round() / 10.0
        },
        "deliveries": deliveries,
    })
}

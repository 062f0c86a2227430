//! The pollers of `bench/staleness.sh`: how late polling callers see a change made in
//! Qpien (the sandbox), and whether any poll returns a state older than one the facade's
//! webhook receiver had already been told about.
//!
//! It polls the facade with `LIST_POLLERS` pollers of one page and `ITEM_POLLERS` pollers
//! of each of `ITEMS` conversations, each once every `INTERVAL_MS`, for `SECONDS`. With
//! `RELAY_PORT` set it also stands between the sandbox's webhook deliveries and the
//! facade's receiver (`FACADE/webhooks/qpien`): each delivery is passed on as it is, and
//! when the facade answers 200 the relay notes which message it reported, and when.
//!
//! A change is a new last message of a conversation (the sandbox's activity); its time is
//! the message's `sentAt`. Staleness is, for each change a poller sees, the time from the
//! change to the end of the first poll that shows it. Prints one JSON object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn number(name: &str, default: u64) -> u64 {
    setting(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a whole number"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

fn ms_of(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// What the relay saw acknowledged: per conversation, (message time, acknowledged at).
type Acknowledged = Arc<Mutex<HashMap<String, Vec<(i64, i64)>>>>;

#[derive(Default)]
struct Tally {
    requests: u64,
    by_status: HashMap<u16, u64>,
    /// Per conversation, the newest message time any poll has shown.
    newest_seen: HashMap<String, i64>,
    staleness_ms: Vec<i64>,
    /// Polls that returned a conversation older than a change acknowledged before they began.
    older_than_acknowledged: u64,
}

struct Poller {
    warm_until: i64,
    http: reqwest::Client,
    facade: String,
    acknowledged: Acknowledged,
    tally: Arc<Mutex<Tally>>,
}

impl Poller {
    async fn poll(&self, path: &str) {
        let started = now_ms();
        let response = self.http.get(format!("{}{path}", self.facade)).send().await;
        let ended = now_ms();
        let status = response.as_ref().map_or(0, |r| r.status().as_u16());
        {
            let mut tally = self.tally.lock().unwrap();
            tally.requests += 1;
            *tally.by_status.entry(status).or_default() += 1;
        }
        let Ok(response) = response else {
            return;
        };
        if status != 200 {
            return;
        }
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        let conversations: Vec<&Value> = match body["items"].as_array() {
            Some(items) => items.iter().collect(),
            None => vec![&body],
        };
        let acknowledged = self.acknowledged.lock().unwrap();
        let mut tally = self.tally.lock().unwrap();
        for conversation in conversations {
            let (Some(id), Some(sent)) = (
                conversation["id"].as_str(),
                conversation["lastMessage"]["sentAt"]
                    .as_str()
                    .and_then(ms_of),
            ) else {
                continue;
            };
            let told = acknowledged.get(id).into_iter().flatten();
            let counted = started >= self.warm_until;
            if told
                .filter(|(_, at)| *at < started)
                .any(|(message, _)| *message > sent)
            {
                tally.older_than_acknowledged += 1;
            }
            let newest = tally.newest_seen.get(id).copied();
            match newest {
                // The first sight of a conversation says nothing of how late it is.
                None => {
                    tally.newest_seen.insert(id.to_owned(), sent);
                }
                Some(newest) if sent > newest => {
                    tally.newest_seen.insert(id.to_owned(), sent);
                    if counted {
                        tally.staleness_ms.push(ended - sent);
                    }
                }
                Some(_) => {}
            }
        }
    }
}

async fn relay(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<(reqwest::Client, String, Acknowledged)>,
) -> HttpResponse {
    let (http, facade, acknowledged) = state.get_ref();
    let mut forward = http
        .post(format!("{facade}/webhooks/qpien"))
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(signature) = req.headers().get("x-qpien-signature") {
        forward = forward.header("x-qpien-signature", signature.as_bytes());
    }
    let Ok(answer) = forward.send().await else {
        return HttpResponse::BadGateway().finish();
    };
    let status = answer.status().as_u16();
    if status == 200 {
        let at = now_ms();
        let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
        let message = &payload["data"]["message"];
        if let (Some(id), Some(sent)) = (
            message["conversation"].as_str(),
            message["createdAt"].as_str().and_then(ms_of),
        ) {
            let mut acknowledged = acknowledged.lock().unwrap();
            acknowledged
                .entry(id.to_owned())
                .or_default()
                .push((sent, at));
        }
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[actix_web::main]
async fn main() {
    qpien_rest::install_tls_provider();
    let facade = setting("FACADE", "http://127.0.0.1:8080");
    let seconds = number("SECONDS", 120);
    let interval = Duration::from_millis(number("INTERVAL_MS", 1000));
    let list_pollers = number("LIST_POLLERS", 50);
    let item_pollers = number("ITEM_POLLERS", 10);
    let items = number("ITEMS", 10) as usize;
    let page = setting("PAGE", "/conversations?pageSize=20");
    // Changes seen before then are not counted: deliveries made before the relay
    // listened wait for the sandbox's retry.
    let warm_until = now_ms() + 1000 * number("WARMUP_SECS", 10) as i64;
    let http = reqwest::Client::new();
    let acknowledged: Acknowledged = Arc::default();

    if let Ok(port) = std::env::var("RELAY_PORT") {
        let state = web::Data::new((http.clone(), facade.clone(), Arc::clone(&acknowledged)));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(relay))
        })
        .workers(1)
        .disable_signals()
        .bind((
            "127.0.0.1",
            port.parse::<u16>().expect("RELAY_PORT is a port"),
        ))
        .expect("the relay binds")
        .run();
        tokio::spawn(server);
    }

    let first: Value = http
        .get(format!("{facade}/conversations?pageSize={items}"))
        .send()
        .await
        .expect("the facade answers")
        .json()
        .await
        .expect("a page");
    let ids: Vec<String> = first["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let poller = Arc::new(Poller {
        warm_until,
        http,
        facade,
        acknowledged: Arc::clone(&acknowledged),
        tally: Arc::clone(&tally),
    });
    let mut paths: Vec<String> = (0..list_pollers).map(|_| page.clone()).collect();
    for id in &ids {
        paths.extend((0..item_pollers).map(|_| format!("/conversations/{id}")));
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let count = paths.len() as u32;
    let mut tasks = Vec::new();
    for (n, path) in paths.into_iter().enumerate() {
        let poller = Arc::clone(&poller);
        // Spread over the interval, as independent pollers would be.
        let offset = interval * n as u32 / count.max(1);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while tokio::time::Instant::now() < until {
                ticks.tick().await;
                poller.poll(&path).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a poller does not panic");
    }

    let mut tally = tally.lock().unwrap();
    tally.staleness_ms.sort_unstable();
    let acknowledged = acknowledged
        .lock()
        .unwrap()
        .values()
        .map(Vec::len)
        .sum::<usize>();
    let report = json!({
        "requests": tally.requests,
        "byStatus": tally.by_status.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "changesSeen": tally.staleness_ms.len(),
        "stalenessMs": {
            "p50": percentile(&tally.staleness_ms, 50.0),
            "p99": percentile(&tally.staleness_ms, 99.0),
            "max": tally.staleness_ms.last(),
        },
        "deliveriesAcknowledged": acknowledged,
        "pollsOlderThanAcknowledged": tally.older_than_acknowledged,
    });
    println!("{report}");
}

//! The load of `bench/feed.sh`, the change feed's benchmark (issue 18). Two parts, each
//! printing one JSON object for the script to put in its tables:
//!
//! - `feed log`: the event log as a library (`EventLog` directly, no HTTP), over the
//!   store its environment names (`DATA_DIR` for SQLite, `REDIS_URL` for Redis): appends
//!   per second with 1, 8 and 64 concurrent appenders, then catch-up reads (pages of 100
//!   after random cursors) on a log of `EVENTS` events;
//! - `feed fanout`: `STREAMS` SSE clients of a running facade (`FACADE`, process
//!   `FACADE_PID`), each reading its own `GET /events`, while a `PATCH` goes through the
//!   facade every second for `SECONDS`: how late each event reaches each stream, whether
//!   any stream missed one, and the facade's memory and CPU;
//! - `feed receive`: the webhook receiver of `bench/subscriptions.sh` (it runs until it
//!   is stopped).

mod fanout;
mod receive;
mod store;

use std::time::{SystemTime, UNIX_EPOCH};

pub fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn number(name: &str, default: u64) -> u64 {
    setting(name, &default.to_string())
        .parse()
        .unwrap_or_else(|_| panic!("{name} must be a whole number"))
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
}

/// The `p`th percentile of sorted samples (nearest rank).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[tokio::main]
async fn main() {
    qpien_rest::install_tls_provider();
    let report = match std::env::args().nth(1).as_deref() {
        Some("log") => store::run().await,
        Some("fanout") => fanout::run().await,
        Some("receive") => return receive::run().await,
        _ => {
            eprintln!("usage: feed log | feed fanout | feed receive (settings in the environment)");
            std::process::exit(2);
        }
    };
    println!("{report}");
}

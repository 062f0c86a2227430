//! `feed receive`: the receiver of `bench/subscriptions.sh`, listening on
//! `RECEIVER_PORT`. It answers every `POST` `204` at once and appends one tab-separated
//! line per delivery to `OUT`: the subscription (the path's last segment), the
//! `webhook-id`, the event's `occurredAt` and the arrival time (Unix seconds). It
//! checks no signature (CI does that with the Standard Webhooks library): it is here to
//! be fast enough that the benchmark measures the facade, not its receiver; the Python
//! receiver (`RECEIVER=python`) shows what a slower one does to the figures.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;

use crate::{number, setting};

type Out = Arc<Mutex<std::fs::File>>;

async fn receive(request: HttpRequest, body: web::Bytes, out: web::Data<Out>) -> HttpResponse {
    let arrived = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let occurred = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|event| event["occurredAt"].as_str().map(str::to_owned));
    let (Some(occurred), Some(id)) = (
        occurred,
        request
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return HttpResponse::BadRequest().finish();
    };
    let subscription = request.path().rsplit('/').next().unwrap_or_default();
    let line = format!("{subscription}\t{id}\t{occurred}\t{arrived:.6}\n");
    // One write per line, under the lock: the script reads whole lines while it runs.
    if out
        .lock()
        .expect("not poisoned")
        .write_all(line.as_bytes())
        .is_err()
    {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::NoContent().finish()
}

pub async fn run() {
    let path = setting("OUT", "received.tsv");
    let port = number("RECEIVER_PORT", 0) as u16;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let out: Out = Arc::new(Mutex::new(file));
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(out.clone()))
            .app_data(web::PayloadConfig::new(1 << 20))
            .default_service(web::post().to(receive))
    })
    .workers(1)
    .backlog(4096)
    .bind(("127.0.0.1", port))
    .unwrap_or_else(|e| panic!("port {port}: {e}"))
    .run()
    .await
    .expect("the receiver runs");
}

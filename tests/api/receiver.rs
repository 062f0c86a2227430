//! A webhook receiver for the subscription tests: an HTTP server on a port of its own
//! that records each delivery (its Standard Webhooks headers and body) and answers as
//! the test scripts it, and a signature check written from the specification.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::{PATIENCE, eventually};

/// One delivery as the receiver got it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How the receiver answers the next delivery: a status and a `Retry-After`.
type Answer = (u16, Option<&'static str>);

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Delivery>>,
    /// Answers to give, first first; 200 when none is left.
    script: Mutex<VecDeque<Answer>>,
    /// How many of the next deliveries get no answer for a minute.
    stall: Mutex<u32>,
}

/// A webhook receiver on a port of its own.
pub struct Receiver {
    pub url: String,
    inbox: Arc<Inbox>,
    _server: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, body: web::Bytes, inbox: web::Data<Inbox>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    inbox.received.lock().unwrap().push(Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
        at: Instant::now(),
    });
    let stall = {
        let mut stall = inbox.stall.lock().unwrap();
        let now = *stall > 0;
        *stall = stall.saturating_sub(1);
        now
    };
    if stall {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let (status, retry_after) = inbox
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or((200, None));
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
    if let Some(after) = retry_after {
        response.insert_header(("retry-after", after));
    }
    response.finish()
}

impl Receiver {
    pub async fn start() -> Self {
        let inbox = Arc::new(Inbox::default());
        let data = web::Data::from(inbox.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            inbox,
            _server: handle,
        }
    }

    /// Answers the next deliveries so, in turn.
    pub fn answer(&self, answers: &[Answer]) {
        self.inbox
            .script
            .lock()
            .unwrap()
            .extend(answers.iter().copied());
    }

    /// Forgets the answers scripted and not given yet: 200 from now on.
    pub fn answer_ok(&self) {
        self.inbox.script.lock().unwrap().clear();
    }

    /// Leaves the next `n` deliveries without an answer for a minute.
    pub fn stall(&self, n: u32) {
        *self.inbox.stall.lock().unwrap() = n;
    }

    pub fn received(&self) -> Vec<Delivery> {
        self.inbox.received.lock().unwrap().clone()
    }

    /// The deliveries, once there are at least `n`.
    pub async fn wait_for(&self, n: usize) -> Vec<Delivery> {
        eventually(&format!("{n} deliveries"), PATIENCE, async || {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

/// Whether `delivery` carries a valid Standard Webhooks signature under `secret`.
pub fn signed_by(delivery: &Delivery, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", delivery.id, delivery.timestamp).as_bytes());
    mac.update(&delivery.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    delivery.signature.split(' ').any(|s| s == expected)
}

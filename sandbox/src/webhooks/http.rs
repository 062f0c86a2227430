//! The registration over HTTP, standing in for the webhook page of Qpien's app:
//! `POST /webhooks` `{"endpointUrl", "events", "status"?}` → `201` with the endpoint and
//! its `secret` (shown only in this answer); `GET /webhooks` lists the endpoints without
//! secrets; `DELETE /webhooks/{id}` → `204`, or `404` for an unknown id. Errors are
//! `{"error": "..."}` with `400`. Like the rest of the sandbox, these take no credentials:
//! it is a stand-in reached only by its own host or compose network.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::WebhookStatus;
use crate::events::WebhookEvent;
use crate::server::AppState;

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks", web::post().to(register))
        .route("/webhooks", web::get().to(list))
        .route("/webhooks/{id}", web::delete().to(remove));
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Registration {
    endpoint_url: String,
    events: Vec<String>,
    status: Option<String>,
}

fn bad_request(message: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message.into() }))
}

async fn register(body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let registration = match serde_json::from_slice::<Registration>(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("expected {{endpointUrl, events, status?}}: {e}")),
    };
    let mut kinds = Vec::new();
    for name in &registration.events {
        match WebhookEvent::parse(name) {
            Some(kind) => kinds.push(kind),
            None => {
                let known: Vec<_> = WebhookEvent::ALL.iter().map(|k| k.as_str()).collect();
                return bad_request(format!(
                    "unknown event type {name:?}; known: {}",
                    known.join(", ")
                ));
            }
        }
    }
    let status = match registration.status.as_deref() {
        None | Some("ACTIVE") => WebhookStatus::Active,
        Some("DISABLED") => WebhookStatus::Disabled,
        Some(other) => {
            return bad_request(format!("status must be ACTIVE or DISABLED, got {other:?}"));
        }
    };
    match state
        .webhooks
        .register(&registration.endpoint_url, &kinds, status, None)
    {
        Ok(registered) => HttpResponse::Created().json(registered),
        Err(e) => bad_request(e.0),
    }
}

async fn list(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.webhooks.list())
}

async fn remove(id: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    if state.webhooks.remove(&id) {
        HttpResponse::NoContent().finish()
    } else {
        HttpResponse::NotFound().json(json!({ "error": "no webhook with this id" }))
    }
}

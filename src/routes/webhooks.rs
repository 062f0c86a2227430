//! `POST /webhooks/qpien`: Qpien's webhook deliveries in. The signature is checked over
//! the bytes received before anything reads them; the rest is `events`.

use actix_web::{HttpRequest, HttpResponse, post, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::body::read_body;
use crate::error::ApiError;
use crate::events::qpien::SIGNATURE_HEADER;
use crate::events::{Accepted, QpienWebhooks, Refused};
use crate::reads::CachedConversations;

/// What the receiver did with a delivery.
#[derive(Serialize, ToSchema)]
pub struct Receipt {
    /// `applied` (every cached answer it touches is dropped, on every replica),
    /// `unknown-type` (applied too, as a change of the conversation it names, or of
    /// everything), or `duplicate` (applied before: Qpien retried it).
    #[schema(example = "applied")]
    outcome: &'static str,
}

/// Receive a Qpien webhook
///
/// Where Qpien delivers its webhook events (register `PUBLIC_BASE_URL` +
/// `/webhooks/qpien` in Qpien's app). A delivery signed with a current secret
/// (`QPIEN_WEBHOOK_SECRET`) makes every cached answer that could show the conversation it
/// names stale for every caller, and every list; once it is answered 200, no replica
/// serves those answers. A delivery is applied once, however often Qpien sends it; an
/// event type the service does not know is applied too, and answered 200, so Qpien does
/// not retry it for ever. It never calls Qpien. Without a secret configured, 404.
#[utoipa::path(
    tag = "Webhooks",
    operation_id = "receiveQpienWebhook",
    request_body(description = "Qpien's event payload, as Qpien sends it.", content_type = "application/json",
        content = Object, example = json!({"_id": "6650e1000000000000000001", "event": "NEW_INCOMING_MESSAGE",
            "createdAt": "2026-12-02T07:30:00.123Z",
            "data": {"message": {"_id": "6650f1000000000000000001", "conversation": "6650a1000000000000000001",
                "senderType": "CUSTOMER", "channelType": "WHATSAPP", "content": "Hello!", "createdAt": "2026-12-02T07:30:00.120Z"}}})),
    responses((status = 200, description = "Received: applied now or before.", body = Receipt)),
    security(("qpienSignature" = []))
)]
#[post("/webhooks/qpien")]
pub async fn receive_qpien_webhook(
    req: HttpRequest,
    payload: web::Payload,
    webhooks: Option<web::Data<QpienWebhooks>>,
    conversations: web::Data<CachedConversations>,
) -> Result<HttpResponse, ApiError> {
    let Some(webhooks) = webhooks else {
        return Err(ApiError::RouteNotFound);
    };
    let body = match read_body(&req, payload, webhooks.max_body_bytes()).await {
        Err(ApiError::PayloadTooLarge(limit)) => {
            webhooks.too_large();
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body => body?,
    };
    let signature = req.headers().get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    let outcome = match webhooks.accept(&body, signature, &conversations).await {
        Ok(accepted) => accepted,
        Err(Refused::BadSignature) => return Err(ApiError::InvalidSignature),
        Err(Refused::Malformed(why)) => return Err(ApiError::MalformedBody(why)),
        Err(Refused::NotRecorded) => return Err(ApiError::ChangeNotRecorded),
    };
    Ok(HttpResponse::Ok().json(Receipt {
        outcome: Accepted::as_str(outcome),
    }))
}

//! The deliveries of webhook subscriptions, described for tools: the 3.1 document's
//! top-level `webhooks` (the `POST` the service makes to a subscriber), and, in 3.0,
//! which has no `webhooks`, the same operation as a `callback` of `POST /subscriptions`
//! at the URL its body names.

use serde_json::{Map, Value, json};

/// The name of the delivery in `webhooks` and `callbacks`.
const NAME: &str = "conversationChanged";

/// The `POST` a subscriber receives: headers, body and the answers that mean something.
fn delivery() -> Value {
    let header = |name: &str, description: &str, example: &str| {
        json!({
            "name": name, "in": "header", "required": true, "description": description,
            "schema": { "type": "string" }, "example": example,
        })
    };
    json!({
        "post": {
            "operationId": "deliverConversationChange",
            "summary": "A conversation changed",
            "description": "What the service sends to a subscription's URL for each matching event, in event order, signed as the Standard Webhooks specification says (verify with its libraries, e.g. `standardwebhooks` on PyPI or npm). Delivery is at least once: de-duplicate by `webhook-id`. Answer a 2xx within 10 s; any other answer, a timeout or no connection is retried with exponential backoff for up to 24 h (`Retry-After` is honoured), then the subscription is disabled. Answer `410 Gone` to remove the subscription.",
            "tags": ["Subscriptions"],
            "parameters": [
                header("webhook-id", "The event id: the same on every retry of this event.", "00000000000000000042"),
                header("webhook-timestamp", "When this attempt was signed, in seconds since 1970. Refuse deliveries far from your clock (the libraries allow 5 minutes).", "1780387800"),
                header("webhook-signature", "`v1,` and the base64 HMAC-SHA256 of `webhook-id.webhook-timestamp.body` under the subscription's secret (base64 after `whsec_`). After a rotation, for the grace period, two such signatures separated by a space: one per secret.", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            ],
            "requestBody": {
                "required": true,
                "description": "The event, as the change feed shows it.",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Event" } } },
            },
            "responses": {
                "2XX": { "description": "Delivered: the next event follows." },
                "410": { "description": "Gone: the service removes the subscription and delivers nothing more." },
                "default": { "description": "Not delivered: retried later, this event before any later one." },
            },
            "security": [],
        }
    })
}

/// The 3.1 document's `webhooks`.
pub(super) fn add_webhooks(document: &mut Value) {
    let root = document.as_object_mut().expect("a document is an object");
    let mut webhooks = Map::new();
    webhooks.insert(NAME.into(), delivery());
    root.insert("webhooks".into(), Value::Object(webhooks));
}

/// The 3.0 rendering's `callbacks` on `POST /subscriptions`: the delivery at the URL the
/// request's `url` gave.
pub(super) fn add_callbacks(document: &mut Value) {
    let register = &mut document["paths"]["/subscriptions"]["post"];
    if register.is_object() {
        register["callbacks"] = json!({ NAME: { "{$request.body#/url}": delivery() } });
    }
}

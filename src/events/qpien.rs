//! Qpien's webhook deliveries as we assume them (`docs/qpien-assumptions.md`): the only
//! place that knows their wire shape. Qpien documents the signature and little else, so
//! reading is liberal: any JSON object is a delivery, an unknown event type is still
//! one, and the conversation is looked for wherever a payload plausibly names it.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::ConversationId;
use crate::upstream::{conversation_from_payload, message_from_payload};

/// The header Qpien signs its deliveries in: hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "X-Qpien-Signature";

/// The event types the facade knows (Qpien's names). Any other is still accepted.
pub const KNOWN_TYPES: &[&str] = &[
    "NEW_INCOMING_MESSAGE",
    "NEW_OUTGOING_MESSAGE",
    "JOIN_CONVERSATION",
    "CONVERSATION_UPDATED",
];

/// Whether `signature` (the header's value) is the HMAC-SHA256 of `body` under one of
/// `secrets`. Compared in constant time; a `sha256=` prefix and either case of hex are
/// accepted, since Qpien's exact spelling is not documented.
pub fn verify(secrets: &[Vec<u8>], body: &[u8], signature: &[u8]) -> bool {
    let signature = signature.strip_prefix(b"sha256=").unwrap_or(signature);
    let Some(expected) = decode_hex(signature.trim_ascii()) else {
        return false;
    };
    secrets.iter().any(|secret| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    })
}

/// The 32 bytes of a SHA-256 written in 64 hex digits; `None` for anything else.
fn decode_hex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A verified delivery, as far as the facade reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    /// What identifies it across Qpien's retries: the payload's own id when it has one,
    /// else `sha256:` and the hex SHA-256 of the body.
    pub id: String,
    /// Qpien's event type, as sent; `None` when the payload names none.
    pub kind: Option<String>,
    /// The conversation it is about; `None` when no plausible place names one.
    pub conversation: Option<ConversationId>,
    /// When Qpien says it happened (`createdAt`); `None` when it does not say.
    pub occurred_at: Option<DateTime<Utc>>,
    /// What it says of the change, in the REST representation: `conversation` (the
    /// whole conversation, as `GET /conversations/{id}` shows it), `message` (as a
    /// conversation's `lastMessage`) or `joinedPersonId`; those it does not carry, or
    /// carries in a shape the facade does not read, are left out.
    pub data: Value,
}

impl Delivery {
    /// Reads a delivery's body; `Err` with the reason when it is not a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        if !value.is_object() {
            return Err("the body is not a JSON object".into());
        }
        let id = ["_id", "id", "eventId"]
            .iter()
            .find_map(|name| text(&value[*name]))
            .map(str::to_owned)
            .unwrap_or_else(|| format!("sha256:{:x}", Sha256::digest(body)));
        let kind = ["event", "type", "eventType"]
            .iter()
            .find_map(|name| text(&value[*name]))
            .map(str::to_owned);
        let conversation = conversation_id(&value).or_else(|| conversation_id(&value["data"]));
        let occurred_at = ["createdAt", "timestamp", "occurredAt"]
            .iter()
            .find_map(|name| DateTime::parse_from_rfc3339(text(&value[*name])?).ok())
            .map(|at| at.with_timezone(&Utc));
        let payload = if value["data"].is_object() {
            &value["data"]
        } else {
            &value
        };
        Ok(Self {
            id,
            kind,
            conversation,
            occurred_at,
            data: rest_data(payload),
        })
    }

    /// Whether the facade knows its event type.
    pub fn is_known(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|kind| KNOWN_TYPES.contains(&kind))
    }

    /// Its type as a metric label: a known type, or `other`, so the labels stay few.
    pub fn kind_label(&self) -> &'static str {
        KNOWN_TYPES
            .iter()
            .find(|known| self.kind.as_deref() == Some(**known))
            .copied()
            .unwrap_or("other")
    }
}

/// What a payload says of the change, in the facade's words (see `Delivery::data`).
fn rest_data(payload: &Value) -> Value {
    let mut data = Map::new();
    let conversation = &payload["conversation"];
    // A whole conversation has its status; a join names only the id and the person.
    let whole = conversation.get("status").is_some();
    if let Some(whole) = whole
        .then(|| conversation_from_payload(conversation))
        .flatten()
    {
        data.insert(
            "conversation".into(),
            serde_json::to_value(whole).unwrap_or_default(),
        );
    } else if let Some(person) = text(&conversation["joinedPerson"]) {
        data.insert("joinedPersonId".into(), Value::from(person));
    }
    if let Some(message) = message_from_payload(&payload["message"]) {
        data.insert(
            "message".into(),
            serde_json::to_value(message).unwrap_or_default(),
        );
    }
    Value::Object(data)
}

fn text(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty() && s.len() <= 256)
}

/// The conversation `value` names: `conversationId`, `conversation` (an id, or an object
/// with `_id` or `id`), or `message.conversation`.
fn conversation_id(value: &Value) -> Option<ConversationId> {
    let conversation = &value["conversation"];
    [
        &value["conversationId"],
        conversation,
        &conversation["_id"],
        &conversation["id"],
        &value["message"]["conversation"],
        &value["message"]["conversationId"],
    ]
    .into_iter()
    .find_map(|candidate| ConversationId::parse(candidate.as_str()?).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6650a1000000000000000001";

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_signature_verifies_under_any_current_secret_and_only_over_the_same_bytes() {
        let body = br#"{"event":"JOIN_CONVERSATION"}"#;
        let secrets = vec![b"old".to_vec(), b"new".to_vec()];
        let signature = sign("new", body);

        assert!(verify(&secrets, body, signature.as_bytes()));
        assert!(verify(&secrets, body, signature.to_uppercase().as_bytes()));
        assert!(verify(
            &secrets,
            body,
            format!("sha256={signature}").as_bytes()
        ));
        assert!(!verify(
            &secrets,
            b"{\"event\":\"JOIN_CONVERSATION\"} ",
            signature.as_bytes()
        ));
        assert!(!verify(&[b"other".to_vec()], body, signature.as_bytes()));
        assert!(!verify(&secrets, body, &signature.as_bytes()[..63]));
        assert!(!verify(&secrets, body, b""));
    }

    #[test]
    fn the_conversation_is_found_where_payloads_plausibly_name_it() {
        let payloads = [
            format!(r#"{{"conversationId":"{ID}"}}"#),
            format!(r#"{{"data":{{"conversation":{{"_id":"{ID}"}}}}}}"#),
            format!(r#"{{"data":{{"message":{{"conversation":"{ID}"}}}}}}"#),
            format!(r#"{{"message":{{"conversation":"{ID}"}}}}"#),
            format!(r#"{{"conversation":"{ID}"}}"#),
            format!(r#"{{"data":{{"conversation":{{"id":"{ID}"}}}}}}"#),
        ];
        for payload in payloads {
            let delivery = Delivery::parse(payload.as_bytes()).unwrap();
            assert_eq!(
                delivery.conversation.as_ref().map(|c| c.as_str()),
                Some(ID),
                "{payload}"
            );
        }
        let none = Delivery::parse(br#"{"data":{"conversation":"not-an-id"}}"#).unwrap();
        assert_eq!(none.conversation, None);
    }

    #[test]
    fn a_delivery_is_known_by_its_own_id_else_by_its_bytes() {
        let with_id = Delivery::parse(br#"{"_id":"abc","event":"X"}"#).unwrap();
        assert_eq!(with_id.id, "abc");
        assert_eq!(with_id.kind.as_deref(), Some("X"));
        assert!(!with_id.is_known());
        assert_eq!(with_id.kind_label(), "other");

        let a = Delivery::parse(br#"{"event":"JOIN_CONVERSATION"}"#).unwrap();
        let b = Delivery::parse(br#"{"event": "JOIN_CONVERSATION"}"#).unwrap();
        assert!(a.id.starts_with("sha256:"));
        assert_ne!(a.id, b.id);
        assert!(a.is_known());
        assert_eq!(a.kind_label(), "JOIN_CONVERSATION");
    }

    #[test]
    fn what_a_payload_says_is_kept_in_the_rest_representation() {
        let message = format!(
            r#"{{"_id":"e1","event":"NEW_INCOMING_MESSAGE","createdAt":"2026-12-02T07:30:00.123Z",
            "data":{{"message":{{"_id":"m1","conversation":"{ID}","senderType":"CUSTOMER",
            "channelType":"WHATSAPP","content":"Hello!","createdAt":"2026-12-02T07:30:00.120Z"}}}}}}"#
        );
        let delivery = Delivery::parse(message.as_bytes()).unwrap();
        assert_eq!(
            delivery.occurred_at.unwrap().to_rfc3339(),
            "2026-12-02T07:30:00.123+00:00"
        );
        assert_eq!(delivery.data["message"]["id"], "m1");
        assert_eq!(delivery.data["message"]["direction"], "incoming");
        assert_eq!(delivery.data["message"]["content"], "Hello!");

        let joined = format!(
            r#"{{"event":"JOIN_CONVERSATION","data":{{"conversation":{{"_id":"{ID}","joinedPerson":"p1"}}}}}}"#
        );
        let delivery = Delivery::parse(joined.as_bytes()).unwrap();
        assert_eq!(delivery.data, serde_json::json!({"joinedPersonId": "p1"}));
        assert_eq!(delivery.occurred_at, None);

        let updated = format!(
            r#"{{"event":"CONVERSATION_UPDATED","data":{{"conversation":{{"_id":"{ID}","isStarred":true,"status":"OPEN"}}}}}}"#
        );
        let delivery = Delivery::parse(updated.as_bytes()).unwrap();
        assert_eq!(delivery.data["conversation"]["id"], ID);
        assert_eq!(delivery.data["conversation"]["starred"], true);

        let odd = Delivery::parse(br#"{"event":"X","data":{"message":{"text":1}}}"#).unwrap();
        assert_eq!(odd.data, serde_json::json!({}));
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        assert!(Delivery::parse(b"not json").is_err());
        assert!(Delivery::parse(b"[1,2]").is_err());
        assert!(Delivery::parse(b"").is_err());
    }

    mod properties {
        use proptest::prelude::*;
        use proptest::sample::select;
        use serde_json::{Map, json};

        use super::*;
        use crate::arbitrary::json_value;

        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }

        fn sign_bytes(secret: &[u8], body: &[u8]) -> Vec<u8> {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }

        /// A JSON object with arbitrary members, the delivery's own among them maybe.
        fn payload() -> impl Strategy<Value = Map<String, Value>> {
            (
                prop::collection::btree_map("[a-zA-Z_]{1,8}", json_value(), 0..5),
                prop::option::of("\\PC{1,40}"),
                prop::option::of(select(KNOWN_TYPES)),
                prop::option::of("[0-9a-fA-F]{24}"),
            )
                .prop_map(|(members, id, kind, conversation)| {
                    let mut payload: Map<String, Value> = members
                        .into_iter()
                        .filter(|(name, _)| {
                            !matches!(
                                name.as_str(),
                                "_id"
                                    | "id"
                                    | "eventId"
                                    | "event"
                                    | "type"
                                    | "eventType"
                                    | "conversationId"
                                    | "conversation"
                                    | "message"
                                    | "data"
                            )
                        })
                        .collect();
                    if let Some(id) = id {
                        payload.insert("_id".into(), json!(id));
                    }
                    if let Some(kind) = kind {
                        payload.insert("event".into(), json!(kind));
                    }
                    if let Some(conversation) = conversation {
                        payload.insert("conversationId".into(), json!(conversation));
                    }
                    payload
                })
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(
                body in prop::collection::vec(any::<u8>(), 0..256),
                signature in prop::collection::vec(any::<u8>(), 0..80),
            ) {
                let _ = Delivery::parse(&body);
                prop_assert!(!verify(&[b"secret".to_vec()], &body, &signature)
                    || signature.len() >= 64);
            }

            #[test]
            fn only_a_json_object_is_a_delivery(value in json_value()) {
                let parsed = Delivery::parse(value.to_string().as_bytes());
                prop_assert_eq!(parsed.is_ok(), value.is_object());
            }

            #[test]
            fn a_delivery_reads_back_its_id_type_and_conversation(payload in payload()) {
                let body = Value::Object(payload.clone()).to_string();
                let delivery = Delivery::parse(body.as_bytes()).unwrap();
                let expected_id = match payload.get("_id") {
                    Some(id) => id.as_str().unwrap().to_owned(),
                    None => format!("sha256:{}", hex(&Sha256::digest(body.as_bytes()))),
                };
                prop_assert_eq!(&delivery.id, &expected_id);
                let kind = payload.get("event").and_then(Value::as_str);
                prop_assert_eq!(delivery.kind.as_deref(), kind);
                prop_assert_eq!(delivery.is_known(), kind.is_some());
                let conversation = payload
                    .get("conversationId")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase);
                prop_assert_eq!(
                    delivery.conversation.as_ref().map(|c| c.as_str().to_owned()),
                    conversation
                );
            }

            #[test]
            fn a_signature_verifies_in_every_accepted_spelling_and_over_those_bytes_only(
                secret in prop::collection::vec(any::<u8>(), 1..48),
                body in prop::collection::vec(any::<u8>(), 0..128),
                upper in any::<bool>(),
                prefixed in any::<bool>(),
                flip in any::<prop::sample::Index>(),
            ) {
                let mut signature = hex(&sign_bytes(&secret, &body));
                if upper {
                    signature = signature.to_uppercase();
                }
                if prefixed {
                    signature = format!("sha256={signature}");
                }
                let secrets = [b"another secret".to_vec(), secret.clone()];
                prop_assert!(verify(&secrets, &body, signature.as_bytes()));
                prop_assert!(!verify(&secrets[..1], &body, signature.as_bytes()));
                // One byte of the body changed: no longer its signature.
                let mut changed = body.clone();
                changed.push(0);
                let at = flip.index(changed.len());
                changed[at] ^= 1;
                prop_assert!(!verify(&secrets, &changed, signature.as_bytes()));
            }
        }
    }
}

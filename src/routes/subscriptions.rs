//! Webhook subscriptions over HTTP (issue 19): `POST /subscriptions` registers a
//! callback URL for some events (the signing secret is shown once, in that answer),
//! `GET /subscriptions` and `GET /subscriptions/{id}` show a caller key's own with how
//! their deliveries go, `DELETE` removes one, `rotate-secret` and `enable` act on one.
//! A key sees only the subscriptions it created: another key's id answers 404, as an
//! unknown one does. The delivery itself is `events::delivery`.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Caller;
use super::body::{MAX_BODY_BYTES, read_body};
use super::changes::offered;
use super::registry::{
    CREATE_SUBSCRIPTION, DELETE_SUBSCRIPTION, ENABLE_SUBSCRIPTION, GET_SUBSCRIPTION,
    LIST_SUBSCRIPTIONS, ROTATE_SUBSCRIPTION_SECRET,
};
use crate::domain::{ConversationId, InvalidParam, nullable_object_id_schema};
use crate::error::ApiError;
use crate::events::delivery::Deliveries;
use crate::events::log::{EventKind, EventLog};
use crate::events::subscriptions::{
    ANONYMOUS, Attempt, Config, DeliveryState, Secrets, Status, StoreError, Subscription,
    Subscriptions, new_secret,
};

/// The longest description.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// The most events `backlog` counts.
const MAX_BACKLOG_COUNT: usize = 1_000;

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(why) => ApiError::SubscriptionsUnavailable(why),
        }
    }
}

/// What `POST /subscriptions` takes.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({
    "url": "https://hooks.example.com/qpien",
    "types": ["conversation.message_received"],
    "description": "CRM sync"
}))]
pub struct NewSubscription {
    /// Where to deliver: an `https` URL of a public host (the operator may allow `http`
    /// and private networks). Redirects are not followed.
    #[schema(example = "https://hooks.example.com/qpien", max_length = 2048)]
    pub url: String,
    /// The event types to deliver; all when absent or empty.
    #[serde(default)]
    pub types: Vec<EventKind>,
    /// Only the events of this conversation: its id, 24 hexadecimal digits.
    #[schema(schema_with = conversation_filter)]
    pub conversation_id: Option<String>,
    /// What it is for, for people.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: String,
}

/// The schema of `NewSubscription::conversation_id`: an id as every id a caller sends.
fn conversation_filter() -> utoipa::openapi::schema::Object {
    let mut schema = nullable_object_id_schema(
        "Only the events of this conversation: its id, 24 hexadecimal digits.",
    );
    schema.example = Some(serde_json::json!("6650a1000000000000000001"));
    schema
}

/// A webhook subscription and how its deliveries go.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    #[schema(example = "sub_6f1c2a8e8a524a579d545b1a0f6f3a11")]
    id: String,
    #[schema(example = "https://hooks.example.com/qpien")]
    url: String,
    /// The event types delivered; empty: all.
    types: Vec<EventKind>,
    conversation_id: Option<String>,
    description: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: DateTime<Utc>,
    /// `active`, or `disabled` (no deliveries until `POST /subscriptions/{id}/enable`).
    #[schema(example = "active")]
    status: &'static str,
    /// Why it is disabled, while it is.
    disabled_reason: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    disabled_at: Option<DateTime<Utc>>,
    /// The last event delivered (or passed over by the filter).
    #[schema(example = "00000000000000000042")]
    delivered_through: String,
    /// Since when every delivery attempt has failed; `null` while they succeed.
    #[schema(value_type = Option<String>, format = DateTime)]
    failing_since: Option<DateTime<Utc>>,
    /// When the next attempt is due after a failure.
    #[schema(value_type = Option<String>, format = DateTime)]
    next_attempt_at: Option<DateTime<Utc>>,
    /// The last delivery attempts (up to 10), newest last.
    last_attempts: Vec<Attempt>,
    /// Matching events not yet delivered (counted up to 1000); only on
    /// `GET /subscriptions/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<u32>,
}

impl SubscriptionView {
    fn of(subscription: Subscription) -> Self {
        let Subscription { config, state } = subscription;
        let (status, disabled_reason, disabled_at) = match state.status {
            Status::Active => ("active", None, None),
            Status::Disabled { since, reason } => ("disabled", Some(reason), Some(since)),
        };
        Self {
            id: config.id,
            url: config.url,
            types: config.types,
            conversation_id: config.conversation_id,
            description: config.description,
            created_at: config.created_at,
            status,
            disabled_reason,
            disabled_at,
            delivered_through: state.delivered_through.to_string(),
            failing_since: state.failing_since,
            next_attempt_at: state.next_attempt_at,
            last_attempts: state.attempts.into(),
            backlog: None,
        }
    }
}

/// The answer to `POST /subscriptions`: the subscription and its signing secret.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedSubscription {
    #[serde(flatten)]
    subscription: SubscriptionView,
    /// The signing secret (`whsec_` and base64), shown only here: verify each
    /// delivery's `webhook-signature` with it, as the Standard Webhooks libraries do.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
}

/// The caller's subscriptions.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    items: Vec<SubscriptionView>,
}

/// The answer to a secret rotation.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecret {
    /// The new signing secret, shown only here.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    secret: String,
    /// Until when deliveries also carry the previous secret's signature.
    #[schema(value_type = String, format = DateTime)]
    previous_secret_expires_at: DateTime<Utc>,
}

/// The owner recorded for the caller: its key id, or `anonymous` without keys.
fn owner(caller: &Caller) -> String {
    caller
        .key
        .as_ref()
        .map_or_else(|| ANONYMOUS.to_owned(), |key| key.id.clone())
}

/// The worker, or why this service offers no subscriptions (pass-through mode).
fn offered_here(
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<(web::Data<Deliveries>, web::Data<Subscriptions>), ApiError> {
    deliveries
        .zip(subscriptions)
        .ok_or(ApiError::FeedNotOffered)
}

/// The caller's subscription named in the path; 404 for another key's.
async fn owned(
    req: &HttpRequest,
    caller: &Caller,
    subscriptions: &Subscriptions,
) -> Result<Subscription, ApiError> {
    let id = req.match_info().get("id").unwrap_or_default();
    match subscriptions.get(id).await? {
        Some(subscription) if subscription.config.owner == owner(caller) => Ok(subscription),
        _ => Err(ApiError::SubscriptionNotFound),
    }
}

/// The body's fields, checked; every offending member is named.
fn parse_new(body: &[u8]) -> Result<NewSubscription, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::MalformedBody(format!("the body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::MalformedBody(
            "the body is not a JSON object".into(),
        ));
    }
    let new: NewSubscription = serde_json::from_value(value).map_err(|e| {
        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::InvalidBody(vec![InvalidParam::pointer(
            "",
            format!(
                "{e}; expected url (string), types (a list of {}), conversationId, description",
                known.join(", ")
            ),
        )])
    })?;
    let mut errors = Vec::new();
    if let Some(id) = &new.conversation_id
        && let Err(why) = ConversationId::parse(id)
    {
        errors.push(InvalidParam::pointer("conversationId", why));
    }
    if new.description.chars().count() > MAX_DESCRIPTION_CHARS {
        errors.push(InvalidParam::pointer(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if errors.is_empty() {
        Ok(new)
    } else {
        Err(ApiError::InvalidBody(errors))
    }
}

/// Create a webhook subscription
///
/// Registers `url` to be called with every new event of the change feed that matches
/// `types` (and `conversationId`), from now on. Each delivery is a `POST` whose body is
/// the event (as `GET /conversations/changes` shows it), signed as the Standard Webhooks
/// specification says: `webhook-id` (the event id, the same on every retry),
/// `webhook-timestamp` and `webhook-signature` (`v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body` under the secret this answer shows, once). Answer with a 2xx
/// within 10 s; anything else is retried with exponential backoff for up to 24 h, in
/// event order (`Retry-After` is honoured), after which the subscription is disabled;
/// `410 Gone` removes it. Delivery is at least once: de-duplicate by `webhook-id`.
///
/// The URL must be `https` on a public host; redirects are not followed. Each caller
/// key may hold `SUBSCRIPTIONS_PER_KEY` subscriptions (50 by default).
#[utoipa::path(
    tag = "Subscriptions",
    operation_id = "createSubscription",
    request_body(content = NewSubscription, content_type = "application/json"),
    responses((status = 201, description = "Created; the signing secret is shown only here.", body = CreatedSubscription,
        headers(("Location" = String, description = "The subscription's URL: `GET` it for its status, `DELETE` it to stop deliveries.")))),
    security(("bearer" = []), ())
)]
#[post("/subscriptions")]
pub async fn create_subscription(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    log: Option<web::Data<EventLog>>,
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&CREATE_SUBSCRIPTION)?;
    let log = offered(log)?;
    let (deliveries, subscriptions) = offered_here(deliveries, subscriptions)?;
    let body = read_body(&req, payload, MAX_BODY_BYTES).await?;
    let new = parse_new(&body)?;
    let url = deliveries
        .policy()
        .check(new.url.trim())
        .await
        .map_err(ApiError::CallbackUrlRefused)?;
    let owner = owner(&caller);
    let limit = deliveries.settings().per_key;
    let held = subscriptions
        .all()
        .await?
        .iter()
        .filter(|s| s.config.owner == owner)
        .count();
    if held >= limit as usize {
        return Err(ApiError::TooManySubscriptions(limit));
    }
    let id = format!("sub_{}", uuid::Uuid::new_v4().simple());
    let secret = new_secret();
    let secrets = Secrets {
        current: secret.clone(),
        previous: None,
        previous_until: None,
    };
    let mut types = new.types;
    types.dedup();
    let subscription = Subscription {
        config: Config {
            secrets: subscriptions.seal(&id, &secrets),
            id: id.clone(),
            url: url.to_string(),
            types,
            conversation_id: new.conversation_id,
            description: new.description,
            owner,
            created_at: Utc::now(),
        },
        state: DeliveryState::starting_after(log.latest().await?),
    };
    subscriptions.create(&subscription).await?;
    deliveries.poke();
    tracing::info!(subscription.id = %id, "webhook subscription created");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/subscriptions/{id}")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CreatedSubscription {
            subscription: SubscriptionView::of(subscription),
            secret,
        }))
}

/// List your webhook subscriptions
///
/// The subscriptions your caller key created (without keys: those created anonymously),
/// with their status and last delivery attempts.
#[utoipa::path(
    tag = "Subscriptions",
    operation_id = "listSubscriptions",
    responses((status = 200, description = "Your subscriptions.", body = SubscriptionList)),
    security(("bearer" = []), ())
)]
#[get("/subscriptions")]
pub async fn list_subscriptions(
    caller: Caller,
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&LIST_SUBSCRIPTIONS)?;
    let (_, subscriptions) = offered_here(deliveries, subscriptions)?;
    let owner = owner(&caller);
    let items = subscriptions
        .all()
        .await?
        .into_iter()
        .filter(|s| s.config.owner == owner)
        .map(SubscriptionView::of)
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SubscriptionList { items }))
}

/// Get a webhook subscription
///
/// Its status (`active`, or `disabled` with the reason), its last delivery attempts with
/// the receiver's HTTP status, since when deliveries have been failing, when the next
/// attempt is due, and its backlog: the matching events not yet delivered.
#[utoipa::path(
    get,
    path = "/subscriptions/{id}",
    tag = "Subscriptions",
    operation_id = "getSubscription",
    params(("id" = String, Path, description = "The subscription's id.", example = "sub_6f1c2a8e8a524a579d545b1a0f6f3a11")),
    responses((status = 200, description = "The subscription.", body = SubscriptionView)),
    security(("bearer" = []), ())
)]
pub async fn get_subscription(
    req: HttpRequest,
    caller: Caller,
    log: Option<web::Data<EventLog>>,
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&GET_SUBSCRIPTION)?;
    let log = offered(log)?;
    let (_, subscriptions) = offered_here(deliveries, subscriptions)?;
    let subscription = owned(&req, &caller, &subscriptions).await?;
    let backlog = log
        .after(
            Some(&subscription.state.delivered_through),
            &subscription.config.filter(),
            MAX_BACKLOG_COUNT,
        )
        .await
        .map(|page| page.events.len() as u32)
        .ok();
    let mut view = SubscriptionView::of(subscription);
    view.backlog = backlog;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}

/// Delete a webhook subscription
///
/// Stops its deliveries (one under way may still arrive). Power Automate calls it when
/// a flow with the webhook trigger is turned off or deleted.
#[utoipa::path(
    delete,
    path = "/subscriptions/{id}",
    tag = "Subscriptions",
    operation_id = "deleteSubscription",
    params(("id" = String, Path, description = "The subscription's id.", example = "sub_6f1c2a8e8a524a579d545b1a0f6f3a11")),
    responses((status = 204, description = "Deleted.")),
    security(("bearer" = []), ())
)]
pub async fn delete_subscription(
    req: HttpRequest,
    caller: Caller,
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&DELETE_SUBSCRIPTION)?;
    let (_, subscriptions) = offered_here(deliveries, subscriptions)?;
    let subscription = owned(&req, &caller, &subscriptions).await?;
    subscriptions.delete(&subscription.config.id).await?;
    tracing::info!(subscription.id = %subscription.config.id, "webhook subscription deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate a subscription's signing secret
///
/// Makes a new signing secret and shows it, once. For a grace period (24 h by default,
/// `SUBSCRIPTION_SECRET_GRACE_SECS`) deliveries carry two signatures in
/// `webhook-signature`, separated by a space: one under the new secret and one under the
/// previous, so the receiver can switch to the new secret at any time in between.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/rotate-secret",
    tag = "Subscriptions",
    operation_id = "rotateSubscriptionSecret",
    params(("id" = String, Path, description = "The subscription's id.", example = "sub_6f1c2a8e8a524a579d545b1a0f6f3a11")),
    responses((status = 200, description = "The new secret.", body = RotatedSecret)),
    security(("bearer" = []), ())
)]
pub async fn rotate_subscription_secret(
    req: HttpRequest,
    caller: Caller,
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&ROTATE_SUBSCRIPTION_SECRET)?;
    let (deliveries, subscriptions) = offered_here(deliveries, subscriptions)?;
    let Subscription { mut config, .. } = owned(&req, &caller, &subscriptions).await?;
    let grace = chrono::Duration::from_std(deliveries.settings().secret_grace).unwrap_or_default();
    let previous_until = Utc::now() + grace;
    let secret = new_secret();
    // A previous secret that cannot be opened (the service's secret changed) is dropped.
    let previous = subscriptions.open_secrets(&config).map(|s| s.current);
    let secrets = Secrets {
        current: secret.clone(),
        previous,
        previous_until: Some(previous_until),
    };
    config.secrets = subscriptions.seal(&config.id, &secrets);
    if !subscriptions.put_config(&config).await? {
        return Err(ApiError::SubscriptionNotFound);
    }
    tracing::info!(subscription.id = %config.id, "webhook subscription secret rotated");
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(RotatedSecret {
            secret,
            previous_secret_expires_at: previous_until,
        }))
}

/// Enable a disabled subscription
///
/// Resumes the deliveries of a subscription that was disabled after failing for the
/// whole retry horizon, from the first event it had not delivered (events older than
/// the change feed's retention are gone). An active subscription stays as it is.
#[utoipa::path(
    post,
    path = "/subscriptions/{id}/enable",
    tag = "Subscriptions",
    operation_id = "enableSubscription",
    params(("id" = String, Path, description = "The subscription's id.", example = "sub_6f1c2a8e8a524a579d545b1a0f6f3a11")),
    responses((status = 200, description = "The subscription, active.", body = SubscriptionView)),
    security(("bearer" = []), ())
)]
pub async fn enable_subscription(
    req: HttpRequest,
    caller: Caller,
    deliveries: Option<web::Data<Deliveries>>,
    subscriptions: Option<web::Data<Subscriptions>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&ENABLE_SUBSCRIPTION)?;
    let (deliveries, subscriptions) = offered_here(deliveries, subscriptions)?;
    let mut subscription = owned(&req, &caller, &subscriptions).await?;
    if subscription.state.status != Status::Active {
        let state = &mut subscription.state;
        state.status = Status::Active;
        state.failures = 0;
        state.failing_since = None;
        state.next_attempt_at = None;
        if !subscriptions
            .put_state(&subscription.config.id, &subscription.state)
            .await?
        {
            return Err(ApiError::SubscriptionNotFound);
        }
        deliveries.poke();
        tracing::info!(subscription.id = %subscription.config.id, "webhook subscription enabled");
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(SubscriptionView::of(subscription)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::callback_url::MAX_URL_CHARS;

    /// utoipa's derive takes literals only: the documented limits of a new subscription
    /// are held to the constants its parser checks.
    #[test]
    fn the_documented_subscription_limits_are_the_parsers() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(NewSubscription::schema()).unwrap();
        let properties = &schema["properties"];
        assert_eq!(properties["url"]["maxLength"], MAX_URL_CHARS);
        assert_eq!(
            properties["description"]["maxLength"],
            MAX_DESCRIPTION_CHARS
        );
        assert_eq!(
            properties["conversationId"]["pattern"],
            crate::domain::object_id_pattern()
        );
    }
}

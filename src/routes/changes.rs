//! The change feed over HTTP: `GET /conversations/changes` (catch-up reads, a page of
//! events after a cursor) and `GET /triggers/conversation-changed` (the same log as a
//! Power Automate polling trigger). Both read the event log only: never Qpien. The query
//! they share (and `GET /events` with them) is parsed here.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Serialize;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Object, Required};
use utoipa::{IntoParams, ToSchema};

use super::Caller;
use super::caching::Conditional;
use super::registry::{LIST_CONVERSATION_CHANGES, ON_CONVERSATION_CHANGED};
use crate::domain::{ConversationId, InvalidParam, object_id_schema};
use crate::error::ApiError;
use crate::events::log::{Cursor, Event, EventKind, EventLog, Filter, LogError, Page};
use crate::public_url::PublicBaseUrl;
use crate::reads::etag::ETag;
use crate::settings::EventLogSettings;

/// Largest `pageSize` of the feed.
pub const MAX_FEED_PAGE: usize = 500;
/// `pageSize` when none is given.
pub const DEFAULT_FEED_PAGE: usize = 100;
/// Longest cursor a caller may send; the stores' own are 20 characters.
const MAX_CURSOR_CHARS: usize = 64;

/// What a feed request asks: where to start and which events.
#[derive(Debug, PartialEq)]
pub struct FeedQuery {
    pub after: Option<Cursor>,
    pub filter: Filter,
    pub page_size: usize,
}

impl FeedQuery {
    /// Parses the decoded query pairs of a route that takes `names` (a subset of
    /// `after`, `types`, `conversationId`, `pageSize`). An unknown or repeated parameter
    /// is an error, as on the list.
    pub fn parse(pairs: &[(String, String)], names: &[&str]) -> Result<Self, Vec<InvalidParam>> {
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut query = FeedQuery {
            after: None,
            filter: Filter::default(),
            page_size: DEFAULT_FEED_PAGE,
        };
        for (name, value) in pairs {
            let Some(known) = names.iter().find(|n| **n == name) else {
                errors.push(InvalidParam::parameter(
                    name,
                    format!(
                        "is not a parameter of this route; known: {}",
                        names.join(", ")
                    ),
                ));
                continue;
            };
            if seen.contains(known) {
                errors.push(InvalidParam::parameter(name, "must be given at most once"));
                continue;
            }
            seen.push(known);
            let result = match name.as_str() {
                "after" => parse_cursor(value).map(|c| query.after = Some(c)),
                "types" => parse_types(value).map(|t| query.filter.types = t),
                "conversationId" => ConversationId::parse(value)
                    .map(|id| query.filter.conversation_id = Some(id.as_str().to_owned())),
                _ => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_FEED_PAGE).contains(&n) => {
                        query.page_size = n;
                        Ok(())
                    }
                    _ => Err(format!("must be a whole number from 1 to {MAX_FEED_PAGE}")),
                },
            };
            if let Err(detail) = result {
                errors.push(InvalidParam::parameter(name, detail));
            }
        }
        if errors.is_empty() {
            Ok(query)
        } else {
            Err(errors)
        }
    }

    /// The query pairs that ask for the same events after `cursor`, `pageSize` kept.
    fn pairs_after(&self, cursor: &Cursor, page_size: bool) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("after", cursor.to_string())];
        if !self.filter.types.is_empty() {
            let names: Vec<&str> = self.filter.types.iter().map(|k| k.as_str()).collect();
            pairs.push(("types", names.join(",")));
        }
        if let Some(id) = &self.filter.conversation_id {
            pairs.push(("conversationId", id.clone()));
        }
        if page_size {
            pairs.push(("pageSize", self.page_size.to_string()));
        }
        pairs
    }
}

fn parse_cursor(value: &str) -> Result<Cursor, String> {
    let plausible = (1..=MAX_CURSOR_CHARS).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    if plausible {
        Ok(Cursor::new(value))
    } else {
        Err("must be a cursor this service gave (the `next` of a page, or an event's `id`)".into())
    }
}

fn parse_types(value: &str) -> Result<Vec<EventKind>, String> {
    let mut kinds = Vec::new();
    for name in value.split(',').map(|name| name.trim_matches(' ')) {
        let kind = EventKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            format!(
                "must be a comma-separated list of {}, got {name:?}",
                known.join(", ")
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// The decoded query pairs of `req`, or a 400 when it is not valid URL encoding.
pub fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| {
            ApiError::InvalidParameters(vec![InvalidParam::parameter(
                "query",
                "the query string is not valid URL encoding",
            )])
        })
}

/// The log, or why this service offers none (pass-through mode).
pub fn offered(log: Option<web::Data<EventLog>>) -> Result<web::Data<EventLog>, ApiError> {
    log.ok_or(ApiError::FeedNotOffered)
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> Self {
        match error {
            LogError::Gone => ApiError::CursorGone,
            LogError::Unavailable(why) => ApiError::EventLogUnavailable(why),
        }
    }
}

/// The parameters of the feed's routes, documented once with the bounds the parser
/// checks.
pub struct FeedParams;

impl FeedParams {
    /// A query parameter with the example tools fill in (Swagger UI's "Try it out",
    /// Postman): one that works on a fresh service.
    fn parameter(
        name: &str,
        description: &str,
        schema: Object,
        example: Option<serde_json::Value>,
    ) -> Parameter {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(schema))
            .example(example)
            .build()
    }

    fn after() -> Parameter {
        Self::parameter(
            "after",
            "The cursor to read after: the `next` of the previous answer, or the `id` of the last event you handled; `0` for the oldest event the feed still keeps. Without it, the answer holds no events and the current cursor, so you start from now.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_CURSOR_CHARS))
                .min_length(Some(1))
                .pattern(Some("^[0-9-]+$"))
                .build(),
            Some(serde_json::json!(crate::events::log::EARLIEST)),
        )
    }

    fn types() -> Parameter {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        Self::parameter(
            "types",
            &format!(
                "Only events of these types, comma-separated: {}. All types when absent.",
                names.join(", ")
            ),
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(types_pattern()))
                .build(),
            Some(serde_json::json!(
                "conversation.message_received,conversation.updated"
            )),
        )
    }

    fn conversation_id() -> Parameter {
        Self::parameter(
            "conversationId",
            "Only events of this conversation.",
            object_id_schema(),
            Some(serde_json::json!("6650a1000000000000000001")),
        )
    }

    fn page_size() -> Parameter {
        Self::parameter(
            "pageSize",
            "The most events in one answer.",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_FEED_PAGE))
                .default(Some(DEFAULT_FEED_PAGE.into()))
                .build(),
            Some(serde_json::json!(10)),
        )
    }
}

/// What `types` accepts: event type names separated by commas (spaces around them
/// allowed), as `parse_types` reads it.
fn types_pattern() -> String {
    let names: Vec<String> = EventKind::ALL
        .iter()
        .map(|k| k.as_str().replace('.', "\\."))
        .collect();
    let one = format!("({})", names.join("|"));
    format!("^ *{one} *(, *{one} *)*$")
}

/// `after`, `types`, `conversationId`, `pageSize`: the catch-up read's parameters.
pub struct ChangesParams;

impl IntoParams for ChangesParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            FeedParams::after(),
            FeedParams::types(),
            FeedParams::conversation_id(),
            FeedParams::page_size(),
        ]
    }
}

/// `types`, `conversationId`, `after`: the trigger's and the stream's parameters.
pub struct StreamParams;

impl IntoParams for StreamParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            FeedParams::types(),
            FeedParams::conversation_id(),
            FeedParams::after(),
        ]
    }
}

/// A page of the change feed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePage {
    /// The events after the cursor, oldest first (at most `pageSize`).
    items: Vec<Event>,
    /// The cursor to ask with next time (`after`): it moves past these events, and past
    /// events the filters left out.
    #[schema(value_type = String, example = "00000000000000000042")]
    next: Cursor,
    /// The URL of the next page while the feed holds more than this answer could carry;
    /// `null` once you are up to date (then poll again later with `next`).
    #[schema(example = json!(null))]
    next_link: Option<String>,
}

/// List conversation changes
///
/// The change feed: every change the service learns of (updates made through it, and
/// what Qpien reports by webhook), oldest first, after the cursor `after`. Without a
/// cursor the answer holds no events and the current cursor, so a consumer starts from
/// now; ask again with `next` to get what happened since. Events are kept for the
/// retention the operator sets (7 days by default); an older cursor gets a 410 problem.
///
/// It never calls Qpien: poll it as often as you like. The answer carries a strong
/// `ETag`, so `If-None-Match` gets a `304` while nothing new has happened.
#[utoipa::path(
    tag = "Changes",
    operation_id = "listConversationChanges",
    params(ChangesParams),
    responses((status = 200, description = "The events after the cursor, and where to go on.", body = ChangePage),
        (status = 304, description = "Not Modified: nothing new since the answer tagged by `If-None-Match`.")),
    security(("bearer" = []), ())
)]
#[get("/conversations/changes")]
pub async fn list_conversation_changes(
    req: HttpRequest,
    caller: Caller,
    log: Option<web::Data<EventLog>>,
    base: web::Data<PublicBaseUrl>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&LIST_CONVERSATION_CHANGES)?;
    let log = offered(log)?;
    let pairs = query_pairs(&req)?;
    let query = FeedQuery::parse(&pairs, &["after", "types", "conversationId", "pageSize"])
        .map_err(ApiError::InvalidParameters)?;
    let Page { events, next } = log
        .after(query.after.as_ref(), &query.filter, query.page_size)
        .await?;
    let full = events.len() >= query.page_size;
    let next_link = full.then(|| {
        base.url_of(
            &req,
            LIST_CONVERSATION_CHANGES.path,
            &query.pairs_after(&next, true),
        )
    });
    let page = ChangePage {
        items: events,
        next,
        next_link,
    };
    let body = serde_json::to_vec(&page).expect("a page serialises");
    let etag = ETag::of(&body);
    let not_modified = Conditional::of(&req).not_modified(etag);
    let mut response = if not_modified {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((header::ETAG, etag.header_value()))
        .insert_header((header::CACHE_CONTROL, "private, no-cache"));
    if let Some(link) = &page.next_link {
        response.insert_header((header::LINK, format!("<{link}>; rel=\"next\"")));
    }
    if not_modified {
        return Ok(response.finish());
    }
    Ok(response.content_type("application/json").body(body))
}

/// When a conversation changes
///
/// A polling trigger for Power Automate and Logic Apps, over the same change feed as
/// `GET /conversations/changes`. The first call (no `after`) answers `202 Accepted` with
/// `Location`, the URL to poll next (it holds the current cursor), and `Retry-After`.
/// Polling that URL answers `202` with a new `Location` while nothing has changed, and
/// `200` with the new events (one flow run each) and the `Location` of the next poll
/// when something has. A cursor older than the feed keeps starts again from now rather
/// than failing the flow. It never calls Qpien.
#[utoipa::path(
    tag = "Changes",
    operation_id = "onConversationChanged",
    params(StreamParams),
    responses(
        (status = 200, description = "New events, oldest first; poll `Location` next.", body = Vec<Event>,
            headers(("Location" = String, description = "The URL to poll next."))),
        (status = 202, description = "Nothing new; poll `Location` after `Retry-After` seconds.",
            headers(("Location" = String, description = "The URL to poll next."),
                ("Retry-After" = u32, description = "Seconds to wait before the next poll.")))),
    security(("bearer" = []), ())
)]
#[get("/triggers/conversation-changed")]
pub async fn on_conversation_changed(
    req: HttpRequest,
    caller: Caller,
    log: Option<web::Data<EventLog>>,
    base: web::Data<PublicBaseUrl>,
    settings: web::Data<EventLogSettings>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&ON_CONVERSATION_CHANGED)?;
    let log = offered(log)?;
    let pairs = query_pairs(&req)?;
    let mut query = FeedQuery::parse(&pairs, &["types", "conversationId", "after"])
        .map_err(ApiError::InvalidParameters)?;
    query.page_size = DEFAULT_FEED_PAGE;
    let page = match log
        .after(query.after.as_ref(), &query.filter, query.page_size)
        .await
    {
        // A flow left off for longer than the retention resumes from now: a trigger
        // that failed every poll from then on would be worse than the gap.
        Err(LogError::Gone) => log.after(None, &query.filter, 1).await?,
        page => page?,
    };
    let location = base.url_of(
        &req,
        ON_CONVERSATION_CHANGED.path,
        &query.pairs_after(&page.next, false),
    );
    if page.events.is_empty() {
        return Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, location))
            .insert_header((header::RETRY_AFTER, settings.trigger_poll.as_secs()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(page.events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> Result<FeedQuery, Vec<InvalidParam>> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FeedQuery::parse(&pairs, &["after", "types", "conversationId", "pageSize"])
    }

    #[test]
    fn a_feed_query_reads_its_cursor_types_conversation_and_page_size() {
        let query = parse(&[
            ("after", "00000000000000000042"),
            (
                "types",
                "conversation.updated, conversation.joined,conversation.updated",
            ),
            ("conversationId", "6650a1000000000000000001"),
            ("pageSize", "10"),
        ])
        .unwrap();
        assert_eq!(query.after, Some(Cursor::new("00000000000000000042")));
        assert_eq!(
            query.filter.types,
            vec![EventKind::Updated, EventKind::Joined]
        );
        assert_eq!(
            query.filter.conversation_id.as_deref(),
            Some("6650a1000000000000000001")
        );
        assert_eq!(query.page_size, 10);
        assert_eq!(parse(&[]).unwrap().page_size, DEFAULT_FEED_PAGE);
    }

    #[test]
    fn every_offending_feed_parameter_is_named() {
        let errors = parse(&[
            ("after", "x'; DROP"),
            ("types", "conversation.deleted"),
            ("conversationId", "nope"),
            ("pageSize", "0"),
            ("page", "2"),
        ])
        .unwrap_err();
        let names: Vec<&str> = errors
            .iter()
            .map(|e| e.parameter.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            ["after", "types", "conversationId", "pageSize", "page"]
        );
        let repeated = parse(&[("after", "1"), ("after", "2")]).unwrap_err();
        assert_eq!(repeated.len(), 1);
    }
}

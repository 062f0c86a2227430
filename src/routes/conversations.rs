//! The conversation routes: list, read, update.

use std::io::Write;

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, web};
use serde::Serialize;
use serde_json::json;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::Object;
use utoipa::{IntoParams, ToSchema};

use super::Caller;
use super::body::{MAX_BODY_BYTES, read_body};
use super::caching::{self, Answered, Conditional};
use super::registry::{GET_CONVERSATION, LIST_CONVERSATIONS, UPDATE_CONVERSATION};
use crate::domain::{
    Conversation, ConversationId, ConversationPatch, ConversationStatus, ConversationType,
    DEFAULT_PAGE_SIZE, InvalidParam, ListQuery, PatchError, Priority, nullable_object_id_schema,
    object_id_schema, page_schema, page_size_schema, tag_schema,
};
use crate::error::ApiError;
use crate::events::Recorder;
use crate::metrics::Metrics;
use crate::public_url::PublicBaseUrl;
use crate::reads::etag::ETag;
use crate::reads::{CachedConversations, Served, UpdateError};
use crate::telemetry::RequestId;

/// One page of conversations with its paging metadata and links. The body is written by
/// `page_body` around the cached JSON of the items; a test holds the two to one shape.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationList {
    /// The conversations of this page, most recent last message first.
    pub items: Vec<Conversation>,
    /// The page returned, from 1.
    #[schema(example = 1)]
    pub page: u32,
    /// The page size used.
    #[schema(example = 20)]
    pub page_size: u32,
    /// Conversations matching the filters, over all pages.
    #[schema(example = 64)]
    pub total_items: u64,
    /// Number of pages; 0 when nothing matches.
    #[schema(example = 4)]
    pub total_pages: u64,
    /// Absolute URLs of neighbouring pages, also sent in the `Link` header (RFC 8288).
    pub links: PageLinks,
    /// Absolute URL of the next page, `null` on the last: `links.next` again, at the top
    /// level where pagers that follow one named field (Power Automate) look for it.
    #[schema(example = "http://127.0.0.1:8080/conversations?page=2")]
    pub next_link: Option<String>,
}

/// Paging links; `next` and `prev` are `null` at the ends.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageLinks {
    /// This page.
    #[serde(rename = "self")]
    pub this: String,
    /// The first page.
    pub first: String,
    /// The last page (the first when nothing matches).
    pub last: String,
    /// The next page, if any.
    pub next: Option<String>,
    /// The previous page, if any.
    pub prev: Option<String>,
}

/// Query parameters of `GET /conversations` (documentation; parsing is `ListQuery::parse`).
///
/// Every parameter has an example, and together the examples still match conversations
/// of the sandbox's demo data: Swagger UI's "Try it out" and Postman fill them all in,
/// and should show a page that is not empty (clear a field to widen the filter).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// Only conversations in this status.
    #[param(example = "open")]
    status: Option<ConversationStatus>,
    /// Only conversations of this priority.
    #[param(example = "low")]
    priority: Option<Priority>,
    /// Only starred (`true`) or only unstarred (`false`) conversations.
    #[param(example = false)]
    starred: Option<bool>,
    /// Only conversations of this type.
    #[param(rename = "type", example = "group")]
    kind: Option<ConversationType>,
}

/// The bounded parameters of `GET /conversations`, documented from the constants the
/// parser checks (utoipa's attributes take literals only).
struct ListBounds;

impl IntoParams for ListBounds {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            documented(
                "tag",
                ParameterIn::Query,
                "Only conversations carrying the tag of this name, e.g. `vip`.",
                tag_schema(),
                json!("vip"),
            ),
            documented(
                "page",
                ParameterIn::Query,
                "Page number, from 1.",
                page_schema(),
                json!(1),
            ),
            documented(
                "pageSize",
                ParameterIn::Query,
                "Conversations per page.",
                page_size_schema(),
                json!(DEFAULT_PAGE_SIZE),
            ),
        ]
    }
}

/// The conversation a path names (documentation; parsing is `ConversationId::parse`).
struct OneConversation;

impl IntoParams for OneConversation {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![documented(
            "id",
            ParameterIn::Path,
            "Id of the conversation: 24 hexadecimal digits (either case).",
            object_id_schema(),
            json!("6650a1000000000000000001"),
        )]
    }
}

fn documented(
    name: &str,
    place: ParameterIn,
    description: &str,
    schema: Object,
    example: serde_json::Value,
) -> Parameter {
    let required = if place == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .description(Some(description))
        .required(required)
        .schema(Some(schema))
        .example(Some(example))
        .build()
}

/// `If-None-Match`, documented once for both reads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct ReadConditions {
    /// The `ETag` of the representation you hold: while it is still current the answer
    /// is `304 Not Modified` without a body, and, while the cached answer is fresh,
    /// costs Qpien nothing. A value that is no entity tag matches nothing.
    #[param(rename = "If-None-Match", example = "\"0000000000000000\"")]
    if_none_match: Option<String>,
}

/// List conversations
///
/// Returns one page of conversations, filtered by status, priority, starred, type and
/// tag. Links to the neighbouring pages are in the body (`links`) and in the `Link`
/// header. An unknown parameter, an unknown enum value or an out-of-range number is a
/// 400 problem naming each offending parameter.
///
/// Answers are cached per credential for a few seconds (`Cache-Control: max-age`);
/// `Cache-Status` says whether this one came from the cache, and `Cache-Control:
/// no-cache` on the request asks Qpien again. When Qpien cannot answer, a recent
/// cached page is served instead, with `Age` and the reason in `Cache-Status`.
#[utoipa::path(
    tag = "Conversations",
    operation_id = "listConversations",
    params(ListParams, ListBounds, ReadConditions),
    responses((status = 200, description = "One page of conversations.", body = ConversationList,
        headers(("Link" = String, description = "RFC 8288 links to the first, last, next and previous pages."))),
        (status = 304, description = "Not Modified: the page named by `If-None-Match` is still current.")),
    security(("bearer" = []), ())
)]
#[get("/conversations")]
pub async fn list_conversations(
    req: HttpRequest,
    caller: Caller,
    conversations: web::Data<CachedConversations>,
    base: web::Data<PublicBaseUrl>,
    metrics: web::Data<Metrics>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&LIST_CONVERSATIONS)?;
    let pairs =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map_err(|_| {
            ApiError::InvalidParameters(vec![InvalidParam::parameter(
                "query",
                "the query string is not valid URL encoding",
            )])
        })?;
    let query = ListQuery::parse(&pairs).map_err(ApiError::InvalidParameters)?;
    let conditional = Conditional::of(&req);
    let client = conversations.client();
    let budget = || client.budget_report(&caller.credential, LIST_CONVERSATIONS.class());
    let served = match conversations
        .list(
            &caller.credential,
            &request_id.0,
            &query,
            conditional.freshness,
        )
        .await
    {
        Ok(served) => served,
        Err(error) => return caching::failure(error, budget),
    };

    let total_pages = served.entry.total_items.div_ceil(query.page_size.into());
    let page_url = |n: u64| base.page_url(&req, &pairs, n);
    let current = u64::from(query.page);
    let links = PageLinks {
        this: page_url(current),
        first: page_url(1),
        last: page_url(total_pages.max(1)),
        next: (current < total_pages).then(|| page_url(current + 1)),
        prev: (current > 1).then(|| page_url((current - 1).min(total_pages.max(1)))),
    };
    let body = page_body(&served, &query, total_pages, &links);
    let etag = ETag::of(&body);
    let answered = Answered {
        served: &served,
        etag,
        etag_header: etag.header_value(),
        limits: conversations.limits(),
        cache_control: conversations.cache_control(),
        per_bearer: !client.is_service_mode(),
    };
    let mut response = answered.respond(&conditional, budget(), &metrics, body);
    if let Ok(value) = header::HeaderValue::from_str(&link_header(&links)) {
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

/// A `ConversationList` around the cached JSON of its items.
fn page_body(served: &Served, query: &ListQuery, total_pages: u64, links: &PageLinks) -> Vec<u8> {
    let items = &served.entry.json;
    let mut body = Vec::with_capacity(items.len() + 512);
    body.extend_from_slice(b"{\"items\":");
    body.extend_from_slice(items);
    write!(
        body,
        ",\"page\":{},\"pageSize\":{},\"totalItems\":{},\"totalPages\":{},\"links\":",
        query.page, query.page_size, served.entry.total_items, total_pages
    )
    .expect("writing to a Vec cannot fail");
    serde_json::to_writer(&mut body, links).expect("links serialise");
    body.extend_from_slice(b",\"nextLink\":");
    serde_json::to_writer(&mut body, &links.next).expect("a link serialises");
    body.push(b'}');
    body
}

fn link_header(links: &PageLinks) -> String {
    let mut parts = vec![
        format!("<{}>; rel=\"first\"", links.first),
        format!("<{}>; rel=\"last\"", links.last),
    ];
    if let Some(next) = &links.next {
        parts.push(format!("<{next}>; rel=\"next\""));
    }
    if let Some(prev) = &links.prev {
        parts.push(format!("<{prev}>; rel=\"prev\""));
    }
    parts.join(", ")
}

impl PublicBaseUrl {
    /// The absolute URL of page `n` of the same list, other parameters kept in order.
    fn page_url(&self, req: &HttpRequest, pairs: &[(String, String)], n: u64) -> String {
        let mut url = self.resolve(req);
        let path = format!("{}/conversations", url.path().trim_end_matches('/'));
        url.set_path(&path);
        {
            let mut query = url.query_pairs_mut();
            query.clear();
            for (name, value) in pairs.iter().filter(|(name, _)| name != "page") {
                query.append_pair(name, value);
            }
            query.append_pair("page", &n.to_string());
        }
        url.into()
    }
}

fn parse_id(raw: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(raw)
        .map_err(|detail| ApiError::InvalidParameters(vec![InvalidParam::parameter("id", detail)]))
}

/// Get a conversation
///
/// Returns one conversation. The id is 24 hexadecimal digits; another form is a 400
/// problem, an id Qpien does not know is a 404 problem.
///
/// Cached and revalidated as the list is; the `ETag` serves `If-None-Match` here and
/// `If-Match` on the update.
#[utoipa::path(
    get,
    path = "/conversations/{id}",
    tag = "Conversations",
    operation_id = "getConversation",
    params(OneConversation, ReadConditions),
    responses((status = 200, description = "The conversation.", body = Conversation),
        (status = 304, description = "Not Modified: the conversation named by `If-None-Match` is still current.")),
    security(("bearer" = []), ())
)]
pub async fn get_conversation(
    req: HttpRequest,
    caller: Caller,
    conversations: web::Data<CachedConversations>,
    metrics: web::Data<Metrics>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&GET_CONVERSATION)?;
    // From the path as `table::Parameterised` matched it; read here rather than through
    // `web::Path`, whose parameter utoipa would document a second time.
    let id = parse_id(req.match_info().get("id").unwrap_or_default())?;
    let conditional = Conditional::of(&req);
    let client = conversations.client();
    let budget = || client.budget_report(&caller.credential, GET_CONVERSATION.class());
    let served = match conversations
        .conversation(
            &caller.credential,
            &request_id.0,
            &id,
            conditional.freshness,
        )
        .await
    {
        Ok(served) => served,
        Err(error) => return caching::failure(error, budget),
    };
    let answered = Answered {
        served: &served,
        etag: served.entry.etag,
        etag_header: served.entry.etag_header.clone(),
        limits: conversations.limits(),
        cache_control: conversations.cache_control(),
        per_bearer: !client.is_service_mode(),
    };
    Ok(answered.respond(&conditional, budget(), &metrics, served.entry.json.clone()))
}

/// Update a conversation
///
/// Applies a JSON Merge Patch (RFC 7396) to the updatable fields: `status`, `starred`,
/// `priority`, `tags` (tag names; the array replaces the set, `null` clears it) and
/// `joinedPersonId` (`null` removes the agent). Send it as
/// `application/merge-patch+json`; `application/json` is accepted too, for clients that
/// cannot choose a media type. Every unknown, read-only or invalid member is listed in a
/// 422 problem; nothing is sent to Qpien then. Returns the updated conversation and
/// its `ETag`. With `If-Match`, the update is made only if the conversation is still
/// as you read it; otherwise 412 with its current `ETag`.
#[utoipa::path(
    patch,
    path = "/conversations/{id}",
    tag = "Conversations",
    operation_id = "updateConversation",
    params(OneConversation,
        ("If-Match" = Option<String>, Header, example = "*", pattern = r#"^(\*|(W/)?"[!#-~]*"( *, *(W/)?"[!#-~]*")*)$"#, description = "Update only if the conversation is still as you read it: the `ETag` of your last read (or several, comma-separated). Checked against the conversation as Qpien has it now; if it changed, 412 and nothing is changed. `*` or no header: update whatever its state.")),
    // One media type: generators given two (even of one schema) make clumsy or broken
    // code, e.g. openapi-python-client 0.29; the description names the other.
    request_body(
        description = "The fields to change; members left out stay as they are.",
        content(
            (ConversationPatchDoc = "application/merge-patch+json", examples(
                ("resolve" = (summary = "Resolve, star and tag",
                    value = json!({"status": "resolved", "starred": true, "tags": ["vip", "billing"]}))),
                ("escalate" = (summary = "Make urgent and remove the agent",
                    value = json!({"priority": "urgent", "joinedPersonId": null}))),
                ("untag" = (summary = "Remove every tag", value = json!({"tags": null}))),
            )),
        )
    ),
    responses((status = 200, description = "The updated conversation.", body = Conversation)),
    security(("bearer" = []), ())
)]
pub async fn update_conversation(
    req: HttpRequest,
    caller: Caller,
    payload: web::Payload,
    conversations: web::Data<CachedConversations>,
    metrics: web::Data<Metrics>,
    request_id: web::ReqData<RequestId>,
    recorder: Option<web::Data<Recorder>>,
) -> Result<HttpResponse, ApiError> {
    caller.may(&UPDATE_CONVERSATION)?;
    // From the path as `table::Parameterised` matched it; read here rather than through
    // `web::Path`, whose parameter utoipa would document a second time.
    let id = parse_id(req.match_info().get("id").unwrap_or_default())?;
    check_media_type(&req)?;
    let condition = caching::if_match(&req)?;
    let body = read_body(&req, payload, MAX_BODY_BYTES).await?;
    let patch = ConversationPatch::parse(&body).map_err(|e| match e {
        PatchError::Malformed(why) => ApiError::MalformedBody(why),
        PatchError::Invalid(errors) => ApiError::InvalidBody(errors),
    })?;
    let client = conversations.client();
    let budget = || client.budget_report(&caller.credential, UPDATE_CONVERSATION.class());
    match conversations
        .update(
            &caller.credential,
            &request_id.0,
            &id,
            &patch,
            condition.as_ref(),
        )
        .await
    {
        Ok(entry) => {
            // In the change feed before the caller hears of it, so a consumer that
            // reads the feed after the answer finds it.
            if let Some(recorder) = recorder {
                recorder.own_update(&id, &entry.json).await;
            }
            let mut response = HttpResponse::Ok();
            caching::rate_headers(&mut response, budget());
            Ok(response
                .insert_header((header::ETAG, entry.etag_header.clone()))
                .content_type("application/json")
                .body(entry.json.clone()))
        }
        Err(UpdateError::PreconditionFailed(current)) => {
            metrics.conditional(412);
            Err(ApiError::PreconditionFailed(current.to_header()))
        }
        Err(UpdateError::Upstream(error)) => caching::failure(error, budget),
    }
}

fn check_media_type(req: &HttpRequest) -> Result<(), ApiError> {
    let raw = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let accepted = req.mime_type().ok().flatten().is_some_and(|mime| {
        let charset_ok = mime
            .get_param("charset")
            .is_none_or(|c| c.as_str().eq_ignore_ascii_case("utf-8"));
        matches!(
            mime.essence_str(),
            "application/merge-patch+json" | "application/json"
        ) && charset_ok
    });
    if accepted {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(raw))
    }
}

/// A merge patch of a conversation: give only the fields to change.
#[derive(ToSchema, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ConversationPatch, min_properties = 1)]
#[allow(dead_code)]
struct ConversationPatchDoc {
    /// New status. Cannot be `null`.
    #[schema(nullable = false)]
    status: Option<ConversationStatus>,
    /// New starred flag. Cannot be `null`.
    #[schema(nullable = false)]
    starred: Option<bool>,
    /// New priority. Cannot be `null`.
    #[schema(nullable = false)]
    priority: Option<Priority>,
    /// Names of the tags the conversation should carry (replaces the set; `null` clears it).
    /// Each must be a tag of the customer; Qpien rejects an unknown name (422).
    #[schema(max_items = 20, example = json!(["vip", "billing"]))]
    tags: Option<Vec<TagName>>,
    /// Id of the agent to join (24 hexadecimal digits), or `null` to remove the agent.
    #[schema(schema_with = nullable_object_id)]
    joined_person_id: Option<String>,
}

/// An id, or `null`.
fn nullable_object_id() -> utoipa::openapi::schema::Object {
    nullable_object_id_schema(
        "Id of the agent to join (24 hexadecimal digits), or `null` to remove the agent.",
    )
}

/// The name of a tag: 1 to 64 characters, not all white space.
#[derive(ToSchema, serde::Deserialize)]
#[schema(
    min_length = 1,
    max_length = 64,
    // One character that Rust's `char::is_whitespace` (the parser's rule) does not count
    // as white space, spelt out: `\S` means different sets in ECMA, Python and Rust regexes.
    pattern = r"[^\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    example = "vip"
)]
#[allow(dead_code)]
struct TagName(String);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;
    use tokio::time::Instant;

    use super::*;
    use crate::reads::Source;
    use crate::reads::cache::Entry;

    /// utoipa's derive takes literals only: the merge patch's documented limits are held
    /// to the constants its parser checks.
    #[test]
    fn the_documented_patch_limits_are_the_parsers() {
        use utoipa::PartialSchema;
        let patch = serde_json::to_value(ConversationPatchDoc::schema()).unwrap();
        let tag = serde_json::to_value(TagName::schema()).unwrap();

        assert_eq!(
            patch["properties"]["tags"]["maxItems"],
            crate::domain::MAX_TAGS
        );
        assert_eq!(
            patch["properties"]["joinedPersonId"]["pattern"],
            crate::domain::object_id_pattern()
        );
        assert_eq!(tag["maxLength"], crate::domain::MAX_TAG_CHARS);
    }

    #[test]
    fn the_written_page_is_a_serialised_conversation_list() {
        let query = ListQuery::parse(&[("pageSize".to_owned(), "1".to_owned())]).unwrap();
        let links = || PageLinks {
            this: "http://h/conversations?pageSize=1&page=1".into(),
            first: "http://h/conversations?pageSize=1&page=1".into(),
            last: "http://h/conversations?pageSize=1&page=2".into(),
            next: Some("http://h/conversations?pageSize=1&page=2".into()),
            prev: None,
        };
        let items: Vec<Conversation> = Vec::new();
        let served = Served {
            entry: Arc::new(Entry::new(
                serde_json::to_vec(&items).unwrap().into(),
                2,
                Instant::now(),
                crate::reads::invalidate::Epoch::Local(0),
            )),
            source: Source::Miss,
        };

        let written = page_body(&served, &query, 2, &links());
        let expected = ConversationList {
            items,
            page: 1,
            page_size: 1,
            total_items: 2,
            total_pages: 2,
            links: links(),
            next_link: links().next,
        };

        assert_eq!(written, serde_json::to_vec(&expected).unwrap());
        let _: Value = serde_json::from_slice(&written).unwrap();
    }
}

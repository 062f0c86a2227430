//! The conversation routes: list, read, update.

use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, HttpResponseBuilder, get, patch, web};
use futures_util::StreamExt;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::Caller;
use crate::callers::Scope;
use crate::domain::{
    Conversation, ConversationId, ConversationPatch, ConversationStatus, ConversationType,
    InvalidParam, ListQuery, PatchError, Priority,
};
use crate::error::ApiError;
use crate::public_url::PublicBaseUrl;
use crate::telemetry::RequestId;
use crate::upstream::{BudgetReport, QpienClient};

/// Largest PATCH body accepted; a merge patch of this resource is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub const LIST_PROBLEMS: &[u16] = &[400, 401, 403, 429, 502, 503, 504];
pub const GET_PROBLEMS: &[u16] = &[400, 401, 403, 404, 429, 502, 503, 504];
pub const UPDATE_PROBLEMS: &[u16] = &[400, 401, 403, 404, 413, 415, 422, 429, 502, 503, 504];

/// One page of conversations with its paging metadata and links.
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
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// Only conversations in this status.
    status: Option<ConversationStatus>,
    /// Only conversations of this priority.
    priority: Option<Priority>,
    /// Only starred (`true`) or only unstarred (`false`) conversations.
    starred: Option<bool>,
    /// Only conversations of this type.
    #[param(rename = "type")]
    kind: Option<ConversationType>,
    /// Only conversations carrying the tag of this name, e.g. `vip`.
    // No `example`: Swagger UI would pre-fill it, and "Try it out" would filter by surprise.
    #[param(min_length = 1, max_length = 64)]
    tag: Option<String>,
    /// Page number, from 1.
    #[param(minimum = 1, maximum = 100000, default = 1)]
    page: Option<u32>,
    /// Conversations per page.
    #[param(rename = "pageSize", minimum = 1, maximum = 100, default = 20)]
    page_size: Option<u32>,
}

/// List conversations
///
/// Returns one page of conversations, filtered by status, priority, starred, type and
/// tag. Links to the neighbouring pages are in the body (`links`) and in the `Link`
/// header. An unknown parameter, an unknown enum value or an out-of-range number is a
/// 400 problem naming each offending parameter.
#[utoipa::path(
    tag = "Conversations",
    operation_id = "listConversations",
    params(ListParams),
    responses((status = 200, description = "One page of conversations.", body = ConversationList,
        headers(("Link" = String, description = "RFC 8288 links to the first, last, next and previous pages.")))),
    security(("bearer" = []), ())
)]
#[get("/conversations")]
pub async fn list_conversations(
    req: HttpRequest,
    caller: Caller,
    client: web::Data<QpienClient>,
    base: web::Data<PublicBaseUrl>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let pairs =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map_err(|_| {
            ApiError::InvalidParameters(vec![InvalidParam::parameter(
                "query",
                "the query string is not valid URL encoding",
            )])
        })?;
    let query = ListQuery::parse(&pairs).map_err(ApiError::InvalidParameters)?;
    let page = client
        .list_conversations(&caller.0, &request_id.0, &query)
        .await?;

    let total_pages = page.total_items.div_ceil(query.page_size.into());
    let page_url = |n: u64| base.page_url(&req, &pairs, n);
    let current = u64::from(query.page);
    let links = PageLinks {
        this: page_url(current),
        first: page_url(1),
        last: page_url(total_pages.max(1)),
        next: (current < total_pages).then(|| page_url(current + 1)),
        prev: (current > 1).then(|| page_url((current - 1).min(total_pages.max(1)))),
    };
    let link_header = link_header(&links);
    Ok(
        rate_headers(HttpResponse::Ok(), client.budget_report(&caller.0))
            .insert_header((header::LINK, link_header))
            .json(ConversationList {
                items: page.items,
                page: query.page,
                page_size: query.page_size,
                total_items: page.total_items,
                total_pages,
                links,
            }),
    )
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
#[utoipa::path(
    tag = "Conversations",
    operation_id = "getConversation",
    params(("id" = String, Path, description = "Id of the conversation: 24 hexadecimal digits (either case).",
        pattern = "^[0-9a-fA-F]{24}$", example = "6650a1000000000000000001")),
    responses((status = 200, description = "The conversation.", body = Conversation)),
    security(("bearer" = []), ())
)]
#[get("/conversations/{id}")]
pub async fn get_conversation(
    id: web::Path<String>,
    caller: Caller,
    client: web::Data<QpienClient>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let id = parse_id(&id)?;
    let conversation = client
        .get_conversation(&caller.0, &request_id.0, &id)
        .await?;
    Ok(rate_headers(HttpResponse::Ok(), client.budget_report(&caller.0)).json(conversation))
}

/// Update a conversation
///
/// Applies a JSON Merge Patch (RFC 7396) to the updatable fields: `status`, `starred`,
/// `priority`, `tags` (tag names; the array replaces the set, `null` clears it) and
/// `joinedPersonId` (`null` removes the agent). Send it as
/// `application/merge-patch+json`; `application/json` is accepted too, for clients that
/// cannot choose a media type. Every unknown, read-only or invalid member is listed in a
/// 422 problem; nothing is sent to Qpien then. Returns the updated conversation.
#[utoipa::path(
    tag = "Conversations",
    operation_id = "updateConversation",
    params(("id" = String, Path, description = "Id of the conversation: 24 hexadecimal digits (either case).",
        pattern = "^[0-9a-fA-F]{24}$", example = "6650a1000000000000000001")),
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
#[patch("/conversations/{id}")]
pub async fn update_conversation(
    req: HttpRequest,
    id: web::Path<String>,
    caller: Caller,
    payload: web::Payload,
    client: web::Data<QpienClient>,
    request_id: web::ReqData<RequestId>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Write)?;
    let id = parse_id(&id)?;
    check_media_type(&req)?;
    let body = read_body(&req, payload).await?;
    let patch = ConversationPatch::parse(&body).map_err(|e| match e {
        PatchError::Malformed(why) => ApiError::MalformedBody(why),
        PatchError::Invalid(errors) => ApiError::InvalidBody(errors),
    })?;
    let conversation = client
        .update_conversation(&caller.0, &request_id.0, &id, &patch)
        .await?;
    Ok(rate_headers(HttpResponse::Ok(), client.budget_report(&caller.0)).json(conversation))
}

/// The remaining upstream budget of the caller's credential, as `X-RateLimit-*` and the
/// IETF `RateLimit-Policy` / `RateLimit` fields.
fn rate_headers(mut response: HttpResponseBuilder, report: BudgetReport) -> HttpResponseBuilder {
    let reset = report.reset.as_secs() + u64::from(report.reset.subsec_nanos() > 0);
    response
        .insert_header(("X-RateLimit-Limit", report.limit.to_string()))
        .insert_header(("X-RateLimit-Remaining", report.remaining.to_string()))
        .insert_header(("X-RateLimit-Reset", reset.to_string()))
        .insert_header((
            "RateLimit-Policy",
            format!("\"qpien\";q={};w=60", report.limit),
        ))
        .insert_header((
            "RateLimit",
            format!("\"qpien\";r={};t={reset}", report.remaining),
        ));
    response
}

/// The body, refused with 413 past `MAX_BODY_BYTES` without reading the rest.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::MalformedBody(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    joined_person_id: Option<String>,
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

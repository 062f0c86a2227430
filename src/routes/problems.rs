//! `GET /problems/{slug}`: what a problem `type` means, so the URI in every problem body
//! leads somewhere a person can read.

use actix_web::{HttpResponse, web};

use crate::error::{ApiError, PROBLEM_KINDS};

/// Explain a problem type
///
/// Every problem body's `type` is `/problems/{slug}`; this answers, in plain text, what
/// that kind of problem means, its HTTP status and what to do about it.
#[utoipa::path(
    get,
    path = "/problems/{slug}",
    tag = "Problems",
    operation_id = "describeProblem",
    params(("slug" = String, Path, description = "The last segment of a problem `type`.", example = "rate-limited")),
    responses((status = 200, description = "The explanation, for a person to read.",
        content_type = "text/plain", body = String,
        example = "Rate limit exhausted (HTTP 429)\n\ntype: /problems/rate-limited\n\n…\n"))
)]
pub async fn describe(slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let kind = PROBLEM_KINDS
        .iter()
        .find(|k| k.slug == slug.as_str())
        .ok_or(ApiError::RouteNotFound)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "{} (HTTP {})\n\ntype: /problems/{}\n\n{}\n",
            kind.title, kind.status, kind.slug, kind.explanation
        )))
}

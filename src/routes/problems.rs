//! `GET /problems/{slug}`: what a problem `type` means, so the URI in every problem body
//! leads somewhere a person can read.

use actix_web::{HttpResponse, web};

use crate::error::{ApiError, PROBLEM_KINDS};

pub async fn describe(slug: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (slug, status, title, text) = PROBLEM_KINDS
        .iter()
        .find(|k| k.0 == slug.as_str())
        .ok_or(ApiError::RouteNotFound)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(format!(
            "{title} (HTTP {status})\n\ntype: /problems/{slug}\n\n{text}\n"
        )))
}

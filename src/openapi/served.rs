//! HTTP caching and compression of the documents and Swagger UI's files: each answer
//! carries a strong `ETag` of the bytes sent and an explicit `Cache-Control`, a matching
//! `If-None-Match` gets 304, and a client that accepts gzip gets it.
//!
//! The tag is taken over the bytes after compression, so the gzip and the identity
//! representations have tags of their own, as RFC 9110 §8.8.3 asks of strong tags.
//! Only these routes are wrapped: the API's answers (and any streamed one) never go
//! through the buffering done here.

use actix_web::body::{BoxBody, MessageBody, to_bytes};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpResponse};

use crate::public_url::PublicBaseUrl;
use crate::reads::etag::{Condition, ETag};

/// How long a shared or private cache may keep a document that only `PUBLIC_BASE_URL`
/// and this build determine: short, so a new version of the service is seen soon.
pub const STABLE: &str = "public, max-age=300";

/// For a document whose `servers` (or a collection's base URL) came from the request's
/// `Host` or `X-Forwarded-*`: no cache may keep it, lest one caller's forged header
/// point everyone's "Try it out" at another host.
pub const PER_REQUEST: &str = "no-store";

/// The `Cache-Control` of a document rendered for the server `base` resolves to.
pub fn cache_control(base: &PublicBaseUrl) -> HeaderValue {
    HeaderValue::from_static(if base.is_configured() {
        STABLE
    } else {
        PER_REQUEST
    })
}

/// Buffers a successful answer, tags it, and answers 304 when the caller holds it.
pub async fn validate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let condition = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Condition::parse(v).ok());
    let response = next.call(req).await?;
    if response.status() != actix_web::http::StatusCode::OK {
        return Ok(response.map_into_boxed_body());
    }
    let (req, response) = response.into_parts();
    let (mut response, body) = response.into_parts();
    let bytes = to_bytes(body).await.map_err(|e| {
        let e: Box<dyn std::error::Error> = e.into();
        actix_web::error::ErrorInternalServerError(e.to_string())
    })?;
    let etag = ETag::of(&bytes);
    response
        .headers_mut()
        .insert(header::ETAG, etag.header_value());
    if condition.is_some_and(|c| !c.none_match(etag)) {
        let mut not_modified = HttpResponse::NotModified();
        for name in [header::ETAG, header::CACHE_CONTROL, header::VARY] {
            for value in response.headers().get_all(&name) {
                not_modified.append_header((name.clone(), value.clone()));
            }
        }
        return Ok(ServiceResponse::new(req, not_modified.finish()));
    }
    Ok(ServiceResponse::new(
        req,
        response.set_body(BoxBody::new(bytes)),
    ))
}

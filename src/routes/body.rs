//! Request bodies read with a bound: refused with 413 past it, without reading the rest.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use crate::error::ApiError;

/// The largest JSON body a route reads. Every body the schemas allow fits well within it:
/// a merge patch of a conversation is a few hundred bytes, and a subscription with the
/// longest URL and description, every character written as a JSON escape of a surrogate
/// pair (12 bytes), about 31 KiB; past it, 413 before anything is parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body, refused with 413 when its declared length or the bytes received pass
/// `limit`: nothing past the limit is read.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::MalformedBody(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

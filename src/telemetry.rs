//! Logging: the subscriber, the request-id middleware and the root span of every
//! request, so each log line of a request carries its `request_id`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::RootSpanBuilder;
use tracing_subscriber::EnvFilter;

use crate::error::{REQUEST, RequestContext};
use crate::settings::LogFormat;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber: `RUST_LOG` filters (default `info`), `LOG_FORMAT`
/// picks text or JSON. Safe to call more than once (tests); later calls do nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The id of the request being served: the caller's `X-Request-Id` when it is a sane
/// token, else a new UUID. Available to handlers as `web::ReqData<RequestId>`.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn acceptable(value: &HeaderValue) -> Option<String> {
    let text = value.to_str().ok()?;
    let ok = (1..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| text.to_owned())
}

/// Outermost middleware: fixes the request id, puts it where handlers, problem bodies
/// and the root span find it, and returns it on every response.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(acceptable)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let context = RequestContext {
        id: id.clone(),
        path: req.path().to_owned(),
    };
    let mut response = REQUEST.scope(context, next.call(req)).await?;
    response.headers_mut().insert(
        X_REQUEST_ID,
        HeaderValue::from_str(&id).expect("checked or generated ASCII"),
    );
    Ok(response)
}

/// Root span with our request id instead of tracing-actix-web's own.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // The fields are worked out inside the macro, so only when the span is enabled.
        tracing::info_span!(
            "http",
            http.method = %request.method(),
            http.route = %crate::routes::label::route_label(request.path()),
            http.target = %request.path(),
            http.status_code = tracing::field::Empty,
            request_id = %request
                .extensions()
                .get::<RequestId>()
                .map_or("", |r| r.0.as_str()),
            caller.key_id = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let status = match outcome {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        span.record("http.status_code", status.as_u16());
        span.in_scope(|| tracing::info!(http.status_code = status.as_u16(), "request finished"));
    }
}

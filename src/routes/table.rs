//! Routing without a regex on the request path. actix-router compiles every pattern with a
//! `{param}` into a regex and runs it for each request that reaches it, and asking a
//! request for its pattern before routing (for the root span) runs them again. So:
//!
//! - `/conversations/{id}` is one static-prefix service that splits off the id segment
//!   itself and hands the request to the handler of its method;
//! - `route_label` names the pattern a path matches, for logs and metrics, by comparing
//!   strings.
//!
//! The handlers stay the single source of the OpenAPI operations: `OneConversation`
//! hands their `#[utoipa::path]` items to the document.

use std::rc::Rc;

use actix_web::dev::{
    AppService, HttpServiceFactory, ResourceDef, ResourceMap, Service, ServiceFactory,
    ServiceRequest, fn_factory, fn_service,
};
use actix_web::http::Method;
use actix_web::web;
use utoipa::openapi::path::Paths;
use utoipa::openapi::{RefOr, schema::Schema};
use utoipa_actix_web::OpenApiFactory;

use super::conversations::{__path_get_conversation, __path_update_conversation};
use super::conversations::{get_conversation, update_conversation};

/// What the metrics and the root span call a path that no route matches.
pub const UNMATCHED: &str = "unmatched";

/// The route pattern `path` matches, as actix's `match_pattern` would name it (a test
/// holds the two together); `UNMATCHED` for none.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/conversations" => "/conversations",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/openapi.json" => "/openapi.json",
        "/openapi-3.0.json" => "/openapi-3.0.json",
        "/swagger-2.0.json" => "/swagger-2.0.json",
        "/docs" => "/docs",
        "/" => "/",
        _ if one_segment_after(path, "/conversations").is_some() => "/conversations/{id}",
        _ if one_segment_after(path, "/problems").is_some() => "/problems/{slug}",
        _ if path.starts_with("/docs/") => "/docs/{_:.*}",
        _ => UNMATCHED,
    }
}

/// `segment` when `path` is `prefix/segment`, the segment not empty and without `/`: what
/// a `{param}` after `prefix` matches.
fn one_segment_after<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    path.strip_prefix(prefix)?
        .strip_prefix('/')
        .filter(|segment| !segment.is_empty() && !segment.contains('/'))
}

/// `GET` and `PATCH /conversations/{id}`: registered under the static prefix
/// `/conversations`, so routing it compares strings; anything else under the prefix
/// goes to `unmatched`, as it would from the application's default service.
pub struct OneConversation;

impl HttpServiceFactory for OneConversation {
    fn register(self, config: &mut AppService) {
        let prefix = "/conversations";
        // What `match_pattern` reports for these requests, should anything ask.
        let mut patterns = ResourceMap::new(ResourceDef::root_prefix(prefix));
        patterns.add(&mut ResourceDef::new("/{id}"), None);
        let factory = fn_factory(|| async {
            let get = web::to(get_conversation).new_service(()).await?;
            let patch = web::to(update_conversation).new_service(()).await?;
            let other = web::to(crate::startup::unmatched).new_service(()).await?;
            let services = Rc::new((get, patch, other));
            Ok::<_, ()>(fn_service(move |mut req: ServiceRequest| {
                let (get, patch, other) = &*services;
                let segment = req
                    .match_info()
                    .unprocessed()
                    .strip_prefix('/')
                    .filter(|s| !s.is_empty() && !s.contains('/'))
                    .map(str::to_owned);
                let (Some(id), Some(handler)) = (segment, by_method(get, patch, &req)) else {
                    return other.call(req);
                };
                req.match_info_mut().add_static("id", id);
                handler.call(req)
            }))
        });
        config.register_service(
            ResourceDef::root_prefix(prefix),
            None,
            factory,
            Some(Rc::new(patterns)),
        );
    }
}

/// The handler of a method that `/conversations/{id}` answers.
fn by_method<'s, S>(get: &'s S, patch: &'s S, req: &ServiceRequest) -> Option<&'s S> {
    match *req.method() {
        Method::GET => Some(get),
        Method::PATCH => Some(patch),
        _ => None,
    }
}

impl OpenApiFactory for OneConversation {
    fn paths(&self) -> Paths {
        let mut paths = __path_get_conversation.paths();
        paths.merge(__path_update_conversation.paths());
        paths
    }

    fn schemas(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) {
        __path_get_conversation.schemas(schemas);
        __path_update_conversation.schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    /// Each pattern of the application, and paths that must not match it, labelled as
    /// actix's own `ResourceDef` matching would.
    #[test]
    fn labels_agree_with_actix_pattern_matching() {
        let patterns = [
            "/conversations",
            "/conversations/{id}",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/openapi-3.0.json",
            "/swagger-2.0.json",
            "/problems/{slug}",
            "/docs/{_:.*}",
            "/docs",
            "/",
        ];
        let paths = [
            "/conversations",
            "/conversations/",
            "/conversations/6650a1000000000000000001",
            "/conversations/x/",
            "/conversations/x/y",
            "/conversationsx",
            "//conversations",
            "/healthz",
            "/healthz/",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/openapi-3.0.json",
            "/swagger-2.0.json",
            "/problems/rate-limited",
            "/problems/",
            "/problems/a/b",
            "/docs",
            "/docs/",
            "/docs/index.html",
            "/docs/a/b.css",
            "/",
            "",
            "/nope",
        ];
        for path in paths {
            let expected = patterns
                .iter()
                .find(|p| ResourceDef::new(**p).is_match(path))
                .copied()
                .unwrap_or(UNMATCHED);
            assert_eq!(route_label(path), expected, "{path:?}");
        }
    }

    #[actix_web::test]
    async fn other_paths_and_methods_under_the_prefix_are_unmatched() {
        let app =
            actix_web::test::init_service(actix_web::App::new().service(OneConversation)).await;
        let req = TestRequest::get().uri("/conversations/x/y").to_request();
        let response = actix_web::test::call_service(&app, req).await;
        assert_eq!(response.status(), 404);
        let req = TestRequest::delete().uri("/conversations/abc").to_request();
        let response = actix_web::test::call_service(&app, req).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers().get("allow").unwrap(), "GET, PATCH");
    }
}

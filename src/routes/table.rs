//! Routing without a regex on the request path. actix-router compiles every pattern with a
//! `{param}` into a regex and runs it for each request that reaches it, and asking a
//! request for its pattern before routing (for the root span) runs them again. So:
//!
//! - `/conversations/{id}` is one static-prefix service that splits off the id segment
//!   itself and hands the request to the handler of its method;
//! - `label::route_label` names the pattern a path matches, for logs and metrics, by
//!   comparing strings;
//! - `unmatched`, the application's default service, answers what no route takes.
//!
//! The handlers stay the single source of the OpenAPI operations: `OneConversation`
//! hands their `#[utoipa::path]` items to the document.

use std::rc::Rc;

use actix_web::dev::{
    AppService, HttpServiceFactory, ResourceDef, ResourceMap, Service, ServiceFactory,
    ServiceRequest, fn_factory, fn_service,
};
use actix_web::http::Method;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use utoipa::openapi::path::Paths;
use utoipa::openapi::{RefOr, schema::Schema};
use utoipa_actix_web::OpenApiFactory;

use super::conversations::{__path_get_conversation, __path_update_conversation};
use super::conversations::{get_conversation, update_conversation};
use super::label::one_segment_after;
use crate::error::ApiError;

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
            let other = web::to(unmatched).new_service(()).await?;
            let services = Rc::new((get, patch, other));
            Ok::<_, ()>(fn_service(move |mut req: ServiceRequest| {
                let (get, patch, other) = &*services;
                // Past the prefix, as the route label reads it.
                let segment =
                    one_segment_after(req.match_info().unprocessed(), "").map(str::to_owned);
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

/// Paths that exist with other methods get 405 and `Allow`; the rest 404.
pub async fn unmatched(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let segments: Vec<&str> = req.path().trim_matches('/').split('/').collect();
    let allow = match segments.as_slice() {
        ["conversations"] => Some("GET"),
        ["conversations", _] => Some("GET, PATCH"),
        ["healthz"] | ["readyz"] | ["metrics"] | ["problems", _] => Some("GET"),
        ["openapi.json"] | ["openapi-3.0.json"] | ["swagger-2.0.json"] => Some("GET"),
        _ => None,
    };
    match allow {
        Some(allow) => {
            let mut response =
                actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            Ok(response)
        }
        None => Err(ApiError::RouteNotFound),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

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

//! Routing without a regex on the request path. actix-router compiles every pattern with a
//! `{param}` into a regex and runs it for each request that reaches it, and asking a
//! request for its pattern before routing (for the root span) runs them again. So:
//!
//! - the operations whose path has a `{param}` are served by [`Parameterised`]: one
//!   static-prefix service per prefix, which matches the rest of the path against the
//!   registry's patterns by comparing strings and hands the request to the handler of its
//!   method;
//! - `label::route_label` names the pattern a path matches, for logs and metrics, the
//!   same way;
//! - `unmatched`, the application's default service, answers what no route takes, with
//!   `Allow` derived from the registry.
//!
//! The handlers stay the single source of the OpenAPI operations: `Parameterised` hands
//! their `#[utoipa::path]` items to the document.

use std::rc::Rc;

use actix_web::dev::{
    AppService, HttpServiceFactory, ResourceDef, ResourceMap, Service, ServiceFactory,
    ServiceRequest, fn_factory, fn_service,
};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, Route, web};
use utoipa::openapi::path::Paths;
use utoipa::openapi::{RefOr, schema::Schema};
use utoipa_actix_web::OpenApiFactory;

use super::registry::{self, Operation};
use crate::error::ApiError;

/// A handler with a path parameter: its registry row, how to make its actix route (once
/// per worker), and its OpenAPI item.
struct Handler {
    operation: &'static Operation,
    route: fn() -> Route,
    document: Box<dyn OpenApiFactory>,
}

/// An operation and how to make its handler's route.
type Served = (&'static Operation, fn() -> Route);

/// The operations whose path has a `{param}`, registered under their static prefixes.
#[derive(Default)]
pub struct Parameterised {
    handlers: Vec<Handler>,
}

impl Parameterised {
    /// Serves `operation` with the handler `route` makes; `document` is the handler's
    /// `#[utoipa::path]` item (`__path_<handler>`).
    pub fn with(
        mut self,
        operation: &'static Operation,
        route: fn() -> Route,
        document: impl OpenApiFactory + 'static,
    ) -> Self {
        assert!(
            operation.path.contains('{'),
            "{} has no path parameter: register its handler as a plain service",
            operation.id
        );
        self.handlers.push(Handler {
            operation,
            route,
            document: Box::new(document),
        });
        self
    }
}

/// The literal part of `pattern` before its parameter, without the trailing `/`.
fn prefix(pattern: &str) -> &str {
    let open = pattern.find('{').unwrap_or(pattern.len());
    pattern[..open].trim_end_matches('/')
}

impl HttpServiceFactory for Parameterised {
    fn register(self, config: &mut AppService) {
        let mut prefixes: Vec<&'static str> = Vec::new();
        for handler in &self.handlers {
            let prefix = prefix(handler.operation.path);
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        for prefix in prefixes {
            let here: Vec<Served> = self
                .handlers
                .iter()
                .filter(|h| self::prefix(h.operation.path) == prefix)
                .map(|h| (h.operation, h.route))
                .collect();
            register_prefix(config, prefix, here);
        }
    }
}

fn register_prefix(config: &mut AppService, prefix: &'static str, handlers: Vec<Served>) {
    // What `match_pattern` reports for these requests, should anything ask.
    let mut patterns = ResourceMap::new(ResourceDef::root_prefix(prefix));
    for (operation, _) in &handlers {
        patterns.add(&mut ResourceDef::new(&operation.path[prefix.len()..]), None);
    }
    let handlers = Rc::new(handlers);
    let factory = fn_factory(move || {
        let handlers = handlers.clone();
        async move {
            let mut services = Vec::with_capacity(handlers.len());
            for (operation, route) in handlers.iter() {
                // The pattern past the prefix, and its parameter's name.
                let rest = &operation.path[prefix.len()..];
                let name = registry::param_name(rest).expect("a parameterised pattern");
                let service = route().new_service(()).await?;
                services.push((*operation, rest, name, service));
            }
            let other = web::to(unmatched).new_service(()).await?;
            let services = Rc::new((services, other));
            Ok::<_, ()>(fn_service(move |mut req: ServiceRequest| {
                let (services, other) = &*services;
                if registry::is_literal_route(req.path()) {
                    return other.call(req);
                }
                let found = services
                    .iter()
                    .find_map(|(operation, rest, name, service)| {
                        let value = registry::param(rest, req.match_info().unprocessed())?;
                        (operation.method == req.method())
                            .then(|| (*name, value.to_owned(), service))
                    });
                let Some((name, value, service)) = found else {
                    return other.call(req);
                };
                req.match_info_mut().add_static(name, value);
                service.call(req)
            }))
        }
    });
    config.register_service(
        ResourceDef::root_prefix(prefix),
        None,
        factory,
        Some(Rc::new(patterns)),
    );
}

impl OpenApiFactory for Parameterised {
    fn paths(&self) -> Paths {
        let mut paths = Paths::new();
        for handler in &self.handlers {
            paths.merge(handler.document.paths());
        }
        paths
    }

    fn schemas(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) {
        for handler in &self.handlers {
            handler.document.schemas(schemas);
        }
    }
}

/// Paths that exist with other methods get 405 and `Allow`; the rest 404.
pub async fn unmatched(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    match registry::allowed(req.path()) {
        Some(allow) => {
            let mut response =
                actix_web::ResponseError::error_response(&ApiError::MethodNotAllowed);
            if let Ok(value) = header::HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            Ok(response)
        }
        None => Err(ApiError::RouteNotFound),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::super::conversations::{__path_get_conversation, get_conversation};
    use super::*;

    #[actix_web::test]
    async fn other_paths_and_methods_under_the_prefix_are_unmatched() {
        let routes = Parameterised::default().with(
            &registry::GET_CONVERSATION,
            || web::to(get_conversation),
            __path_get_conversation,
        );
        let app = actix_web::test::init_service(actix_web::App::new().service(routes)).await;
        let req = TestRequest::get().uri("/conversations/x/y").to_request();
        let response = actix_web::test::call_service(&app, req).await;
        assert_eq!(response.status(), 404);
        let req = TestRequest::delete().uri("/conversations/abc").to_request();
        let response = actix_web::test::call_service(&app, req).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers().get("allow").unwrap(), "GET, PATCH");
    }
}

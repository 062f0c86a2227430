//! The admin listener (`ADMIN_PORT`): liveness, readiness and the metrics on a port of
//! their own, so a network policy can let orchestrators and Prometheus reach them
//! without letting callers read key ids and traffic from `/metrics`. With it, the public
//! port answers 404 for those paths; the OpenAPI documents still describe them, as the
//! routes still exist.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, Resource, web};
use tracing_actix_web::TracingLogger;

use crate::callers::KeyStore;
use crate::error::ApiError;
use crate::events::QpienWebhooks;
use crate::metrics::{self, Metrics};
use crate::routes;
use crate::startup::StartupError;
use crate::telemetry::{RequestSpan, request_context};
use crate::upstream::QpienClient;

/// The paths served on the admin port only, when there is one.
pub const PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// What the admin routes read, shared with the public application.
#[derive(Clone)]
pub struct Shared {
    pub client: web::Data<QpienClient>,
    pub metrics: web::Data<Metrics>,
    pub keys: Option<web::Data<KeyStore>>,
    pub webhooks: Option<web::Data<QpienWebhooks>>,
}

/// The running admin server and the port it got (`ADMIN_PORT=0` picks one, in tests).
pub struct Admin {
    pub server: Server,
    pub port: u16,
}

/// Binds `address` and serves the admin routes there. Its signals are the public
/// server's business: it keeps answering while the public port drains, and is stopped
/// after it (`Admin::stop_after`).
pub fn start(address: SocketAddr, shared: Shared) -> Result<Admin, StartupError> {
    let listener = TcpListener::bind(address).map_err(|source| StartupError::Bind {
        address: address.to_string(),
        source,
    })?;
    let port = listener
        .local_addr()
        .expect("a bound listener has an address")
        .port();
    let server = HttpServer::new(move || {
        let mut app = App::new()
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(from_fn(metrics::record))
            .wrap(from_fn(request_context))
            .app_data(shared.client.clone())
            .app_data(shared.metrics.clone());
        if let Some(keys) = &shared.keys {
            app = app.app_data(keys.clone());
        }
        if let Some(webhooks) = &shared.webhooks {
            app = app.app_data(webhooks.clone());
        }
        app.configure(routes::configure_admin)
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(ApiError::RouteNotFound)
            }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)
    .map_err(|source| StartupError::Bind {
        address: address.to_string(),
        source,
    })?
    .run();
    Ok(Admin { server, port })
}

/// For the public application: the admin paths as 404 problems, registered before the
/// routes so they win.
pub fn withheld() -> Resource {
    web::resource(PATHS.to_vec()).to(|| async { Err::<HttpResponse, _>(ApiError::RouteNotFound) })
}

impl Admin {
    /// Runs the admin server until `public` (the public server) ends, then stops it.
    pub async fn stop_after<T>(self, public: impl Future<Output = T>) -> T {
        let handle = self.server.handle();
        let admin = tokio::spawn(self.server);
        let result = public.await;
        handle.stop(true).await;
        // It stopped or it failed: the public server's result is what matters now.
        let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
        result
    }
}

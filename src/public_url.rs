//! Where callers reach the service: `PUBLIC_BASE_URL`, else the address a request came
//! to. Paging links and the OpenAPI documents' `servers` both ask here, so they agree.
//! What comes from the request is the caller's to choose (`Host`, `X-Forwarded-*`), so
//! documents made from it are served `no-store` (`openapi::served`), and a service
//! reachable from other machines without `PUBLIC_BASE_URL` is warned about at start-up.

use actix_web::HttpRequest;
use url::Url;

use crate::settings::Settings;

/// Where `cargo run` serves with no configuration; the committed documents name it.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// `PUBLIC_BASE_URL`, shared with the handlers that build absolute URLs.
pub struct PublicBaseUrl(pub Option<Url>);

impl PublicBaseUrl {
    /// `PUBLIC_BASE_URL` of `settings`, warning when a service listening beyond loopback
    /// has none: every link it makes then names whatever host the caller said. Not an
    /// error: the image's default `HOST=0.0.0.0` with no `PUBLIC_BASE_URL` is the
    /// documented `docker run` and test set-up, and `no-store` keeps caches out of it.
    pub fn for_settings(settings: &Settings) -> Self {
        if settings.public_base_url.is_none() && !settings.host.is_loopback() {
            tracing::warn!(
                host = %settings.host,
                "PUBLIC_BASE_URL is unset on a non-loopback HOST: paging links and the OpenAPI servers name the host each request gives (Host, X-Forwarded-Host), and the documents are served Cache-Control: no-store; set PUBLIC_BASE_URL to the address callers use"
            );
        }
        Self(settings.public_base_url.clone())
    }

    /// Whether links come from `PUBLIC_BASE_URL` rather than from the request.
    pub fn is_configured(&self) -> bool {
        self.0.is_some()
    }

    /// Where callers reach the service: `PUBLIC_BASE_URL`, else the scheme and host the
    /// request came to (else, for a host that is no URL, the default address).
    pub fn resolve(&self, req: &HttpRequest) -> Url {
        if let Some(base) = &self.0 {
            return base.clone();
        }
        let info = req.connection_info();
        Url::parse(&format!("{}://{}/", info.scheme(), info.host()))
            .unwrap_or_else(|_| default_server())
    }
}

impl PublicBaseUrl {
    /// The absolute URL of `path` (a route pattern without parameters) with `query`,
    /// under `PUBLIC_BASE_URL`'s own path when it has one.
    pub fn url_of(&self, req: &HttpRequest, path: &str, query: &[(&str, String)]) -> String {
        let mut url = self.resolve(req);
        let joined = format!("{}{path}", url.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.into()
    }
}

pub fn default_server() -> Url {
    Url::parse(DEFAULT_SERVER).expect("a valid URL")
}

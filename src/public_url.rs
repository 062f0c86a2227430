//! Where callers reach the service: `PUBLIC_BASE_URL`, else the address a request came
//! to. Paging links and the OpenAPI documents' `servers` both ask here, so they agree.

use actix_web::HttpRequest;
use url::Url;

/// Where `cargo run` serves with no configuration; the committed documents name it.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// `PUBLIC_BASE_URL`, shared with the handlers that build absolute URLs.
pub struct PublicBaseUrl(pub Option<Url>);

impl PublicBaseUrl {
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

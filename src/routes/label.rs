//! The route pattern a request path matches, for the root span and the metrics: worked
//! out from the registry's patterns by comparing strings, without asking actix (whose
//! patterns with a `{param}` are regexes, run again for each request that asks). The
//! registry imports only plain enums, so the telemetry and the metrics can name routes
//! without depending on the handlers.

use super::registry::{OPERATIONS, PAGES, matches};

/// What the metrics and the root span call a path that no route matches.
pub const UNMATCHED: &str = "unmatched";

/// Every route pattern: the operations', then the pages'.
fn patterns() -> impl Iterator<Item = &'static str> {
    OPERATIONS
        .iter()
        .map(|op| op.path)
        .chain(PAGES.iter().map(|(pattern, _)| *pattern))
}

/// The route pattern `path` matches, as actix's `match_pattern` would name it (a test
/// holds the two together); `UNMATCHED` for none. A pattern without a parameter wins
/// over one with, as a static route registered first does.
pub fn route_label(path: &str) -> &'static str {
    patterns()
        .find(|pattern| *pattern == path)
        .or_else(|| patterns().find(|pattern| pattern.contains('{') && matches(pattern, path)))
        .unwrap_or(UNMATCHED)
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

    use super::*;

    /// Each pattern of the application, and paths that must not match it, labelled as
    /// actix's own `ResourceDef` matching would.
    #[test]
    fn labels_agree_with_actix_pattern_matching() {
        let patterns: Vec<&str> = patterns().collect();
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
}

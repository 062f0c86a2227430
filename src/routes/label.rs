//! The route pattern a request path matches, for the root span and the metrics: worked
//! out by comparing strings, without asking actix (whose patterns with a `{param}` are
//! regexes, run again for each request that asks). This file imports nothing of the
//! crate, so the telemetry and the metrics can name routes without depending on them.

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
pub(super) fn one_segment_after<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    path.strip_prefix(prefix)?
        .strip_prefix('/')
        .filter(|segment| !segment.is_empty() && !segment.contains('/'))
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ResourceDef;

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
}

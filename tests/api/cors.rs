//! CORS: which pages of other sites may call the service from a browser
//! (`CORS_ALLOWED_ORIGINS`), what a preflight allows, and what a page may read.

use qpien_rest::settings::CorsOrigins;
use qpien_rest::startup::{Application, StartupError};
use reqwest::Response;

use crate::helpers::{Setup, TestApp, spawn_app, spawn_app_with};

const TOOL: &str = "https://tools.example.com";

async fn app_allowing(origins: CorsOrigins, setup: Setup) -> TestApp {
    spawn_app_with(Setup {
        settings: Box::new(move |s| s.cors = origins),
        ..setup
    })
    .await
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// A header list (`a, b`) as lower-case names.
fn names(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

async fn get_from(app: &TestApp, origin: &str) -> Response {
    app.http
        .get(format!("{}/conversations?pageSize=2", app.address))
        .header("Origin", origin)
        .send()
        .await
        .unwrap()
}

async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/conversations/6650a1000000000000000001", app.address),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "content-type, if-match, if-none-match, authorization, x-request-id, x-api-key",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_page_of_an_allowed_origin_may_read_the_answer_and_its_headers() {
    let app = app_allowing(CorsOrigins::List(vec![TOOL.into()]), Setup::default()).await;

    let response = get_from(&app, TOOL).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(TOOL));
    let exposed = names(header(&response, "access-control-expose-headers"));
    for name in [
        "etag",
        "link",
        "retry-after",
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-request-id",
        "location",
        "cache-status",
        "age",
    ] {
        assert!(
            exposed.contains(&name.to_owned()),
            "{name} not exposed: {exposed:?}"
        );
    }
    assert!(names(header(&response, "vary")).contains(&"origin".to_owned()));
}

#[tokio::test]
async fn a_page_of_another_origin_gets_no_cors_headers() {
    let app = app_allowing(CorsOrigins::List(vec![TOOL.into()]), Setup::default()).await;

    let response = get_from(&app, "https://evil.example.net").await;
    let preflight = preflight(&app, "https://evil.example.net").await;

    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&preflight, "access-control-allow-origin"), None);
    assert!(!preflight.status().is_success());
}

#[tokio::test]
async fn a_preflight_allows_a_merge_patch_with_the_documented_headers_and_goes_nowhere() {
    let app = app_allowing(CorsOrigins::List(vec![TOOL.into()]), Setup::default()).await;

    let response = preflight(&app, TOOL).await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(TOOL));
    let methods = names(header(&response, "access-control-allow-methods"));
    assert!(methods.contains(&"patch".to_owned()) && methods.contains(&"get".to_owned()));
    let allowed = names(header(&response, "access-control-allow-headers"));
    for name in [
        "content-type",
        "if-match",
        "if-none-match",
        "authorization",
        "x-request-id",
        "x-api-key",
    ] {
        assert!(
            allowed.contains(&name.to_owned()),
            "{name} not allowed: {allowed:?}"
        );
    }
    assert_eq!(
        app.upstream_requests(),
        0,
        "a preflight never reaches Qpien"
    );
}

#[tokio::test]
async fn a_preflight_allows_managing_subscriptions_from_a_page() {
    let app = app_allowing(CorsOrigins::List(vec![TOOL.into()]), Setup::default()).await;

    for (method, path) in [
        ("POST", "/subscriptions"),
        ("DELETE", "/subscriptions/sub_x"),
    ] {
        let response = app
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.address))
            .header("Origin", TOOL)
            .header("Access-Control-Request-Method", method)
            .header("Access-Control-Request-Headers", "content-type, x-api-key")
            .send()
            .await
            .unwrap();

        assert_eq!(response.status().as_u16(), 200, "{method} {path}");
        let methods = names(header(&response, "access-control-allow-methods"));
        assert!(
            methods.contains(&method.to_ascii_lowercase()),
            "{method} not allowed: {methods:?}"
        );
    }
}

#[tokio::test]
async fn without_the_setting_there_are_no_cors_headers_at_all() {
    let app = spawn_app().await;

    let response = get_from(&app, TOOL).await;
    let preflight = preflight(&app, TOOL).await;

    assert_eq!(response.status().as_u16(), 200);
    for response in [&response, &preflight] {
        let cors: Vec<_> = response
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(
            cors.is_empty(),
            "CORS headers without the setting: {cors:?}"
        );
    }
    assert_eq!(
        preflight.status().as_u16(),
        405,
        "OPTIONS is no route of ours"
    );
}

#[tokio::test]
async fn any_origin_in_pass_through_mode_is_a_wildcard() {
    let app = app_allowing(CorsOrigins::Any, Setup::pass_through()).await;

    let response = get_from(&app, "https://anywhere.example.org").await;

    assert_eq!(header(&response, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        response.status().as_u16(),
        401,
        "the caller still needs a token"
    );
}

#[tokio::test]
async fn any_origin_in_service_mode_is_refused_at_start_up() {
    let settings = qpien_rest::settings::Settings {
        port: 0,
        cors: CorsOrigins::Any,
        ..Default::default()
    };

    let error = Application::build(settings)
        .await
        .err()
        .expect("start-up refuses it");

    assert!(matches!(error, StartupError::Settings(_)));
    assert!(error.to_string().contains("service mode"), "{error}");
}

//! The contract as served: the three renderings match the committed files, name the
//! right server, are complete, and say what the service really does.

use serde_json::{Value, json};
use url::Url;

use crate::helpers::{Setup, TestApp, assert_problem, header, spawn_app, spawn_app_with};

/// The documents as served to a caller of `cargo run`'s default address, where the
/// committed files say the service is.
async fn served_at_default_address(app: &TestApp, path: &str) -> Value {
    app.http
        .get(format!("{}{path}", app.address))
        .header("Host", "127.0.0.1:8080")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn assert_same(served: &Value, committed: &str, file: &str, version: &str) {
    let committed: Value = serde_json::from_str(committed).unwrap();
    assert!(
        *served == committed,
        "{file} is stale; regenerate it with: cargo run --quiet -- openapi --version {version} > {file}"
    );
}

#[tokio::test]
async fn the_committed_openapi_document_is_what_the_service_serves() {
    let app = spawn_app().await;

    let served = served_at_default_address(&app, "/openapi.json").await;

    assert_same(
        &served,
        include_str!("../../openapi/openapi.json"),
        "openapi/openapi.json",
        "3.1",
    );
    assert_eq!(served["openapi"], "3.1.0");
}

#[tokio::test]
async fn the_committed_openapi_30_document_is_what_the_service_serves() {
    let app = spawn_app().await;

    let served = served_at_default_address(&app, "/openapi-3.0.json").await;

    assert_same(
        &served,
        include_str!("../../openapi/openapi-3.0.json"),
        "openapi/openapi-3.0.json",
        "3.0",
    );
    assert_eq!(served["openapi"], "3.0.3");
    let text = served.to_string();
    assert!(
        !text.contains(r#""type":["#),
        "3.0 has no type arrays; nullable instead"
    );
    assert!(!text.contains(r#""type":"null""#), "3.0 has no null type");
}

#[tokio::test]
async fn the_committed_swagger_20_document_is_what_the_service_serves() {
    let app = spawn_app().await;

    let served = served_at_default_address(&app, "/swagger-2.0.json").await;

    assert_same(
        &served,
        include_str!("../../openapi/swagger-2.0.json"),
        "openapi/swagger-2.0.json",
        "2.0",
    );
    assert_eq!(served["swagger"], "2.0");
    assert!(
        served.to_string().len() < 1_000_000,
        "Power Automate imports at most 1 MB"
    );
    assert_eq!(served["host"], "127.0.0.1:8080");
    assert_eq!(served["basePath"], "/");
    assert_eq!(served["schemes"], json!(["http"]));
    assert_eq!(
        served["securityDefinitions"].as_object().unwrap().len(),
        1,
        "Power Automate takes one security definition"
    );
}

#[tokio::test]
async fn the_documents_name_the_public_base_url_as_their_server() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.public_base_url = Some(Url::parse("https://qpien.example.com/rest").unwrap())
        }),
        ..Default::default()
    })
    .await;

    let v31: Value = app.get("/openapi.json").await.json().await.unwrap();
    let v30: Value = app.get("/openapi-3.0.json").await.json().await.unwrap();
    let v20: Value = app.get("/swagger-2.0.json").await.json().await.unwrap();

    assert_eq!(v31["servers"][0]["url"], "https://qpien.example.com/rest");
    assert_eq!(v30["servers"][0]["url"], "https://qpien.example.com/rest");
    assert_eq!(
        (&v20["host"], &v20["basePath"], &v20["schemes"]),
        (
            &json!("qpien.example.com"),
            &json!("/rest"),
            &json!(["https"])
        )
    );
}

#[tokio::test]
async fn without_a_public_base_url_the_server_is_where_the_document_was_requested() {
    let app = spawn_app().await;

    let served: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .header("Host", "qpien.internal:9000")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(served["servers"][0]["url"], "http://qpien.internal:9000");
}

#[tokio::test]
async fn every_operation_is_complete() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();

    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let name = format!("{method} {path}");
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric()),
                "{name}: operationId {id:?} is not camelCase"
            );
            for field in ["summary", "description"] {
                assert!(
                    operation[field].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: no {field}"
                );
            }
            assert!(operation["tags"][0].is_string(), "{name}: no tag");
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response["headers"]["X-Request-Id"]["required"] == true,
                    "{name} {status}: X-Request-Id undocumented"
                );
                if status.starts_with('4') || status.starts_with('5') {
                    let problem = &response["content"]["application/problem+json"];
                    assert_eq!(
                        problem["schema"]["$ref"], "#/components/schemas/Problem",
                        "{name} {status}: not a problem"
                    );
                    assert!(
                        problem["examples"]
                            .as_object()
                            .is_some_and(|e| !e.is_empty()),
                        "{name} {status}: no example"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_documented_filter_value_is_accepted() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &document["components"]["schemas"];

    for (parameter, schema) in [
        ("status", "ConversationStatus"),
        ("priority", "Priority"),
        ("type", "ConversationType"),
    ] {
        for value in schemas[schema]["enum"].as_array().unwrap() {
            let value = value.as_str().unwrap();

            let response = app
                .list_conversations(&format!("?{parameter}={value}&pageSize=1"))
                .await;

            assert_eq!(
                response.status().as_u16(),
                200,
                "the document offers {parameter}={value}, the route refuses it"
            );
        }
    }
}

/// The documented example of an error is what the service answers, word for word.
#[tokio::test]
async fn a_documented_problem_example_is_the_real_answer() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut example = document["paths"]["/conversations"]["get"]["responses"]["400"]["content"]
        ["application/problem+json"]["examples"]["invalid-parameters"]["value"]
        .clone();

    let mut problem = assert_problem(
        app.list_conversations("?status=done&pageSize=500").await,
        400,
    )
    .await;

    for body in [&mut example, &mut problem] {
        body.as_object_mut().unwrap().remove("requestId");
    }
    assert_eq!(problem, example);
}

#[tokio::test]
async fn swagger_ui_offers_the_three_renderings() {
    let app = spawn_app().await;

    let config = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();

    for path in ["openapi.json", "openapi-3.0.json", "swagger-2.0.json"] {
        assert!(config.contains(path), "Swagger UI does not offer {path}");
    }
}

/// What Postman and Swagger UI's "Try it out" send: every parameter filled with its
/// example, the body with each of its examples. Each must succeed on the demo data, and
/// the list must not come back empty.
#[tokio::test]
async fn every_documented_example_request_succeeds_on_the_demo_data() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi-3.0.json").await.json().await.unwrap();

    let mut sent = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Only Qpien can sign a webhook delivery: no tool tries it out.
            if operation["security"][0].get("qpienSignature").is_some() {
                continue;
            }
            // A subscription needs a receiver the service may call (the documented URL
            // is a placeholder) and the others act on the id its creation gives:
            // tests/api/subscriptions.rs and .ci/subscriptions-check.sh try them with a
            // real receiver.
            if operation["tags"][0] == "Subscriptions" {
                continue;
            }
            let name = format!("{method} {path}");
            let mut url = Url::parse(&app.address).unwrap();
            let mut filled = path.clone();
            let mut headers = Vec::new();
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let example = &parameter["example"];
                let value = match example {
                    Value::String(s) => s.clone(),
                    Value::Null => panic!("{name}: parameter {} has no example", parameter["name"]),
                    other => other.to_string(),
                };
                let key = parameter["name"].as_str().unwrap();
                match parameter["in"].as_str() {
                    Some("path") => filled = filled.replace(&format!("{{{key}}}"), &value),
                    Some("header") => headers.push((key.to_owned(), value)),
                    _ => {
                        url.query_pairs_mut().append_pair(key, &value);
                    }
                }
            }
            url.set_path(&filled);
            let bodies: Vec<Value> = match operation.pointer("/requestBody/content") {
                Some(content) => {
                    let (media_type, media) = content.as_object().unwrap().iter().next().unwrap();
                    let examples: Vec<Value> = media["examples"]
                        .as_object()
                        .unwrap_or_else(|| panic!("{name}: the body has no examples"))
                        .values()
                        .map(|e| e["value"].clone())
                        .collect();
                    assert_eq!(media_type, "application/merge-patch+json");
                    examples
                }
                None => vec![Value::Null],
            };
            for body in bodies {
                let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let mut request = app.http.request(method, url.clone());
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                if !body.is_null() {
                    request = request
                        .header("Content-Type", "application/merge-patch+json")
                        .body(body.to_string());
                }
                let mut response = request.send().await.unwrap();
                let status = response.status();
                // A stream does not end: its first chunk says it is one.
                let text = if header(&response, "content-type") == "text/event-stream" {
                    let first = response.chunk().await.unwrap().unwrap_or_default();
                    String::from_utf8_lossy(&first).into_owned()
                } else {
                    response.text().await.unwrap()
                };
                assert!(status.is_success(), "{name} {url} {body}: {status} {text}");
                if operation["operationId"] == "listConversations" {
                    let list: Value = serde_json::from_str(&text).unwrap();
                    assert!(
                        !list["items"].as_array().unwrap().is_empty(),
                        "the example filters match nothing: {url}"
                    );
                }
                sent += 1;
            }
        }
    }
    assert!(sent >= 9, "only {sent} example requests");
}

/// Every path serving a document, the Postman collection included.
const DOCUMENT_PATHS: [&str; 4] = [
    "/openapi.json",
    "/openapi-3.0.json",
    "/swagger-2.0.json",
    "/postman-collection.json",
];

#[tokio::test]
async fn documents_made_from_the_request_host_are_kept_by_no_cache() {
    let app = spawn_app().await;

    for path in DOCUMENT_PATHS {
        let response = app.get_with(path, &[("Host", "evil.example:443")]).await;

        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "cache-control"), "no-store", "{path}");
        assert!(header(&response, "etag").starts_with('"'), "{path}");
    }
}

#[tokio::test]
async fn documents_for_the_public_base_url_are_cacheable_and_revalidated_with_304() {
    let app = spawn_app_with(Setup {
        settings: Box::new(|s| {
            s.public_base_url = Some(Url::parse("https://qpien.example.com").unwrap())
        }),
        ..Default::default()
    })
    .await;

    for path in DOCUMENT_PATHS {
        let first = app.get(path).await;
        let etag = header(&first, "etag");
        assert_eq!(header(&first, "cache-control"), "public, max-age=300");
        assert!(etag.starts_with('"') && etag.len() > 2, "{path}: {etag:?}");

        let again = app.get_with(path, &[("If-None-Match", &etag)]).await;
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(header(&again, "etag"), etag, "{path}");
        assert_eq!(header(&again, "cache-control"), "public, max-age=300");
        assert!(again.bytes().await.unwrap().is_empty());

        let other = app.get_with(path, &[("If-None-Match", "\"0000000000000000\"")]);
        assert_eq!(other.await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn documents_and_swagger_ui_are_gzipped_for_clients_that_accept_it() {
    let app = spawn_app().await;
    let gzip = [("Accept-Encoding", "gzip")];

    for path in ["/openapi.json", "/docs/swagger-ui.css", "/docs/"] {
        let plain = app.get(path).await;
        let plain_etag = header(&plain, "etag");
        let plain_len = plain.bytes().await.unwrap().len();
        let packed = app.get_with(path, &gzip).await;
        let packed_etag = header(&packed, "etag");

        assert_eq!(header(&packed, "content-encoding"), "gzip", "{path}");
        assert!(
            header(&packed, "vary")
                .to_lowercase()
                .contains("accept-encoding")
        );
        assert_ne!(
            packed_etag, plain_etag,
            "each coding has its own strong tag"
        );
        assert!(
            packed.bytes().await.unwrap().len() < plain_len / 2,
            "{path}"
        );
        let again = app
            .get_with(path, &[gzip[0], ("If-None-Match", &packed_etag)])
            .await;
        assert_eq!(again.status(), 304, "{path}");
    }
}

#[tokio::test]
async fn swagger_ui_files_carry_a_tag_and_a_cache_lifetime() {
    let app = spawn_app().await;

    for path in [
        "/docs/",
        "/docs/swagger-initializer.js",
        "/docs/swagger-ui.css",
    ] {
        let response = app.get(path).await;
        let etag = header(&response, "etag");

        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "cache-control"), "public, max-age=300");
        let again = app.get_with(path, &[("If-None-Match", &etag)]).await;
        assert_eq!(again.status(), 304, "{path}");
    }
    assert_problem(app.get("/docs/no-such-file.js").await, 404).await;
}

#[tokio::test]
async fn api_answers_are_not_compressed() {
    let app = spawn_app().await;

    let response = app
        .get_with("/conversations", &[("Accept-Encoding", "gzip")])
        .await;

    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-encoding"), "");
}

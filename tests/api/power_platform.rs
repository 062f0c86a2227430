//! The connector rendering held to what Power Platform's own JSON schema for
//! `apiDefinition.swagger.json` (microsoft/PowerPlatformConnectors, `schemas/`) requires of
//! the parts we use. That schema is in no package registry, so CI cannot run it; these
//! checks restate its rules that our documents touch, written from its text:
//!
//! - every object is closed: an `x-ms-*` key is refused unless the schema names it for
//!   that place (any other `x-` key is free);
//! - `x-ms-pageable` holds `nextLinkName` (a string) and nothing else: AutoRest's
//!   `itemName` is refused;
//! - `x-ms-visibility` is `important`, `advanced` or `internal`; `x-ms-summary` a string;
//! - `x-ms-connector-metadata` is a list of `{propertyName, propertyValue}` strings;
//! - `x-ms-trigger` is `batch` or `single`, `x-ms-trigger-metadata` `{kind: query, mode:
//!   polling}`;
//! - a webhook trigger's `x-ms-notification-content` is `{description, schema}` on the
//!   operation, and `x-ms-notification-url` a boolean on a schema property;
//! - `host` is a bare host with an optional port, `basePath` starts with `/`.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// Where a JSON object sits in a Swagger 2.0 document, for the extensions allowed there.
#[derive(Clone, Copy, Debug)]
enum Place {
    Root,
    Info,
    Operation,
    Parameter,
    Response,
    Header,
    Schema,
}

impl Place {
    /// The `x-ms-*` extensions Power Platform's schema accepts at this place, among
    /// those a connector like ours has a use for.
    fn extensions(self) -> &'static [&'static str] {
        match self {
            Place::Root => &["x-ms-connector-metadata", "x-ms-capabilities", "x-ms-docs"],
            Place::Info => &["x-ms-api-annotation", "x-ms-deployment-version"],
            Place::Operation => &[
                "x-ms-pageable",
                "x-ms-summary",
                "x-ms-visibility",
                "x-ms-trigger",
                "x-ms-trigger-hint",
                "x-ms-trigger-metadata",
                "x-ms-capabilities",
                "x-ms-api-annotation",
                "x-ms-no-generic-test",
                "x-ms-notification-content",
            ],
            Place::Parameter => &["x-ms-summary", "x-ms-visibility", "x-ms-test-value"],
            Place::Response => &["x-ms-summary"],
            Place::Header => &["x-ms-summary", "x-ms-visibility"],
            Place::Schema => &[
                "x-ms-summary",
                "x-ms-visibility",
                "x-ms-test-value",
                "x-ms-notification-url",
            ],
        }
    }
}

/// Every rule of the module's list that `document` breaks, one line each.
fn violations(document: &Value) -> Vec<String> {
    let mut found = Vec::new();
    visit(document, Place::Root, "#", &mut found);
    if let Some(host) = document["host"].as_str() {
        let (name, port) = host.split_once(':').unwrap_or((host, "0"));
        if name.is_empty()
            || name.contains(['{', '}', '/', ' ', '\\'])
            || !port.chars().all(|c| c.is_ascii_digit())
        {
            found.push(format!("host {host:?} is not a bare host[:port]"));
        }
    }
    if let Some(base) = document.get("basePath")
        && !base.as_str().is_some_and(|b| b.starts_with('/'))
    {
        found.push(format!("basePath {base} does not start with /"));
    }
    visit(&document["info"], Place::Info, "#/info", &mut found);
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in item.as_object().into_iter().flatten() {
            let at = format!("#/paths/{path}/{method}");
            visit(operation, Place::Operation, &at, &mut found);
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                visit(parameter, Place::Parameter, &at, &mut found);
                schema(&parameter["schema"], &at, &mut found);
            }
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                let at = format!("{at}/responses/{status}");
                visit(response, Place::Response, &at, &mut found);
                schema(&response["schema"], &at, &mut found);
                for header in response["headers"].as_object().into_iter().flatten() {
                    visit(header.1, Place::Header, &at, &mut found);
                }
            }
        }
    }
    for (name, definition) in document["definitions"].as_object().into_iter().flatten() {
        schema(definition, &format!("#/definitions/{name}"), &mut found);
    }
    found
}

/// Checks a schema and the schemas inside it.
fn schema(value: &Value, at: &str, found: &mut Vec<String>) {
    if !value.is_object() {
        return;
    }
    visit(value, Place::Schema, at, found);
    for (name, property) in value["properties"].as_object().into_iter().flatten() {
        schema(property, &format!("{at}/{name}"), found);
    }
    for key in ["items", "additionalProperties"] {
        schema(&value[key], &format!("{at}/{key}"), found);
    }
    for (i, sub) in value["allOf"].as_array().into_iter().flatten().enumerate() {
        schema(sub, &format!("{at}/allOf/{i}"), found);
    }
}

/// Checks the `x-ms-*` keys of one object at `place`.
fn visit(object: &Value, place: Place, at: &str, found: &mut Vec<String>) {
    for (key, value) in object.as_object().into_iter().flatten() {
        if !key.starts_with("x-ms-") {
            continue;
        }
        if !place.extensions().contains(&key.as_str()) {
            found.push(format!("{at}: {key} is not allowed on a {place:?}"));
            continue;
        }
        let fits = match key.as_str() {
            "x-ms-summary" | "x-ms-trigger-hint" => value.is_string(),
            "x-ms-visibility" => {
                ["important", "advanced", "internal"].contains(&value.as_str().unwrap_or(""))
            }
            "x-ms-trigger" => ["batch", "single"].contains(&value.as_str().unwrap_or("")),
            "x-ms-trigger-metadata" => value["kind"] == "query" && value["mode"] == "polling",
            "x-ms-notification-content" => value.as_object().is_some_and(|c| {
                c.get("schema").is_some_and(Value::is_object)
                    && c.keys().all(|k| k == "schema" || k == "description")
            }),
            "x-ms-notification-url" => value.is_boolean(),
            "x-ms-pageable" => value.as_object().is_some_and(|p| {
                p.len() == 1 && p.get("nextLinkName").is_some_and(Value::is_string)
            }),
            "x-ms-connector-metadata" => value.as_array().is_some_and(|entries| {
                entries
                    .iter()
                    .all(|e| e["propertyName"].is_string() && e["propertyValue"].is_string())
            }),
            _ => true,
        };
        if !fits {
            found.push(format!("{at}: {key} {value} does not fit its schema"));
        }
    }
}

#[test]
fn the_checks_refuse_what_power_platform_refuses() {
    let document = json!({
        "swagger": "2.0",
        "host": "example.com/api",
        "info": { "title": "t", "version": "1", "x-ms-summary": "no" },
        "paths": { "/a": { "get": {
            "x-ms-pageable": { "nextLinkName": "nextLink", "itemName": "items" },
            "x-ms-visibility": "prominent",
            "parameters": [{ "name": "p", "in": "query", "type": "string", "x-ms-pageable": {} }],
            "responses": { "200": { "description": "ok", "schema": {
                "properties": { "a": { "type": "string", "x-ms-summary": 3 } }
            } } }
        } } }
    });
    let found = violations(&document);
    for expected in [
        "host",
        "x-ms-summary is not allowed on a Info",
        "\"itemName\":\"items\"} does not fit",
        "x-ms-visibility \"prominent\"",
        "x-ms-pageable is not allowed on a Parameter",
        "x-ms-summary 3",
    ] {
        assert!(
            found.iter().any(|f| f.contains(expected)),
            "{expected:?} not reported in {found:#?}"
        );
    }
    assert_eq!(found.len(), 6, "{found:#?}");
}

#[tokio::test]
async fn the_served_connector_rendering_fits_power_platforms_schema() {
    let app = spawn_app().await;
    let document: Value = app.get("/swagger-2.0.json").await.json().await.unwrap();

    assert_eq!(violations(&document), Vec::<String>::new());
    // The list still pages: Power Automate follows the body's top-level `nextLink`.
    let list = &document["paths"]["/conversations"]["get"];
    assert_eq!(list["x-ms-pageable"], json!({ "nextLinkName": "nextLink" }));
}

/// Power Automate's webhook trigger: registered by a POST whose body carries the flow's
/// callback URL in the property marked `x-ms-notification-url` (hidden from makers), a
/// `201` with `Location`, a `DELETE` at that location, and the body each call brings.
#[tokio::test]
async fn the_webhook_trigger_is_declared_as_power_automate_expects() {
    let app = spawn_app().await;
    let document: Value = app.get("/swagger-2.0.json").await.json().await.unwrap();

    let register = &document["paths"]["/subscriptions"]["post"];
    let body = register["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["in"] == "body")
        .unwrap();
    let marked: Vec<(&String, &Value)> = body["schema"]["properties"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, p)| p["x-ms-notification-url"] == true)
        .collect();
    let delete = &document["paths"]["/subscriptions/{id}"]["delete"];

    assert_eq!(register["summary"], "When a conversation changes");
    assert_eq!(register["x-ms-trigger"], "single");
    assert_eq!(marked.len(), 1);
    assert_eq!(marked[0].0, "url");
    assert_eq!(marked[0].1["x-ms-visibility"], "internal");
    assert!(
        body["schema"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("url"))
    );
    assert!(register["responses"]["201"]["headers"]["Location"].is_object());
    assert_eq!(
        register["x-ms-notification-content"]["schema"]["$ref"],
        "#/definitions/Event"
    );
    assert!(document["definitions"]["Event"]["properties"]["conversationId"].is_object());
    assert_eq!(delete["x-ms-visibility"], "internal");
    assert!(delete["responses"]["204"].is_object());
}

#[test]
fn the_published_connector_rendering_fits_power_platforms_schema() {
    let document: Value =
        serde_json::from_str(include_str!("../../openapi/swagger-2.0.json")).unwrap();
    assert_eq!(violations(&document), Vec::<String>::new());
}

#[test]
fn the_connector_folders_definitions_fit_power_platforms_schema() {
    for (mode, extra) in [
        ("pass-through", &[][..]),
        (
            "service",
            &[
                ("QPIEN_CLIENT_ID", "client"),
                ("QPIEN_CLIENT_SECRET", "secret"),
            ][..],
        ),
    ] {
        let dir = std::env::temp_dir().join(format!("qpien-connector-{}", uuid::Uuid::new_v4()));
        let mut env = vec![
            ("QPIEN_API_URL", "https://api.qpien.com/api/v1"),
            ("PUBLIC_BASE_URL", "https://qpien.example.com:8443/rest"),
        ];
        env.extend_from_slice(extra);
        let (definition, _) = crate::connector::write_connector(&dir, &env);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(violations(&definition), Vec::<String>::new(), "{mode}");
        assert_eq!(definition["host"], "qpien.example.com:8443", "{mode}");
    }
}

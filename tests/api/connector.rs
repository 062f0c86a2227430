//! The Swagger 2.0 rendering as a Power Automate custom connector takes it, checked on the
//! served document, and the connector folder `qpien-rest connector --out DIR` writes.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{TestApp, spawn_app};

async fn swagger2(app: &TestApp) -> Value {
    app.get("/swagger-2.0.json").await.json().await.unwrap()
}

/// Every `(where, property schema)` under `schema`, nested ones included.
fn properties<'a>(at: &str, schema: &'a Value, into: &mut Vec<(String, &'a Value)>) {
    if !schema.is_object() {
        return;
    }
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        into.push((format!("{at}.{name}"), property));
        properties(&format!("{at}.{name}"), property, into);
    }
    properties(&format!("{at}[]"), &schema["items"], into);
    for (i, sub) in schema["allOf"].as_array().into_iter().flatten().enumerate() {
        properties(&format!("{at}.allOf[{i}]"), sub, into);
    }
}

fn operations(document: &Value) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            found.push((format!("{method} {path}"), operation));
        }
    }
    found
}

#[tokio::test]
async fn every_parameter_and_property_has_a_short_label() {
    let app = spawn_app().await;
    let document = swagger2(&app).await;

    let mut labelled = Vec::new();
    for (name, operation) in operations(&document) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            labelled.push((format!("{name} {}", parameter["name"]), parameter));
            properties(&name, &parameter["schema"], &mut labelled);
        }
        for (status, response) in operation["responses"].as_object().unwrap() {
            properties(
                &format!("{name} {status}"),
                &response["schema"],
                &mut labelled,
            );
        }
    }
    for (name, schema) in document["definitions"].as_object().unwrap() {
        properties(name, schema, &mut labelled);
    }

    assert!(labelled.len() > 50, "only {} places found", labelled.len());
    for (place, schema) in labelled {
        let label = schema["x-ms-summary"].as_str().unwrap_or_default();
        assert!(
            !label.is_empty() && label.len() <= 40,
            "{place}: x-ms-summary {label:?}"
        );
    }
}

#[tokio::test]
async fn makers_see_the_conversation_operations_and_their_main_parameters_first() {
    let app = spawn_app().await;
    let document = swagger2(&app).await;

    let mut important = Vec::new();
    for (name, operation) in operations(&document) {
        // The webhook trigger's DELETE is Power Automate's to call, never a maker's; the
        // other subscription operations are there for their paths' sake only.
        if [
            "delete /subscriptions/{id}",
            "get /subscriptions",
            "get /subscriptions/{id}",
        ]
        .contains(&name.as_str())
        {
            assert_eq!(operation["x-ms-visibility"], "internal", "{name}");
            continue;
        }
        assert_eq!(operation["x-ms-visibility"], "important", "{name}");
        for parameter in operation["parameters"].as_array().unwrap() {
            match parameter["x-ms-visibility"].as_str() {
                Some("important") => important.push(format!("{name} {}", parameter["name"])),
                Some("advanced") => {}
                // Power Automate fills it from the trigger's `Location`; makers never do.
                Some("internal") if parameter["name"] == "after" => {}
                other => panic!("{name} {}: x-ms-visibility {other:?}", parameter["name"]),
            }
        }
    }
    important.sort();
    assert_eq!(
        important,
        [
            r#"get /conversations "status""#,
            r#"get /conversations "tag""#,
            r#"get /conversations/changes "types""#,
            r#"get /conversations/{id} "id""#,
            r#"get /triggers/conversation-changed "conversationId""#,
            r#"get /triggers/conversation-changed "types""#,
            r#"patch /conversations/{id} "body""#,
            r#"patch /conversations/{id} "id""#,
            r#"post /subscriptions "body""#,
        ]
    );
}

#[tokio::test]
async fn operator_endpoints_are_left_out_of_the_connector_only() {
    let app = spawn_app().await;
    let v20 = swagger2(&app).await;
    let v31: Value = app.get("/openapi.json").await.json().await.unwrap();
    let v30: Value = app.get("/openapi-3.0.json").await.json().await.unwrap();

    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/problems/{slug}",
        "/events",
    ] {
        assert!(v20["paths"].get(path).is_none(), "2.0 still offers {path}");
        assert!(v31["paths"].get(path).is_some(), "3.1 lost {path}");
        assert!(v30["paths"].get(path).is_some(), "3.0 lost {path}");
    }
    let operations = operations(&v20);
    assert_eq!(
        operations.len(),
        9,
        "the three conversation operations, the change feed, its polling trigger, the webhook trigger, and the other methods of its paths"
    );
    // A path the connector has lists every method the service answers there (`Allow`),
    // as the full document does.
    for (path, item) in v20["paths"].as_object().unwrap() {
        let methods = |item: &Value| {
            let mut methods: Vec<String> = item.as_object().unwrap().keys().cloned().collect();
            methods.retain(|key| key != "parameters");
            methods.sort();
            methods
        };
        assert_eq!(methods(item), methods(&v31["paths"][path]), "{path}");
    }
    assert!(
        v20["definitions"].get("Health").is_none(),
        "the health schema went with its operation"
    );
}

#[tokio::test]
async fn the_list_pages_through_a_top_level_next_link() {
    let app = spawn_app().await;
    let document = swagger2(&app).await;
    let list = &document["paths"]["/conversations"]["get"];
    let field = list["x-ms-pageable"]["nextLinkName"].as_str().unwrap();
    let schema_ref = list["responses"]["200"]["schema"]["$ref"].as_str().unwrap();
    let schema = &document["definitions"][schema_ref.trim_start_matches("#/definitions/")];
    assert!(
        schema["properties"].get(field).is_some(),
        "{field} is not a top-level field of the list"
    );
    assert_eq!(schema["properties"]["items"]["type"], "array");

    let first: Value = app
        .list_conversations("?status=open&pageSize=15")
        .await
        .json()
        .await
        .unwrap();
    let next = first[field].as_str().expect("a next page");
    assert_eq!(first[field], first["links"]["next"]);
    assert!(next.starts_with(&app.address), "{next} is not absolute");
    let second: Value = app
        .http
        .get(next)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["page"], 2);
    assert!(
        second[field].is_null(),
        "18 open conversations: page 2 is the last"
    );
}

#[tokio::test]
async fn the_connector_names_itself_and_its_publisher() {
    let app = spawn_app().await;
    let document = swagger2(&app).await;

    let title = document["info"]["title"].as_str().unwrap();
    assert!(
        title.chars().count() <= 30,
        "{title:?} is over 30 characters"
    );
    assert!(!title.to_lowercase().contains("api"), "{title:?} says API");
    for field in ["name", "url"] {
        assert!(
            document["info"]["contact"][field].is_string(),
            "no contact {field}"
        );
    }
    let metadata = document["x-ms-connector-metadata"].as_array().unwrap();
    for name in ["Website", "Privacy policy", "Categories"] {
        let entry = metadata
            .iter()
            .find(|m| m["propertyName"] == name)
            .unwrap_or_else(|| panic!("no {name} in x-ms-connector-metadata"));
        assert!(
            entry["propertyValue"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{name}"
        );
    }
}

pub(crate) fn write_connector(dir: &std::path::Path, env: &[(&str, &str)]) -> (Value, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_qpien-rest"))
        .env_clear()
        .envs(env.iter().copied())
        .args(["connector", "--out"])
        .arg(dir)
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap()
    };
    let icon = std::fs::read(dir.join("icon.png")).unwrap();
    assert!(icon.starts_with(b"\x89PNG"), "icon.png is a PNG");
    (
        read("apiDefinition.swagger.json"),
        read("apiProperties.json"),
    )
}

#[test]
fn the_connector_folder_asks_a_pass_through_connection_for_the_qpien_token() {
    let dir = std::env::temp_dir().join(format!("qpien-connector-{}", uuid::Uuid::new_v4()));

    let (definition, properties) = write_connector(
        &dir,
        &[
            ("QPIEN_API_URL", "https://api.qpien.com/api/v1"),
            ("PUBLIC_BASE_URL", "https://qpien.example.com/rest"),
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(definition["swagger"], "2.0");
    assert_eq!(definition["host"], "qpien.example.com");
    assert_eq!(definition["basePath"], "/rest");
    let schemes = definition["securityDefinitions"].as_object().unwrap();
    assert_eq!(schemes.len(), 1);
    let (name, scheme) = schemes.iter().next().unwrap();
    assert_eq!(
        (&scheme["type"], &scheme["in"], &scheme["name"]),
        (&"apiKey".into(), &"header".into(), &"Authorization".into())
    );
    let parameters = properties["properties"]["connectionParameters"]
        .as_object()
        .unwrap();
    assert_eq!(parameters.len(), 1);
    assert_eq!(parameters[name]["type"], "securestring");
    assert!(properties["properties"]["iconBrandColor"].is_string());
}

#[test]
fn the_connector_folder_asks_a_service_mode_connection_for_nothing() {
    let dir = std::env::temp_dir().join(format!("qpien-connector-{}", uuid::Uuid::new_v4()));

    let (definition, properties) = write_connector(
        &dir,
        &[
            ("QPIEN_API_URL", "https://api.qpien.com/api/v1"),
            ("QPIEN_CLIENT_ID", "client"),
            ("QPIEN_CLIENT_SECRET", "secret"),
            ("PUBLIC_BASE_URL", "https://qpien.example.com"),
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(definition.get("securityDefinitions").is_none());
    let text = definition.to_string();
    assert!(
        !text.contains(r#""security""#),
        "no operation asks for a key"
    );
    assert_eq!(
        properties["properties"]["connectionParameters"],
        Value::Object(Default::default())
    );
    assert_eq!(
        definition["paths"].as_object().unwrap().len(),
        6,
        "/conversations, /conversations/{{id}}, /conversations/changes, the triggers, /subscriptions/{{id}}"
    );
}

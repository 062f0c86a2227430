//! A Postman collection (format v2.1) that works on the first *Send*, served at
//! `/postman-collection.json`. Importing the OpenAPI document with Postman's default
//! settings generates values from the schemas (`<boolean>`, random ids), which the
//! service rightly refuses; this collection instead carries the 3.0 document's examples,
//! which are the sandbox's demo data.
//!
//! Made from the same source as the documents: one request for each operation the
//! registry shows in the connector, plus liveness and readiness, in the registry's order,
//! with the 3.0 rendering's summaries, descriptions, parameters and examples. The
//! collection's `baseUrl` variable is the documents' server; its authorization is the
//! one the running configuration asks for (`ConnectionAuth`).

use serde_json::{Value, json};

use crate::connector::ConnectionAuth;
use crate::routes::registry::{self, Connector, Operation};

/// The format Postman reads, named in every collection's `info.schema`.
const FORMAT: &str = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json";

/// The collection's variables that hold a credential, left empty for the user to fill.
pub const API_KEY_VARIABLE: &str = "apiKey";
pub const TOKEN_VARIABLE: &str = "qpienToken";

/// The operations the collection sends besides the connector's: the health checks a
/// newcomer tries first.
const ALSO: [&Operation; 2] = [&registry::CHECK_LIVENESS, &registry::CHECK_READINESS];

/// The collection for the 3.0 rendering `v30` (with its server set) and `auth`.
pub fn collection(v30: &Value, auth: &ConnectionAuth) -> Value {
    let base_url = v30["servers"][0]["url"].as_str().unwrap_or_default();
    let mut folders: Vec<(String, Vec<Value>)> = Vec::new();
    // The webhook trigger and its DELETE are left out: registering needs a receiver the
    // service may call (Power Automate brings its own), which a first Send has not.
    let chosen = registry::OPERATIONS.iter().copied().filter(|op| {
        let shown = match op.connector {
            Connector::Action { .. } | Connector::PollingTrigger { .. } => true,
            Connector::WebhookTrigger { .. } | Connector::Internal | Connector::Hidden => false,
        };
        shown || ALSO.iter().any(|a| a.id == op.id)
    });
    for operation in chosen {
        let document = &v30["paths"][operation.path][operation.method.as_str().to_lowercase()];
        let folder = document["tags"][0].as_str().unwrap_or("Other").to_owned();
        let item = request(operation, document);
        match folders.iter_mut().find(|(name, _)| *name == folder) {
            Some((_, items)) => items.push(item),
            None => folders.push((folder, vec![item])),
        }
    }
    let (auth, credential) = collection_auth(auth);
    let mut variables = vec![json!({ "key": "baseUrl", "value": base_url, "type": "string" })];
    variables.extend(credential.map(|key| json!({ "key": key, "value": "", "type": "string" })));
    json!({
        "info": {
            "name": v30["info"]["title"],
            "description": "Every request works on the first Send against the demo data of \
                `cargo run`'s embedded sandbox. `baseUrl` is where the service runs.",
            "schema": FORMAT,
        },
        "auth": auth,
        "event": [{
            "listen": "test",
            "script": {
                "type": "text/javascript",
                "exec": [
                    "pm.test(`${pm.info.requestName} answers 2xx`, () => {",
                    "  pm.expect(pm.response.code).to.be.within(200, 299);",
                    "});",
                ],
            },
        }],
        "variable": variables,
        "item": folders
            .into_iter()
            .map(|(name, item)| json!({ "name": name, "item": item }))
            .collect::<Vec<_>>(),
    })
}

/// The collection's authorization and the variable holding its credential.
fn collection_auth(auth: &ConnectionAuth) -> (Value, Option<&'static str>) {
    match auth {
        ConnectionAuth::Anonymous => (json!({ "type": "noauth" }), None),
        ConnectionAuth::HeaderKey { header, .. } if *header == "Authorization" => (
            json!({ "type": "bearer", "bearer": [
                { "key": "token", "value": format!("{{{{{TOKEN_VARIABLE}}}}}"), "type": "string" },
            ] }),
            Some(TOKEN_VARIABLE),
        ),
        ConnectionAuth::HeaderKey { header, .. } => (
            json!({ "type": "apikey", "apikey": [
                { "key": "key", "value": header, "type": "string" },
                { "key": "value", "value": format!("{{{{{API_KEY_VARIABLE}}}}}"), "type": "string" },
                { "key": "in", "value": "header", "type": "string" },
            ] }),
            Some(API_KEY_VARIABLE),
        ),
    }
}

/// One request: the document's example in each parameter and the body. Query
/// parameters other than the connector's main ones, and conditional headers, come
/// disabled: the request works as it is, and the user sees what else there is.
fn request(operation: &Operation, document: &Value) -> Value {
    let important = match operation.connector {
        Connector::Action { important, .. } | Connector::PollingTrigger { important, .. } => {
            important
        }
        Connector::WebhookTrigger { important, .. } => important,
        Connector::Hidden | Connector::Internal => &[],
    };
    let mut path: Vec<String> = Vec::new();
    for segment in operation.path.trim_start_matches('/').split('/') {
        path.push(match registry::param_name(segment) {
            Some(name) => format!(":{name}"),
            None => segment.to_owned(),
        });
    }
    let (mut query, mut variables, mut headers) = (Vec::new(), Vec::new(), Vec::new());
    for parameter in document["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap_or_default();
        let entry = json!({
            "key": name,
            "value": example_text(&parameter["example"]),
            "description": parameter["description"],
            "disabled": parameter["in"] != "path" && !important.contains(&name),
        });
        match parameter["in"].as_str() {
            Some("query") => query.push(entry),
            Some("path") => variables.push(entry),
            Some("header") => headers.push(entry),
            _ => {}
        }
    }
    let enabled_query: Vec<String> = query
        .iter()
        .filter(|q| q["disabled"] == false)
        .map(|q| {
            format!(
                "{}={}",
                q["key"].as_str().unwrap_or_default(),
                example_text(&q["value"])
            )
        })
        .collect();
    let mut raw = format!("{{{{baseUrl}}}}/{}", path.join("/"));
    if !enabled_query.is_empty() {
        raw = format!("{raw}?{}", enabled_query.join("&"));
    }
    let mut request = json!({
        "method": operation.method.as_str(),
        "description": document["description"],
        "header": headers,
        "url": {
            "raw": raw,
            "host": ["{{baseUrl}}"],
            "path": path,
            "query": query,
            "variable": variables,
        },
    });
    if let Some((media_type, content)) = document["requestBody"]["content"]
        .as_object()
        .and_then(|c| c.iter().next())
    {
        let example = content.get("example").cloned().or_else(|| {
            content["examples"]
                .as_object()
                .and_then(|e| e.values().next())
                .map(|e| e["value"].clone())
        });
        request["header"]
            .as_array_mut()
            .expect("the headers are a list")
            .push(json!({ "key": "Content-Type", "value": media_type }));
        request["body"] = json!({
            "mode": "raw",
            "raw": serde_json::to_string_pretty(&example.unwrap_or(json!({})))
                .expect("an example serialises"),
            "options": { "raw": { "language": "json" } },
        });
    }
    if operation.scope.is_none() {
        // Open to every caller: no credential to send.
        request["auth"] = json!({ "type": "noauth" });
    }
    json!({ "name": document["summary"], "request": request })
}

/// An example as Postman writes a parameter's value: strings bare, the rest as JSON.
fn example_text(example: &Value) -> String {
    match example {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{Renderings, Version};

    fn for_auth(auth: &ConnectionAuth) -> Value {
        let server = url::Url::parse("http://127.0.0.1:8080").unwrap();
        collection(&Renderings::build().render(Version::V30, &server), auth)
    }

    #[test]
    fn the_auth_is_the_one_the_mode_asks_for() {
        let none = for_auth(&ConnectionAuth::Anonymous);
        assert_eq!(none["auth"]["type"], "noauth");
        assert_eq!(none["variable"].as_array().unwrap().len(), 1);

        let header_key = |header| ConnectionAuth::HeaderKey {
            header,
            display_name: "",
            description: "",
        };
        let keys = for_auth(&header_key("X-API-Key"));
        assert_eq!(keys["auth"]["type"], "apikey");
        assert_eq!(keys["auth"]["apikey"][0]["value"], "X-API-Key");
        assert_eq!(keys["auth"]["apikey"][1]["value"], "{{apiKey}}");
        assert_eq!(keys["variable"][1]["key"], "apiKey");

        let token = for_auth(&header_key("Authorization"));
        assert_eq!(token["auth"]["type"], "bearer");
        assert_eq!(token["auth"]["bearer"][0]["value"], "{{qpienToken}}");
        assert_eq!(token["variable"][1]["key"], "qpienToken");
    }

    #[test]
    fn requests_carry_the_documents_examples() {
        let collection = for_auth(&ConnectionAuth::Anonymous);
        let requests: Vec<&Value> = collection["item"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|folder| folder["item"].as_array().unwrap())
            .map(|item| &item["request"])
            .collect();
        let raw: Vec<&str> = requests
            .iter()
            .map(|r| r["url"]["raw"].as_str().unwrap())
            .collect();
        assert_eq!(
            raw,
            [
                "{{baseUrl}}/conversations?status=open&tag=vip",
                "{{baseUrl}}/conversations/:id",
                "{{baseUrl}}/conversations/:id",
                "{{baseUrl}}/conversations/changes?types=conversation.message_received,conversation.updated",
                "{{baseUrl}}/triggers/conversation-changed?types=conversation.message_received,conversation.updated&conversationId=6650a1000000000000000001",
                "{{baseUrl}}/healthz",
                "{{baseUrl}}/readyz",
            ]
        );
        assert_eq!(
            requests[1]["url"]["variable"][0]["value"],
            "6650a1000000000000000001"
        );
        assert_eq!(requests[2]["method"], "PATCH");
        assert!(
            requests[2]["body"]["raw"]
                .as_str()
                .unwrap()
                .contains("priority")
        );
        assert_eq!(collection["variable"][0]["value"], "http://127.0.0.1:8080");
    }
}

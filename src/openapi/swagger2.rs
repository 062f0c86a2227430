//! OpenAPI 3.0.3 to Swagger 2.0, for Power Automate custom connectors (which import 2.0
//! only). Servers become `host`, `basePath` and `schemes`; request bodies a `body`
//! parameter with `consumes`; media type maps a single schema with `produces` and
//! `examples` by media type; `nullable` becomes `x-nullable`; parameters and headers
//! carry their constraints inline (2.0 cannot `$ref` a schema there). Power Automate
//! takes one security definition, so there is one: the caller key in `X-API-Key`, which
//! the connection asks for (a pass-through Qpien token lasts an hour, too short for a
//! connection). Links have no 2.0 form and are left out.

use serde_json::{Map, Value, json};
use url::Url;

use super::insert_after;
use super::v30::{map_subschemas, rename};

const JSON: &str = "application/json";

pub(super) fn convert(v30: &Value) -> Value {
    let schemas = v30
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let definitions: Map<String, Value> = schemas
        .iter()
        .map(|(name, schema)| (name.clone(), schema_20(schema)))
        .collect();
    let mut paths = Map::new();
    for (path, item) in v30["paths"].as_object().expect("the document has paths") {
        let mut converted = Map::new();
        for (method, operation) in item.as_object().expect("a path item is an object") {
            converted.insert(method.clone(), operation_20(operation, &schemas));
        }
        paths.insert(path.clone(), Value::Object(converted));
    }
    json!({
        "swagger": "2.0",
        "info": v30["info"],
        "consumes": [JSON],
        "produces": [JSON],
        "tags": v30["tags"],
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "apiKey": {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "Your caller key (`qpk_…`), from the operator of the service. A service without caller keys ignores it.",
            }
        },
    })
}

/// The document for `server`: its host and port, path prefix and scheme.
pub(super) fn with_host(document: &Value, server: &Url) -> Value {
    let host = match (server.host_str(), server.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "localhost".to_owned(),
    };
    let path = server.path().trim_end_matches('/');
    let base_path = if path.is_empty() { "/" } else { path };
    insert_after(
        document,
        "info",
        [
            ("host", json!(host)),
            ("basePath", json!(base_path)),
            ("schemes", json!([server.scheme()])),
        ],
    )
}

fn operation_20(operation: &Value, schemas: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for key in [
        "tags",
        "summary",
        "description",
        "operationId",
        "deprecated",
    ] {
        if let Some(value) = operation.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    let mut parameters: Vec<Value> = operation["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| parameter_20(p, schemas))
        .collect();
    if let Some(body) = operation.get("requestBody") {
        let content = body["content"].as_object().expect("a body has content");
        out.insert("consumes".into(), json!(json_first(content.keys())));
        let (_, media) = pick_media(content);
        let mut parameter = json!({
            "name": "body",
            "in": "body",
            "required": body.get("required").cloned().unwrap_or(json!(false)),
            "schema": schema_20(&media["schema"]),
        });
        if let Some(description) = body.get("description") {
            parameter["description"] = description.clone();
        }
        parameters.push(parameter);
    }
    let mut produces: Vec<&String> = Vec::new();
    let mut responses = Map::new();
    for (status, response) in operation["responses"]
        .as_object()
        .expect("responses is a map")
    {
        if let Some(content) = response.get("content").and_then(Value::as_object) {
            for media_type in content.keys() {
                if !produces.contains(&media_type) {
                    produces.push(media_type);
                }
            }
        }
        responses.insert(status.clone(), response_20(response));
    }
    if !produces.is_empty() {
        out.insert("produces".into(), json!(json_first(produces.into_iter())));
    }
    if !parameters.is_empty() {
        out.insert("parameters".into(), Value::Array(parameters));
    }
    out.insert("responses".into(), Value::Object(responses));
    if let Some(Value::Array(security)) = operation.get("security") {
        let defined = security.iter().filter(|r| r.get("bearer").is_none());
        out.insert("security".into(), Value::Array(defined.cloned().collect()));
    }
    Value::Object(out)
}

/// Media types with `application/json` first: what Power Automate sends and expects.
fn json_first<'a>(types: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut types: Vec<String> = types.cloned().collect();
    types.sort_by_key(|t| t != JSON);
    types
}

fn pick_media(content: &Map<String, Value>) -> (&String, &Value) {
    content
        .iter()
        .find(|(media, _)| *media == JSON)
        .or_else(|| content.iter().next())
        .expect("content has a media type")
}

fn response_20(response: &Value) -> Value {
    let mut out = json!({ "description": response["description"] });
    if let Some(content) = response.get("content").and_then(Value::as_object) {
        let (_, media) = pick_media(content);
        out["schema"] = schema_20(&media["schema"]);
        let mut examples = Map::new();
        for (media_type, media) in content {
            let example = media.get("example").cloned().or_else(|| {
                let first = media.get("examples")?.as_object()?.values().next()?;
                first.get("value").cloned()
            });
            if let Some(example) = example {
                examples.insert(media_type.clone(), example);
            }
        }
        if !examples.is_empty() {
            out["examples"] = Value::Object(examples);
        }
    }
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        let headers: Map<String, Value> = headers
            .iter()
            .map(|(name, header)| {
                let mut flat = inline(&header["schema"], &Map::new());
                if let Some(description) = header.get("description") {
                    flat.insert("description".into(), description.clone());
                }
                (name.clone(), Value::Object(flat))
            })
            .collect();
        out["headers"] = Value::Object(headers);
    }
    out
}

fn parameter_20(parameter: &Value, schemas: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required"] {
        if let Some(value) = parameter.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    out.extend(inline(&parameter["schema"], schemas));
    if let Some(example) = parameter.get("example") {
        out.insert("x-example".into(), example.clone());
    }
    Value::Object(out)
}

/// A parameter or header schema as the inline keywords 2.0 wants there: references to
/// component schemas (the enums) are resolved, `nullable` becomes `x-nullable`.
fn inline(schema: &Value, schemas: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema.pointer("/allOf/0/$ref").and_then(Value::as_str));
    if let Some(target) = reference
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| schemas.get(name))
    {
        out.extend(inline(target, schemas));
    }
    for (key, value) in schema.as_object().into_iter().flatten() {
        match key.as_str() {
            "$ref" | "allOf" | "description" | "example" | "examples" => {}
            "nullable" => {
                out.insert("x-nullable".into(), value.clone());
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

/// A 3.0 schema in 2.0 terms.
fn schema_20(schema: &Value) -> Value {
    let Some(source) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = source.clone();
    map_subschemas(&mut out, &schema_20);
    if let Some(Value::String(reference)) = out.get_mut("$ref") {
        *reference = reference.replace("#/components/schemas/", "#/definitions/");
    }
    if let Some(nullable) = out.get("nullable").cloned() {
        rename(&mut out, "nullable", "x-nullable", nullable);
    }
    out.shift_remove("writeOnly");
    // No 2.0 form: kept as extensions so nothing is silently lost.
    for key in ["oneOf", "anyOf", "not", "deprecated"] {
        if let Some(value) = out.get(key).cloned() {
            rename(&mut out, key, &format!("x-{key}"), value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enum_parameter_is_inlined_and_a_body_becomes_a_body_parameter() {
        let v30 = json!({
            "info": {}, "tags": [],
            "components": { "schemas": { "Status": { "type": "string", "enum": ["open"] } } },
            "paths": { "/c": { "patch": {
                "operationId": "update",
                "parameters": [{ "name": "status", "in": "query", "required": false,
                    "schema": { "$ref": "#/components/schemas/Status" } }],
                "requestBody": { "required": true, "content": {
                    "application/merge-patch+json": { "schema": { "$ref": "#/components/schemas/Status" } },
                    "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } },
                "responses": { "200": { "description": "ok" } }
            } } }
        });

        let operation = &convert(&v30)["paths"]["/c"]["patch"];

        assert_eq!(
            operation["parameters"][0],
            json!({ "name": "status", "in": "query", "required": false, "type": "string", "enum": ["open"] })
        );
        assert_eq!(operation["parameters"][1]["in"], "body");
        assert_eq!(
            operation["parameters"][1]["schema"]["$ref"],
            "#/definitions/Status"
        );
        assert_eq!(
            operation["consumes"],
            json!([JSON, "application/merge-patch+json"])
        );
    }
}

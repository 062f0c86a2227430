//! OpenAPI 3.1 to 3.0.3, for generators that predate 3.1. The differences that matter
//! for this document: JSON Schema's `type: [T, "null"]` and `oneOf [.., {type: null}]`
//! become `nullable: true`; a `$ref` with sibling keywords (ignored in 3.0) moves into
//! `allOf`; schema `examples` (an array) becomes `example`; `const` becomes a one-value
//! `enum`; numeric `exclusiveMinimum`/`exclusiveMaximum` become the boolean form; the
//! licence's SPDX `identifier` becomes a `url`.

use serde_json::{Map, Value, json};

pub(super) fn convert(v31: &Value) -> Value {
    let mut document = v31.clone();
    document["openapi"] = json!("3.0.3");
    let root = document.as_object_mut().expect("a document is an object");
    root.shift_remove("jsonSchemaDialect");
    root.shift_remove("webhooks");
    if let Some(info) = root.get_mut("info").and_then(Value::as_object_mut) {
        info.shift_remove("summary");
        if let Some(license) = info.get_mut("license").and_then(Value::as_object_mut)
            && let Some(Value::String(id)) = license.get("identifier").cloned()
        {
            let url = json!(format!("https://spdx.org/licenses/{id}.html"));
            rename(license, "identifier", "url", url);
        }
    }
    let types = component_types(&document);
    for_each_schema(&mut document, &mut |schema| {
        *schema = schema_30(schema, &types)
    });
    document
}

/// Calls `f` on every schema at the top of its tree: component schemas, parameter,
/// header and media type schemas. Nested schemas are the callee's to walk.
pub(super) fn for_each_schema(document: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.values_mut().for_each(&mut *f);
    }
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut().filter_map(Value::as_object_mut) {
        for (key, value) in item.iter_mut() {
            if key == "parameters" {
                parameters(value, f);
            } else if let Some(operation) = value.as_object_mut() {
                operation_schemas(operation, f);
            }
        }
    }
}

fn operation_schemas(operation: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Value)) {
    if let Some(list) = operation.get_mut("parameters") {
        parameters(list, f);
    }
    if let Some(content) = operation
        .get_mut("requestBody")
        .and_then(|b| b.get_mut("content"))
    {
        media_types(content, f);
    }
    let responses = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut);
    for response in responses.into_iter().flat_map(|r| r.values_mut()) {
        if let Some(content) = response.get_mut("content") {
            media_types(content, f);
        }
        let headers = response.get_mut("headers").and_then(Value::as_object_mut);
        for header in headers.into_iter().flat_map(|h| h.values_mut()) {
            if let Some(schema) = header.get_mut("schema") {
                f(schema);
            }
        }
    }
}

fn parameters(list: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    for parameter in list.as_array_mut().into_iter().flatten() {
        if let Some(schema) = parameter.get_mut("schema") {
            f(schema);
        }
    }
}

fn media_types(content: &mut Value, f: &mut dyn FnMut(&mut Value)) {
    for media in content
        .as_object_mut()
        .into_iter()
        .flat_map(|c| c.values_mut())
    {
        if let Some(schema) = media.get_mut("schema") {
            f(schema);
        }
    }
}

/// Applies `f` to each direct subschema of `schema`.
pub(super) fn map_subschemas(schema: &mut Map<String, Value>, f: &dyn Fn(&Value) -> Value) {
    for key in ["items", "not", "additionalProperties"] {
        if let Some(sub) = schema.get_mut(key).filter(|s| s.is_object()) {
            *sub = f(sub);
        }
    }
    for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
        for sub in schema
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            *sub = f(sub);
        }
    }
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for sub in properties.values_mut() {
            *sub = f(sub);
        }
    }
}

/// Replaces the member `key` of `map` by `entries`, at its position (order is kept so the
/// converted documents read like the source); entries whose key `map` already has are
/// dropped.
pub(super) fn splice(map: &mut Map<String, Value>, key: &str, entries: Map<String, Value>) {
    let mut out = Map::new();
    let mut entries = Some(entries);
    for (k, v) in std::mem::take(map) {
        if k != key {
            out.insert(k, v);
            continue;
        }
        for (k, v) in entries.take().into_iter().flatten() {
            if !out.contains_key(&k) {
                out.insert(k, v);
            }
        }
    }
    *map = out;
}

/// Renames the member `from` of `map` to `to`, with `value`, at its position.
pub(super) fn rename(map: &mut Map<String, Value>, from: &str, to: &str, value: Value) {
    let mut entry = Map::new();
    entry.insert(to.to_owned(), value);
    splice(map, from, entry);
}

fn is_null_type(schema: &Value) -> bool {
    schema.get("type") == Some(&json!("null"))
}

/// The `type` of each component schema, by its `$ref`.
fn component_types(document: &Value) -> Map<String, Value> {
    let schemas = document
        .pointer("/components/schemas")
        .and_then(Value::as_object);
    schemas
        .into_iter()
        .flatten()
        .filter_map(|(name, schema)| {
            let reference = format!("#/components/schemas/{name}");
            Some((reference, schema.get("type")?.clone()))
        })
        .collect()
}

fn schema_30(schema: &Value, types: &Map<String, Value>) -> Value {
    let Some(source) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = source.clone();
    let mut nullable = false;
    // Null alternatives first, while their `{type: null}` branches are still recognisable.
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(branches)) = out.get(key).cloned() else {
            continue;
        };
        let (nulls, rest): (Vec<Value>, Vec<Value>) = branches.into_iter().partition(is_null_type);
        if nulls.is_empty() {
            continue;
        }
        nullable = true;
        match <[Value; 1]>::try_from(rest) {
            // The one non-null branch stands in for the whole alternative.
            Ok([Value::Object(branch)]) => splice(&mut out, key, branch),
            Ok([branch]) => {
                out.insert(key.into(), json!([branch]));
            }
            Err(rest) => {
                out.insert(key.into(), Value::Array(rest));
            }
        }
    }
    map_subschemas(&mut out, &|sub| schema_30(sub, types));

    match out.get("type").cloned() {
        Some(Value::Array(types)) => {
            nullable |= types.iter().any(|t| t == "null");
            let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
            match rest.as_slice() {
                [] => {
                    out.shift_remove("type");
                }
                [single] => {
                    out.insert("type".into(), single.clone());
                }
                _ => {
                    let branches = rest.iter().map(|t| json!({ "type": t })).collect();
                    rename(&mut out, "type", "anyOf", Value::Array(branches));
                }
            }
        }
        Some(Value::String(t)) if t == "null" => {
            nullable = true;
            out.shift_remove("type");
        }
        _ => {}
    }
    // 3.0 ignores everything beside a `$ref`; `allOf` keeps the description and nullability.
    if let Some(reference) = out.get("$ref").cloned()
        && (out.len() > 1 || nullable)
    {
        let mut all_of = vec![json!({ "$ref": reference })];
        if let Some(Value::Array(existing)) = out.shift_remove("allOf") {
            all_of.extend(existing);
        }
        rename(&mut out, "$ref", "allOf", Value::Array(all_of));
        // `nullable` only means something beside a `type` (3.0.3), so the target's type
        // is repeated here: the form generators read as "this type, or null".
        if nullable && let Some(kind) = types.get(reference.as_str().unwrap_or_default()) {
            out.insert("type".into(), kind.clone());
        }
    }
    if nullable {
        if !out.contains_key("type") && !out.contains_key("allOf") && !out.contains_key("anyOf") {
            // Only null: 3.0 has no null type, so a string that can only be null.
            out.insert("type".into(), json!("string"));
            out.insert("enum".into(), json!([null]));
        }
        out.insert("nullable".into(), json!(true));
    }
    if let Some(Value::Array(examples)) = out.get("examples").cloned() {
        match examples.into_iter().next() {
            Some(first) if !out.contains_key("example") => {
                rename(&mut out, "examples", "example", first)
            }
            _ => {
                out.shift_remove("examples");
            }
        }
    }
    if let Some(value) = out.get("const").cloned() {
        rename(&mut out, "const", "enum", json!([value]));
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(limit) = out.get(exclusive).filter(|v| v.is_number()).cloned() {
            out.insert(bound.into(), limit);
            out.insert(exclusive.into(), json!(true));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nullable_types_and_references_take_the_30_forms() {
        let types = Map::from_iter([("#/components/schemas/Status".to_owned(), json!("string"))]);
        let converted = schema_30(
            &json!({
                "type": "object",
                "properties": {
                    "name": { "type": ["string", "null"], "examples": ["vip"] },
                    "status": { "oneOf": [
                        { "$ref": "#/components/schemas/Status", "description": "Current status." },
                        { "type": "null" }
                    ] },
                    "count": { "type": "integer", "exclusiveMinimum": 0 }
                }
            }),
            &types,
        );

        assert_eq!(
            converted["properties"],
            json!({
                "name": { "type": "string", "nullable": true, "example": "vip" },
                "status": {
                    "allOf": [{ "$ref": "#/components/schemas/Status" }],
                    "description": "Current status.",
                    "type": "string",
                    "nullable": true
                },
                "count": { "type": "integer", "minimum": 0, "exclusiveMinimum": true }
            })
        );
    }
}

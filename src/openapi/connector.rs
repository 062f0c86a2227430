//! The Swagger 2.0 rendering made fit for a Power Automate / Power Apps custom connector
//! (and for Microsoft's connector certification): a short label (`x-ms-summary`) on every
//! parameter and schema property, which operations and parameters a maker sees first
//! (`x-ms-visibility`), paging that follows a top-level `nextLink` (`x-ms-pageable`), a
//! connector title, the publisher's metadata, and only the operations a flow has a use
//! for: liveness, readiness, metrics and problem explanations stay in the 3.x documents.
//!
//! Everything here is added to the converted document; the 3.1 source stays free of
//! vendor extensions.

use serde_json::{Map, Value, json};

use crate::routes::registry::{self, Connector};

/// The connector's display name: certification wants at most 30 characters and no "API"
/// (every connector is one). The 3.x documents keep their longer, developer-facing title.
pub const CONNECTOR_TITLE: &str = "Qpien Conversations";

/// Shown on the connector's page; the 3.x description (with its error table) is too long
/// for the 500 characters a connector description may have.
const CONNECTOR_DESCRIPTION: &str = "List, read and update Qpien customer conversations \
(WhatsApp, e-mail, live chat and more): filter by status, priority, tag or type, star, \
tag, prioritise, resolve or hand a conversation to another agent.";

/// The publisher's details for the connector's page. The publisher who submits the
/// connector for certification replaces them with their own support and privacy pages.
const WEBSITE: &str = "https://qpien.com";
const PRIVACY_POLICY: &str = "https://qpien.com";
const CATEGORIES: &str = "Communication;Sales and CRM";

/// The list operation's paging: the top-level field of its body holding the next page's URL.
pub const NEXT_LINK_FIELD: &str = "nextLink";

/// Labels the name alone would not make: `humanize` covers the rest.
const LABELS: [(&str, &str); 4] = [
    ("self", "This page"),
    ("tag", "Tag name"),
    ("body", "Changes"),
    ("items", "Conversations"),
];

pub(super) fn fit_for_connector(document: &mut Value) {
    let root = document.as_object_mut().expect("a document is an object");
    if let Some(info) = root.get_mut("info").and_then(Value::as_object_mut) {
        info.insert("title".into(), json!(CONNECTOR_TITLE));
        info.insert("description".into(), json!(CONNECTOR_DESCRIPTION));
    }
    keep_connector_operations(root);
    let definitions = root
        .get("definitions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for operation in operations(root) {
        label_operation(operation, &definitions);
    }
    let definitions = root.get_mut("definitions").and_then(Value::as_object_mut);
    for schema in definitions.into_iter().flat_map(|d| d.values_mut()) {
        label_properties(schema);
    }
    drop_unreferenced_definitions(root);
    root.insert(
        "x-ms-connector-metadata".into(),
        json!([
            { "propertyName": "Website", "propertyValue": WEBSITE },
            { "propertyName": "Privacy policy", "propertyValue": PRIVACY_POLICY },
            { "propertyName": "Categories", "propertyValue": CATEGORIES },
        ]),
    );
}

fn operations(root: &mut Map<String, Value>) -> impl Iterator<Item = &mut Value> {
    let paths = root.get_mut("paths").and_then(Value::as_object_mut);
    paths
        .into_iter()
        .flat_map(|p| p.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
}

/// How the registry shows the operation in the connector.
fn connector_of(operation: &Value) -> Connector {
    operation["operationId"]
        .as_str()
        .and_then(registry::by_id)
        .map_or(Connector::Hidden, |row| row.connector)
}

/// Leaves out the operations the registry hides from the connector (liveness, readiness,
/// metrics, problem explanations: for orchestrators, monitoring and people reading a
/// problem's `type`), the paths left empty, and the tags no operation left uses.
fn keep_connector_operations(root: &mut Map<String, Value>) {
    let mut used_tags: Vec<Value> = Vec::new();
    if let Some(paths) = root.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            item.retain(|_, operation| connector_of(operation) != Connector::Hidden);
            for operation in item.values() {
                used_tags.extend(operation["tags"].as_array().into_iter().flatten().cloned());
            }
        }
        paths.retain(|_, item| item.as_object().is_some_and(|i| !i.is_empty()));
    }
    if let Some(Value::Array(tags)) = root.get_mut("tags") {
        tags.retain(|tag| used_tags.contains(&tag["name"]));
    }
}

fn label_operation(operation: &mut Value, definitions: &Map<String, Value>) {
    let connector = connector_of(operation);
    let (important, pages, internal, trigger) = match connector {
        Connector::Action { important, pages } => (Some(important), pages, &[][..], false),
        Connector::PollingTrigger {
            important,
            internal,
        } => (Some(important), false, internal, true),
        Connector::WebhookTrigger { important, .. } => (Some(important), false, &[][..], false),
        Connector::Hidden | Connector::Internal => (None, false, &[][..], false),
    };
    let Some(operation) = operation.as_object_mut() else {
        return;
    };
    if let Connector::WebhookTrigger { summary, .. } = connector {
        webhook_trigger(operation, summary, definitions);
    }
    if connector == Connector::Internal {
        operation.insert("x-ms-visibility".into(), json!("internal"));
    }
    if trigger {
        // Named apart from the webhook trigger, which makers should prefer.
        if let Some(Value::String(summary)) = operation.get_mut("summary") {
            summary.push_str(" (polling)");
        }
        // Power Automate polls without a cursor first, then each answer's `Location`;
        // one flow run per event of a 200's array.
        operation.insert("x-ms-trigger".into(), json!("batch"));
        operation.insert(
            "x-ms-trigger-metadata".into(),
            json!({ "kind": "query", "mode": "polling" }),
        );
    }
    if important.is_some() {
        operation.insert("x-ms-visibility".into(), json!("important"));
    }
    if pages {
        // Power Platform's schema for a connector definition allows `nextLinkName` alone
        // here: AutoRest's `itemName` is refused, so the array a page holds cannot be
        // named (Power Automate assumes `value`; ours is `items`).
        operation.insert(
            "x-ms-pageable".into(),
            json!({ "nextLinkName": NEXT_LINK_FIELD }),
        );
    }
    let parameters = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut);
    for parameter in parameters.into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap_or_default().to_owned();
        let visibility = if internal.contains(&name.as_str()) || connector == Connector::Internal {
            "internal"
        } else if important.unwrap_or_default().contains(&name.as_str()) {
            "important"
        } else {
            "advanced"
        };
        parameter["x-ms-summary"] = json!(label(&name));
        parameter["x-ms-visibility"] = json!(visibility);
        if let Some(schema) = parameter.get_mut("schema") {
            label_properties(schema);
        }
    }
    let responses = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut);
    for response in responses.into_iter().flat_map(|r| r.values_mut()) {
        if let Some(schema) = response.get_mut("schema") {
            label_properties(schema);
        }
    }
}

/// What makes a registration operation Power Automate's webhook trigger: `x-ms-trigger`
/// (one flow run per delivery), the body's `url` marked as the place for the flow's
/// callback URL (`x-ms-notification-url`, filled by Power Automate, so `internal`), and
/// the body of each delivery (`x-ms-notification-content`: an `Event`).
fn webhook_trigger(
    operation: &mut Map<String, Value>,
    summary: &str,
    definitions: &Map<String, Value>,
) {
    operation.insert("summary".into(), json!(summary));
    operation.insert(
        "description".into(),
        json!("Runs the flow once for each change of a conversation the service learns of (an update made through it, a message, a join), within a second. Choose the event types; leave them empty for all."),
    );
    operation.insert("x-ms-trigger".into(), json!("single"));
    operation.insert(
        "x-ms-notification-content".into(),
        json!({
            "description": "The change: an event of the change feed.",
            "schema": { "$ref": "#/definitions/Event" },
        }),
    );
    let parameters = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut);
    for parameter in parameters.into_iter().flatten() {
        if parameter["in"] != "body" {
            continue;
        }
        // Inlined, so the marks on `url` belong to this operation alone.
        let schema = parameter.get_mut("schema").expect("a body has a schema");
        if let Some(name) = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/definitions/"))
            && let Some(definition) = definitions.get(name)
        {
            *schema = definition.clone();
        }
        schema.as_object_mut().map(|s| s.remove("example"));
        let properties = &mut schema["properties"];
        properties["url"]["x-ms-notification-url"] = json!(true);
        properties["url"]["x-ms-visibility"] = json!("internal");
        properties["description"]["default"] = json!("Power Automate flow");
        properties["description"]["x-ms-visibility"] = json!("internal");
        properties["types"]["x-ms-visibility"] = json!("important");
        properties["conversationId"]["x-ms-visibility"] = json!("advanced");
    }
}

/// Gives each property of `schema`, and of the schemas inside it, an `x-ms-summary`.
fn label_properties(schema: &mut Value) {
    let Some(schema) = schema.as_object_mut() else {
        return;
    };
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, property) in properties.iter_mut() {
            label_properties(property);
            let Some(map) = property.as_object_mut() else {
                continue;
            };
            // Siblings of a `$ref` are ignored: the reference moves into `allOf`.
            if let Some(reference) = map.remove("$ref") {
                map.insert("allOf".into(), json!([{ "$ref": reference }]));
            }
            map.insert("x-ms-summary".into(), json!(label(name)));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = schema.get_mut(key) {
            label_properties(sub);
        }
    }
    for sub in schema
        .get_mut("allOf")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        label_properties(sub);
    }
}

/// A short label for a parameter or property name: `joinedPersonId` → `Joined person ID`.
pub fn label(name: &str) -> String {
    if let Some((_, label)) = LABELS.iter().find(|(n, _)| *n == name) {
        return (*label).to_owned();
    }
    let mut words: Vec<String> = Vec::new();
    for c in name.chars() {
        if c.is_uppercase() || words.is_empty() {
            words.push(String::new());
        }
        if let Some(word) = words.last_mut() {
            word.extend(c.to_lowercase());
        }
    }
    let words: Vec<String> = words
        .into_iter()
        .enumerate()
        .map(|(i, word)| match word.as_str() {
            "id" => "ID".to_owned(),
            "url" => "URL".to_owned(),
            _ if i == 0 => {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
            _ => word,
        })
        .collect();
    words.join(" ")
}

/// Removes definitions that only the left-out operations used (e.g. `Health`).
fn drop_unreferenced_definitions(root: &mut Map<String, Value>) {
    let mut used: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    collect_refs(root.get("paths").unwrap_or(&Value::Null), &mut pending);
    let definitions = root
        .get("definitions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    while let Some(name) = pending.pop() {
        if used.contains(&name) {
            continue;
        }
        if let Some(schema) = definitions.get(&name) {
            collect_refs(schema, &mut pending);
        }
        used.push(name);
    }
    if let Some(definitions) = root.get_mut("definitions").and_then(Value::as_object_mut) {
        definitions.retain(|name, _| used.contains(name));
    }
}

fn collect_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/definitions/"))
            {
                into.push(name.to_owned());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_as_words() {
        assert_eq!(label("joinedCustomerPersonId"), "Joined customer person ID");
        assert_eq!(label("pageSize"), "Page size");
        assert_eq!(label("status"), "Status");
        assert_eq!(label("self"), "This page");
    }
}

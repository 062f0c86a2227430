//! `PATCH /conversations/{id}`: a JSON Merge Patch (RFC 7396) of the updatable fields
//! becomes a typed `ConversationPatch`, or the list of every offending member.

use serde_json::{Map, Value};

use super::unique_json::{self, NotUnique};
use super::{ConversationStatus, InvalidParam, MAX_TAG_CHARS, PersonId, Priority};

/// Most tags one conversation can carry through this API.
pub const MAX_TAGS: usize = 20;

const UPDATABLE: [&str; 5] = ["status", "starred", "priority", "tags", "joinedPersonId"];
const READ_ONLY: [&str; 8] = [
    "id",
    "customerId",
    "joinedCustomerPersonId",
    "type",
    "groupOrChannel",
    "channels",
    "lastMessage",
    "lastReceivedMessageChannelId",
];

/// A valid, non-empty change. `None` leaves a field as it is; `joined_person_id:
/// Some(None)` removes the joined agent (a `null` in the merge patch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationPatch {
    pub status: Option<ConversationStatus>,
    pub starred: Option<bool>,
    pub priority: Option<Priority>,
    pub tags: Option<Vec<String>>,
    pub joined_person_id: Option<Option<PersonId>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PatchError {
    /// Not JSON, or not a JSON object: 400.
    Malformed(String),
    /// Well-formed but unacceptable members: 422, each listed.
    Invalid(Vec<InvalidParam>),
}

impl ConversationPatch {
    pub fn parse(body: &[u8]) -> Result<Self, PatchError> {
        let value = unique_json::parse(body).map_err(|e| match e {
            NotUnique::Syntax(e) => {
                PatchError::Malformed(format!("the body is not valid JSON: {e}"))
            }
            NotUnique::Duplicate(pointer) => PatchError::Malformed(format!(
                "the member {pointer} appears more than once; name each member of an object once"
            )),
        })?;
        let Value::Object(members) = value else {
            return Err(PatchError::Malformed(
                "a merge patch must be a JSON object, e.g. {\"status\": \"resolved\"}".to_owned(),
            ));
        };
        Self::from_members(members)
    }

    fn from_members(members: Map<String, Value>) -> Result<Self, PatchError> {
        let mut patch = ConversationPatch::default();
        let mut errors = Vec::new();
        if members.is_empty() {
            errors.push(InvalidParam {
                parameter: None,
                pointer: Some("#".to_owned()),
                detail: format!(
                    "the patch changes nothing; give at least one of {}",
                    UPDATABLE.join(", ")
                ),
            });
        }
        for (name, value) in &members {
            let result = match name.as_str() {
                "status" => {
                    enum_member(value, ConversationStatus::parse).map(|v| patch.status = Some(v))
                }
                "priority" => enum_member(value, Priority::parse).map(|v| patch.priority = Some(v)),
                "starred" => match value {
                    Value::Bool(b) => {
                        patch.starred = Some(*b);
                        Ok(())
                    }
                    Value::Null => Err("cannot be null; use true or false".to_owned()),
                    _ => Err(format!("must be true or false, got {}", kind(value))),
                },
                "tags" => tag_names(value).map(|v| patch.tags = Some(v)),
                "joinedPersonId" => match value {
                    Value::Null => {
                        patch.joined_person_id = Some(None);
                        Ok(())
                    }
                    Value::String(s) => {
                        PersonId::parse(s).map(|id| patch.joined_person_id = Some(Some(id)))
                    }
                    _ => Err(format!(
                        "must be an agent id string or null, got {}",
                        kind(value)
                    )),
                },
                other if READ_ONLY.contains(&other) => Err("is read-only".to_owned()),
                _ => Err(format!(
                    "is not an updatable field; updatable: {}",
                    UPDATABLE.join(", ")
                )),
            };
            if let Err(detail) = result {
                errors.push(InvalidParam::pointer(name, detail));
            }
        }
        if patch
            .tags
            .as_ref()
            .is_some_and(|tags| tags.len() > MAX_TAGS)
        {
            errors.push(InvalidParam::pointer(
                "tags",
                format!("must hold at most {MAX_TAGS} tag names"),
            ));
        }
        if errors.is_empty() {
            // Repeated names are counted against the bound first, as the document's
            // `maxItems` says; only then is the set made.
            if let Some(tags) = &mut patch.tags {
                let mut seen = Vec::with_capacity(tags.len());
                tags.retain(|name| {
                    let first = !seen.contains(name);
                    seen.push(name.clone());
                    first
                });
            }
            Ok(patch)
        } else {
            Err(PatchError::Invalid(errors))
        }
    }
}

fn enum_member<T>(value: &Value, parse: fn(&str) -> Result<T, String>) -> Result<T, String> {
    match value {
        Value::String(s) => parse(s),
        Value::Null => Err("cannot be null".to_owned()),
        _ => Err(format!("must be a string, got {}", kind(value))),
    }
}

/// `tags` replaces the whole set, as merge patch does with arrays; `null` clears it.
fn tag_names(value: &Value) -> Result<Vec<String>, String> {
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => {
            return Err(format!(
                "must be an array of tag names, got {}",
                kind(value)
            ));
        }
    };
    let mut names = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.trim().is_empty() && s.chars().count() <= MAX_TAG_CHARS => {
                names.push(s.clone());
            }
            Value::String(_) => {
                return Err(format!(
                    "item {i} must be a tag name of 1 to {MAX_TAG_CHARS} characters"
                ));
            }
            _ => return Err(format!("item {i} must be a string, got {}", kind(item))),
        }
    }
    Ok(names)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_pointers(body: &str) -> Vec<String> {
        match ConversationPatch::parse(body.as_bytes()) {
            Err(PatchError::Invalid(errors)) => {
                errors.into_iter().map(|e| e.pointer.unwrap()).collect()
            }
            other => panic!("expected invalid members, got {other:?}"),
        }
    }

    #[test]
    fn a_null_joined_person_removes_the_agent() {
        let patch = ConversationPatch::parse(br#"{"joinedPersonId": null}"#).unwrap();
        assert_eq!(patch.joined_person_id, Some(None));
    }

    #[test]
    fn every_offending_member_is_listed() {
        let mut pointers =
            invalid_pointers(r#"{"status":"done","starred":"yes","colour":1,"id":"x"}"#);
        pointers.sort();
        assert_eq!(pointers, ["#/colour", "#/id", "#/starred", "#/status"]);
    }

    #[test]
    fn too_many_tags_are_rejected() {
        let tags: Vec<String> = (0..=MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
        assert_eq!(
            invalid_pointers(&format!("{{\"tags\":[{}]}}", tags.join(","))),
            ["#/tags"]
        );
    }

    #[test]
    fn repeated_tag_names_count_toward_the_bound_and_are_then_merged() {
        let repeated = vec!["\"vip\""; MAX_TAGS + 1].join(",");
        assert_eq!(
            invalid_pointers(&format!("{{\"tags\":[{repeated}]}}")),
            ["#/tags"]
        );

        let patch = ConversationPatch::parse(br#"{"tags": ["vip", "bug", "vip"]}"#).unwrap();
        assert_eq!(patch.tags.unwrap(), ["vip", "bug"]);
    }

    #[test]
    fn a_tag_name_needs_one_character_that_is_not_white_space() {
        for blank in [" ", "\u{85}", "\u{a0}\u{3000}", "\t\n"] {
            let body = serde_json::json!({ "tags": [blank] }).to_string();
            assert_eq!(
                invalid_pointers(&body),
                ["#/tags"],
                "{blank:?} was accepted"
            );
        }
        // Not white space to Rust, so not to the document's pattern either.
        for name in ["\u{feff}", "\u{1c}", "a b"] {
            let body = serde_json::json!({ "tags": [name] }).to_string();
            assert!(
                ConversationPatch::parse(body.as_bytes()).is_ok(),
                "{name:?} was rejected"
            );
        }
    }

    #[test]
    fn an_empty_patch_is_rejected_and_a_non_object_is_malformed() {
        assert_eq!(invalid_pointers("{}"), ["#"]);
        assert!(matches!(
            ConversationPatch::parse(b"[1]"),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            ConversationPatch::parse(b"{"),
            Err(PatchError::Malformed(_))
        ));
    }

    mod properties {
        use proptest::prelude::*;
        use proptest::sample::select;
        use serde_json::json;

        use super::*;
        use crate::arbitrary::json_value;

        /// A tag name as documented: 1 to 64 characters, one of them not white space.
        fn tag_name() -> impl Strategy<Value = String> {
            "[^\\s]\\PC{0,63}"
        }

        /// A valid patch from the documented grammar: at least one updatable member.
        fn valid() -> impl Strategy<Value = ConversationPatch> {
            (
                prop::option::of(select(ConversationStatus::ALL)),
                prop::option::of(any::<bool>()),
                prop::option::of(select(Priority::ALL)),
                prop::option::of(prop::collection::vec(tag_name(), 0..=MAX_TAGS)),
                prop::option::of(prop::option::of("[0-9a-f]{24}")),
            )
                .prop_map(
                    |(status, starred, priority, tags, joined)| ConversationPatch {
                        status,
                        starred,
                        priority,
                        tags,
                        joined_person_id: joined
                            .map(|id| id.map(|id: String| PersonId::parse(&id).unwrap())),
                    },
                )
                .prop_filter("changes something", |p| *p != ConversationPatch::default())
        }

        /// `patch` as a caller writes it.
        fn print(patch: &ConversationPatch) -> Map<String, Value> {
            let mut members = Map::new();
            if let Some(v) = patch.status {
                members.insert("status".into(), json!(v.as_str()));
            }
            if let Some(v) = patch.starred {
                members.insert("starred".into(), json!(v));
            }
            if let Some(v) = patch.priority {
                members.insert("priority".into(), json!(v.as_str()));
            }
            if let Some(v) = &patch.tags {
                members.insert("tags".into(), json!(v));
            }
            if let Some(v) = &patch.joined_person_id {
                members.insert(
                    "joinedPersonId".into(),
                    json!(v.as_ref().map(|id| id.as_str())),
                );
            }
            members
        }

        /// The member a pointer fragment names (RFC 6901 §6, then §4), decoded apart
        /// from how it was made.
        fn member_of(pointer: &str) -> String {
            let encoded = pointer.strip_prefix("#/").expect("a pointer from the root");
            let mut bytes = Vec::new();
            let mut rest = encoded.as_bytes();
            while let Some((&b, tail)) = rest.split_first() {
                if b == b'%' {
                    let hex = std::str::from_utf8(&tail[..2]).unwrap();
                    bytes.push(u8::from_str_radix(hex, 16).unwrap());
                    rest = &tail[2..];
                } else {
                    bytes.push(b);
                    rest = tail;
                }
            }
            let token = String::from_utf8(bytes).unwrap();
            assert!(!token.contains('/'), "one reference token: {pointer}");
            token.replace("~1", "/").replace("~0", "~")
        }

        fn pointers(body: &[u8]) -> Vec<String> {
            match ConversationPatch::parse(body) {
                Err(PatchError::Invalid(errors)) => {
                    errors.into_iter().map(|e| e.pointer.unwrap()).collect()
                }
                other => panic!("expected invalid members, got {other:?}"),
            }
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
                let _ = ConversationPatch::parse(&body);
            }

            #[test]
            fn any_json_is_a_patch_or_an_error_and_only_an_object_can_be_a_patch(value in json_value()) {
                let parsed = ConversationPatch::parse(value.to_string().as_bytes());
                if !value.is_object() {
                    prop_assert!(matches!(parsed, Err(PatchError::Malformed(_))));
                }
            }

            #[test]
            fn a_valid_patch_round_trips_with_its_tags_made_a_set(patch in valid()) {
                let body = Value::Object(print(&patch)).to_string();
                let mut expected = patch.clone();
                if let Some(tags) = &mut expected.tags {
                    let mut seen = std::collections::HashSet::new();
                    tags.retain(|t| seen.insert(t.clone()));
                }
                prop_assert_eq!(ConversationPatch::parse(body.as_bytes()), Ok(expected));
            }

            #[test]
            fn a_member_that_is_not_updatable_is_named_by_its_pointer(
                patch in valid(),
                name in prop_oneof![any::<String>(), select(&READ_ONLY[..]).prop_map(str::to_owned)],
                value in json_value(),
            ) {
                prop_assume!(!UPDATABLE.contains(&name.as_str()));
                let mut members = print(&patch);
                members.insert(name.clone(), value);
                let found = pointers(Value::Object(members).to_string().as_bytes());
                prop_assert_eq!(found.len(), 1);
                prop_assert_eq!(member_of(&found[0]), name);
            }

            #[test]
            fn an_updatable_member_of_the_wrong_kind_is_named(
                patch in valid(),
                which in 0..5usize,
                value in json_value(),
            ) {
                let name = UPDATABLE[which];
                let acceptable = match (name, &value) {
                    ("status", Value::String(s)) => ConversationStatus::parse(s).is_ok(),
                    ("priority", Value::String(s)) => Priority::parse(s).is_ok(),
                    ("starred", Value::Bool(_)) => true,
                    ("tags", Value::Null) => true,
                    ("tags", Value::Array(items)) => items.len() <= MAX_TAGS && items.iter().all(|i| {
                        i.as_str().is_some_and(|s| {
                            s.chars().any(|c| !c.is_whitespace()) && s.chars().count() <= MAX_TAG_CHARS
                        })
                    }),
                    ("joinedPersonId", Value::Null) => true,
                    ("joinedPersonId", Value::String(s)) => PersonId::parse(s).is_ok(),
                    _ => false,
                };
                prop_assume!(!acceptable);
                let mut members = print(&patch);
                members.insert(name.to_owned(), value);
                let body = Value::Object(members).to_string();
                prop_assert_eq!(pointers(body.as_bytes()), vec![format!("#/{name}")]);
            }
        }
    }
}

//! JSON parsed into a `Value` with every object's member names unique, at any depth.
//! `serde_json` keeps the last of two equal names, so `{"status": "open", "status":
//! "closed"}` would mean whatever the parser in front of the service (a gateway, an audit
//! log) did not: such a body is refused, naming the member, instead.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

#[derive(Debug)]
pub enum NotUnique {
    /// Not JSON at all.
    Syntax(serde_json::Error),
    /// Valid JSON with a member twice in one object: its JSON pointer (`#/a/b`).
    Duplicate(String),
}

/// `body` as a `Value`, unless some object in it names a member twice.
pub fn parse(body: &[u8]) -> Result<Value, NotUnique> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Node {
        pointer: "#",
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some(pointer)) => Err(NotUnique::Duplicate(pointer)),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(NotUnique::Syntax(error)),
    }
}

/// A value at `pointer`; records the first duplicate it meets in `duplicate`.
struct Node<'a> {
    pointer: &'a str,
    duplicate: &'a RefCell<Option<String>>,
}

impl Node<'_> {
    fn child(&self, step: &str) -> String {
        // RFC 6901: `~` and `/` in a name are escaped.
        format!(
            "{}/{}",
            self.pointer,
            step.replace('~', "~0").replace('/', "~1")
        )
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let pointer = self.child(&items.len().to_string());
            let node = Node {
                pointer: &pointer,
                duplicate: self.duplicate,
            };
            match seq.next_element_seed(node)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let pointer = self.child(&name);
            if members.contains_key(&name) {
                *self.duplicate.borrow_mut() = Some(pointer);
                return Err(de::Error::custom("a member name repeats"));
            }
            let node = Node {
                pointer: &pointer,
                duplicate: self.duplicate,
            };
            let value = map.next_value_seed(node)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicate(body: &str) -> Option<String> {
        match parse(body.as_bytes()) {
            Err(NotUnique::Duplicate(pointer)) => Some(pointer),
            _ => None,
        }
    }

    #[test]
    fn a_repeated_member_is_named_at_any_depth() {
        assert_eq!(duplicate(r#"{"a": 1, "a": 2}"#).as_deref(), Some("#/a"));
        assert_eq!(
            duplicate(r#"{"a": [0, {"b/c": 1, "b/c": 1}]}"#).as_deref(),
            Some("#/a/1/b~1c")
        );
    }

    #[test]
    fn unique_members_parse_as_serde_json_does() {
        let body = r#"{"a": {"b": [1, -2, 2.5, "x", null, true]}, "b": {"a": 1}}"#;
        let expected: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parse(body.as_bytes()).unwrap(), expected);
    }

    #[test]
    fn not_json_and_trailing_bytes_are_syntax_errors() {
        for body in ["{", r#"{"a": 1} x"#, ""] {
            assert!(
                matches!(parse(body.as_bytes()), Err(NotUnique::Syntax(_))),
                "{body}"
            );
        }
    }
}

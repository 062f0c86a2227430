//! Typed identifiers. Qpien ids are MongoDB ObjectIds (the entity's `_id` says so): 24
//! hexadecimal digits. Anything else is rejected at the edge, before any upstream call.

use std::fmt;

use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};

const LEN: usize = 24;

/// What `parse` accepts, as the OpenAPI document states it.
pub fn object_id_pattern() -> String {
    format!("^[0-9a-fA-F]{{{LEN}}}$")
}

/// The schema of an id a caller sends.
pub fn object_id_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(object_id_pattern()))
        .build()
}

/// The schema of an id a caller sends or sets to `null`, said to be `description`.
pub fn nullable_object_id_schema(description: &str) -> Object {
    let mut schema = object_id_schema();
    schema.schema_type = SchemaType::from_iter([Type::String, Type::Null]);
    schema.description = Some(description.into());
    schema
}

fn parse_object_id(value: &str) -> Result<String, String> {
    if value.len() == LEN && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err("must be 24 hexadecimal digits, e.g. 6650a1000000000000000001".to_owned())
    }
}

macro_rules! object_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Accepts 24 hexadecimal digits in either case; keeps them lower-case.
            pub fn parse(value: &str) -> Result<Self, String> {
                parse_object_id(value).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

object_id!(
    /// Id of a conversation.
    ConversationId
);
object_id!(
    /// Id of an agent (a person of the business).
    PersonId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_accept_24_hex_digits_only() {
        assert_eq!(
            ConversationId::parse("6650A1000000000000000001")
                .unwrap()
                .as_str(),
            "6650a1000000000000000001"
        );
        for bad in [
            "",
            "123",
            "6650a100000000000000000g",
            "6650a10000000000000000011",
            "6650a1000000000000000 01",
        ] {
            assert!(ConversationId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// The documented form: 24 hexadecimal digits, either case.
        fn object_id() -> impl Strategy<Value = String> {
            "[0-9a-fA-F]{24}"
        }

        /// What the documented pattern says, written apart from the parser.
        fn documented(value: &str) -> bool {
            value.chars().count() == 24 && value.chars().all(|c| c.is_ascii_hexdigit())
        }

        proptest! {
            #[test]
            fn any_text_is_accepted_exactly_when_it_has_the_documented_form(value in any::<String>()) {
                prop_assert_eq!(ConversationId::parse(&value).is_ok(), documented(&value));
            }

            #[test]
            fn a_documented_id_is_accepted_lower_cased_and_prints_back(value in object_id()) {
                let id = ConversationId::parse(&value).unwrap();
                prop_assert_eq!(id.as_str(), value.to_ascii_lowercase());
                prop_assert_eq!(ConversationId::parse(&id.to_string()).unwrap(), id.clone());
                let person = PersonId::parse(&value).unwrap();
                prop_assert_eq!(person.as_str(), id.as_str());
            }

            #[test]
            fn one_character_off_the_form_is_refused(
                value in object_id(),
                at in 0..24usize,
                bad in "[^0-9a-fA-F]",
                grow in prop::bool::ANY,
            ) {
                // A digit replaced by anything else, or one digit more or less.
                let mut chars: Vec<String> = value.chars().map(String::from).collect();
                chars[at] = bad;
                prop_assert!(ConversationId::parse(&chars.concat()).is_err());
                let resized = if grow { format!("{value}0") } else { value[1..].to_owned() };
                prop_assert!(ConversationId::parse(&resized).is_err());
            }
        }
    }
}

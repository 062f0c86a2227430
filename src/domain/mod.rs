//! The facade's own model: what a caller sends (typed, parsed at the edge) and what it
//! gets back (the REST representation). Nothing here knows Qpien's wire names.

mod conversation;
mod ids;
mod list;
mod patch;
mod unique_json;

pub use conversation::{
    Channel, ChannelType, Conversation, ConversationStatus, ConversationType, LastMessage,
    MessageDirection, Priority, Tag,
};
pub use ids::{
    ConversationId, PersonId, nullable_object_id_schema, object_id_pattern, object_id_schema,
};
pub use list::{
    ConversationFilter, ConversationPage, DEFAULT_PAGE_SIZE, ListQuery, MAX_PAGE, MAX_PAGE_SIZE,
    MAX_TAG_CHARS, page_schema, page_size_schema, tag_schema,
};
pub use patch::{ConversationPatch, MAX_TAGS, PatchError};

/// What is wrong with one input value: the query or path parameter or the JSON pointer
/// into the body, and why. Listed in the `errors` member of a problem response.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidParam {
    /// Name of the offending query or path parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "pageSize")]
    pub parameter: Option<String>,
    /// JSON Pointer (as a URI fragment) to the offending member of the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "#/status")]
    pub pointer: Option<String>,
    /// What is wrong and what is expected.
    #[schema(example = "must be a whole number from 1 to 100")]
    pub detail: String,
}

impl InvalidParam {
    pub fn parameter(name: &str, detail: impl Into<String>) -> Self {
        Self {
            parameter: Some(name.to_owned()),
            pointer: None,
            detail: detail.into(),
        }
    }
    pub fn pointer(member: &str, detail: impl Into<String>) -> Self {
        Self {
            parameter: None,
            pointer: Some(pointer_fragment(member)),
            detail: detail.into(),
        }
    }
}

/// The JSON Pointer (RFC 6901) of a top-level `member`, as a URI fragment (§6): `~` and
/// `/` escaped as `~0` and `~1`, then every byte a fragment cannot hold percent-encoded,
/// so a member named `a/b` is not read as `b` inside `a`.
fn pointer_fragment(member: &str) -> String {
    let mut fragment = String::with_capacity(member.len() + 2);
    fragment.push_str("#/");
    for byte in member.replace('~', "~0").replace('/', "~1").bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&byte);
        if keep {
            fragment.push(char::from(byte));
        } else {
            fragment.push_str(&format!("%{byte:02X}"));
        }
    }
    fragment
}

/// Declares a closed set of values with its wire spelling (snake_case), a parser that
/// names the accepted values, and the OpenAPI enum. One definition serves all three, so
/// the document, the parser and the serialiser cannot disagree.
///
/// `$text` is a `tt`, not a `literal`: a `literal` fragment reaches derive macros wrapped
/// in an invisible group, which utoipa's serde parser skips, so the document showed the
/// variant names (`Open`) instead of the wire values (`open`).
macro_rules! rest_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(value: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.as_str() == value).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("must be one of {}, got {value:?}", names.join(", "))
                })
            }
        }
    };
}
pub(crate) use rest_enum;

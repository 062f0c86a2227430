//! Strong entity tags (RFC 9110 §8.8.3) of the representations the facade serves, and
//! the evaluation of `If-None-Match` and `If-Match` against them.
//!
//! A tag is the 64-bit XXH3 of the representation's bytes: the same bytes give the same
//! tag in every process and every version of the service (XXH3 is a fixed algorithm,
//! unlike std's hasher), so replicas agree, and any change of the bytes changes it.

use std::fmt;
use std::io::Write;

use actix_web::http::header::HeaderValue;

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ETag(u64);

impl ETag {
    pub fn of(bytes: &[u8]) -> Self {
        Self(xxh3_64(bytes))
    }

    /// The tag of a representation made of parts: `parts` hashed in order.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = Xxh3::new();
        for part in parts {
            hasher.update(part);
        }
        Self(hasher.digest())
    }

    /// The field value, quotes included: `"0123456789abcdef"`.
    pub fn to_header(self) -> String {
        format!("\"{:016x}\"", self.0)
    }

    /// `to_header` as a header value, formatted on the stack.
    pub fn header_value(self) -> HeaderValue {
        let mut quoted = [0u8; 18];
        write!(&mut quoted[..], "{self}").expect("18 bytes hold a quoted 64-bit hex");
        HeaderValue::from_bytes(&quoted).expect("quotes and hex digits")
    }

    /// The tag from its field value, if it is one of ours.
    fn parse_opaque(quoted: &str) -> Option<Self> {
        let hex = quoted.strip_prefix('"')?.strip_suffix('"')?;
        (hex.len() == 16)
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
            .map(Self)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{:016x}\"", self.0)
    }
}

/// A parsed `If-Match` or `If-None-Match` field.
#[derive(Debug, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    /// A list of tags; `weak` ones carried `W/`.
    Tags(Vec<Tag>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Tag {
    weak: bool,
    opaque: String,
}

/// The field's value was not a valid list of entity tags.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Condition {
    /// Parses `*` or `#entity-tag`, across repeated fields (joined with commas).
    pub fn parse(value: &str) -> Result<Self, Malformed> {
        let value = value.trim();
        if value == "*" {
            return Ok(Self::Any);
        }
        let mut tags = Vec::new();
        let mut rest = value;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            let (weak, quoted) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let body = quoted.strip_prefix('"').ok_or(Malformed)?;
            let end = body.find('"').ok_or(Malformed)?;
            let opaque = &body[..end];
            if !opaque
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
            {
                return Err(Malformed);
            }
            tags.push(Tag {
                weak,
                opaque: format!("\"{opaque}\""),
            });
            rest = &body[end + 1..];
            let next = rest.trim_start_matches([' ', '\t']);
            if !(next.is_empty() || next.starts_with(',')) {
                return Err(Malformed);
            }
            rest = next;
        }
        if tags.is_empty() {
            return Err(Malformed);
        }
        Ok(Self::Tags(tags))
    }

    /// `If-None-Match` holds (send the representation) unless a tag matches under the
    /// weak comparison, as RFC 9110 §13.1.2 asks.
    pub fn none_match(&self, current: ETag) -> bool {
        match self {
            Self::Any => false,
            Self::Tags(tags) => !tags
                .iter()
                .any(|t| ETag::parse_opaque(&t.opaque) == Some(current)),
        }
    }

    /// `If-Match` holds when a tag matches under the strong comparison (RFC 9110
    /// §13.1.1): a weak tag never does.
    pub fn matches(&self, current: ETag) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags
                .iter()
                .any(|t| !t.weak && ETag::parse_opaque(&t.opaque) == Some(current)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_a_quoted_hash_of_the_bytes_and_survives_a_round_trip() {
        let tag = ETag::of(b"{\"id\":\"1\"}");
        assert_eq!(tag, ETag::of_parts(&[b"{\"id\":", b"\"1\"}"]));
        assert_ne!(tag, ETag::of(b"{\"id\":\"2\"}"));
        let header = tag.to_header();
        assert_eq!(header.len(), 18);
        assert_eq!(tag.header_value(), header.as_str());
        assert!(Condition::parse(&header).unwrap().matches(tag));
    }

    #[test]
    fn if_none_match_compares_weakly_and_if_match_strongly() {
        let tag = ETag::of(b"x");
        let weak = Condition::parse(&format!("W/{tag}")).unwrap();
        assert!(
            !weak.none_match(tag),
            "a weak tag matches for If-None-Match"
        );
        assert!(!weak.matches(tag), "but never for If-Match");
        let list = Condition::parse(&format!("\"other\", {tag}")).unwrap();
        assert!(list.matches(tag) && !list.none_match(tag));
        assert!(Condition::parse("\"other\"").unwrap().none_match(tag));
        assert!(!Condition::Any.none_match(tag) && Condition::Any.matches(tag));
    }

    #[test]
    fn malformed_fields_are_refused() {
        for bad in ["", "abc", "\"open", "W/abc", "\"a\" \"b\"", "\"a\"b"] {
            assert_eq!(Condition::parse(bad), Err(Malformed), "{bad:?}");
        }
        assert_eq!(
            Condition::parse(" \"a\" ,W/\"b\" ").unwrap(),
            Condition::Tags(vec![
                Tag {
                    weak: false,
                    opaque: "\"a\"".into()
                },
                Tag {
                    weak: true,
                    opaque: "\"b\"".into()
                },
            ])
        );
    }
}

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

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// `etagc` (RFC 9110 §8.8.3): %x21 / %x23-7E / obs-text (as text: any non-ASCII).
        fn opaque() -> impl Strategy<Value = String> {
            "[\\x21\\x23-\\x7e\\u{80}-\\u{10ffff}]{0,12}"
        }

        fn tag() -> impl Strategy<Value = Tag> {
            (any::<bool>(), opaque()).prop_map(|(weak, opaque)| Tag {
                weak,
                opaque: format!("\"{opaque}\""),
            })
        }

        /// OWS, as a list may carry it around its commas.
        fn ows() -> impl Strategy<Value = String> {
            "[ \\t]{0,2}"
        }

        /// `tags` as a `#entity-tag` list, with optional white space and empty elements
        /// (RFC 9110 §5.6.1: a recipient accepts them).
        fn print(tags: &[Tag], spaces: &[(String, bool)]) -> String {
            let mut field = String::new();
            for (i, tag) in tags.iter().enumerate() {
                let (space, empty) = &spaces[i % spaces.len()];
                if i > 0 {
                    field.push_str(&format!("{space},{space}"));
                    if *empty {
                        field.push_str(&format!(",{space}"));
                    }
                }
                field.push_str(if tag.weak { "W/" } else { "" });
                field.push_str(&tag.opaque);
            }
            field
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(value in any::<String>(), current in any::<u64>()) {
                if let Ok(condition) = Condition::parse(&value) {
                    let _ = (condition.matches(ETag(current)), condition.none_match(ETag(current)));
                }
            }

            #[test]
            fn a_list_of_entity_tags_round_trips(
                tags in prop::collection::vec(tag(), 1..6),
                spaces in prop::collection::vec((ows(), any::<bool>()), 1..4),
                around in ows(),
            ) {
                let field = format!("{around}{}{around}", print(&tags, &spaces));
                prop_assert_eq!(Condition::parse(&field), Ok(Condition::Tags(tags)));
            }

            #[test]
            fn our_tag_matches_itself_strongly_and_weakly_and_no_other(
                value in any::<u64>(),
                other in any::<u64>(),
            ) {
                let tag = ETag(value);
                let strong = Condition::parse(&tag.to_header()).unwrap();
                let weak = Condition::parse(&format!("W/{tag}")).unwrap();
                prop_assert!(strong.matches(tag) && !strong.none_match(tag));
                prop_assert!(!weak.matches(tag) && !weak.none_match(tag));
                let header = tag.header_value();
                prop_assert_eq!(header.to_str().unwrap(), tag.to_header());
                if other != value {
                    prop_assert!(!strong.matches(ETag(other)) && strong.none_match(ETag(other)));
                }
            }

            #[test]
            fn a_character_outside_etagc_in_a_tag_is_refused(
                before in opaque(),
                bad in "[\\x00-\\x20\\x7f]",
                after in opaque(),
                weak in any::<bool>(),
            ) {
                let field = format!("{}\"{before}{bad}{after}\"", if weak { "W/" } else { "" });
                prop_assert_eq!(Condition::parse(&field), Err(Malformed));
            }

            #[test]
            fn anything_but_a_comma_between_two_tags_is_refused(
                first in tag(),
                second in tag(),
                junk in "[^, \\t]{1,3}",
            ) {
                let field = format!("{}{junk}{}", print(&[first], &[(String::new(), false)]), print(&[second], &[(String::new(), false)]));
                prop_assert_eq!(Condition::parse(&field), Err(Malformed));
            }
        }
    }
}

//! `GET /conversations`: the query string becomes a typed `ListQuery`, or the list of
//! every offending parameter.

use utoipa::openapi::schema::{KnownFormat, Object, ObjectBuilder, SchemaFormat, Type};

use super::{Conversation, ConversationStatus, ConversationType, InvalidParam, Priority};

/// Largest `pageSize`; Qpien documents no bound, and 100 keeps one page inside one
/// upstream call of sensible size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Largest `page`, so that `page × pageSize` always fits the upstream's 32-bit integers.
pub const MAX_PAGE: u32 = 100_000;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Longest tag name, in characters.
pub const MAX_TAG_CHARS: usize = 64;

// The bounds as the OpenAPI document states them, from the constants the parser checks.

/// The schema of `page`.
pub fn page_schema() -> Object {
    bounded_integer(1, MAX_PAGE)
}

/// The schema of `pageSize`.
pub fn page_size_schema() -> Object {
    bounded_integer(DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
}

/// The schema of `tag`.
pub fn tag_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_TAG_CHARS))
        .min_length(Some(1))
        .build()
}

fn bounded_integer(default: u32, max: u32) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
        .default(Some(default.into()))
        .maximum(Some(max))
        .minimum(Some(1))
        .build()
}

/// `value` of `name` unless it is outside 1 to `max`.
fn bounded(name: &str, value: i64, max: u32, errors: &mut Vec<InvalidParam>) -> u32 {
    match u32::try_from(value) {
        Ok(n) if (1..=max).contains(&n) => n,
        _ => {
            errors.push(InvalidParam::parameter(
                name,
                format!("must be a whole number from 1 to {max}"),
            ));
            1
        }
    }
}

/// Filters on the list; all given filters must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConversationFilter {
    pub status: Option<ConversationStatus>,
    pub priority: Option<Priority>,
    pub starred: Option<bool>,
    pub kind: Option<ConversationType>,
    pub tag: Option<String>,
}

/// A valid list request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListQuery {
    pub filter: ConversationFilter,
    pub page: u32,
    pub page_size: u32,
}

/// One page of conversations as the upstream returned it.
#[derive(Clone, Debug)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    pub total_items: u64,
}

impl ListQuery {
    /// The query parameters this route understands, as the OpenAPI document names them.
    pub const PARAMETERS: [&'static str; 7] = [
        "status", "priority", "starred", "type", "tag", "page", "pageSize",
    ];

    /// Parses decoded query pairs. An unknown or repeated parameter is an error too: a
    /// misspelt filter silently ignored would return the wrong conversations.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, Vec<InvalidParam>> {
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut filter = ConversationFilter::default();
        let mut page: i64 = 1;
        let mut page_size: i64 = DEFAULT_PAGE_SIZE.into();

        for (name, value) in pairs {
            if let Some(known) = Self::PARAMETERS.iter().find(|p| **p == name) {
                if seen.contains(known) {
                    errors.push(InvalidParam::parameter(name, "must be given at most once"));
                    continue;
                }
                seen.push(known);
            } else {
                errors.push(InvalidParam::parameter(
                    name,
                    format!(
                        "is not a parameter of this route; known: {}",
                        Self::PARAMETERS.join(", ")
                    ),
                ));
                continue;
            }
            let result = match name.as_str() {
                "status" => ConversationStatus::parse(value).map(|v| filter.status = Some(v)),
                "priority" => Priority::parse(value).map(|v| filter.priority = Some(v)),
                "type" => ConversationType::parse(value).map(|v| filter.kind = Some(v)),
                "starred" => parse_bool(value).map(|v| filter.starred = Some(v)),
                "tag" => {
                    filter.tag = Some(value.clone());
                    Ok(())
                }
                "page" => parse_int(value).map(|v| page = v),
                _ => parse_int(value).map(|v| page_size = v),
            };
            if let Err(detail) = result {
                errors.push(InvalidParam::parameter(name, detail));
            }
        }

        // The bounds, once the values are typed, in the order of their names.
        let page = bounded("page", page, MAX_PAGE, &mut errors);
        let page_size = bounded("pageSize", page_size, MAX_PAGE_SIZE, &mut errors);
        if filter
            .tag
            .as_ref()
            .is_some_and(|tag| !(1..=MAX_TAG_CHARS).contains(&tag.chars().count()))
        {
            errors.push(InvalidParam::parameter(
                "tag",
                format!("must be 1 to {MAX_TAG_CHARS} characters"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ListQuery {
            filter,
            page,
            page_size,
        })
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("must be true or false, got {value:?}")),
    }
}

fn parse_int(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .map_err(|_| format!("must be a whole number, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> Result<ListQuery, Vec<InvalidParam>> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ListQuery::parse(&pairs)
    }

    #[test]
    fn an_empty_query_is_the_first_page_of_twenty() {
        let q = parse(&[]).unwrap();
        assert_eq!((q.page, q.page_size), (1, 20));
        assert_eq!(q.filter, ConversationFilter::default());
    }

    #[test]
    fn every_offending_parameter_is_named() {
        let errors = parse(&[
            ("status", "done"),
            ("pageSize", "500"),
            ("page", "x"),
            ("sort", "id"),
        ])
        .unwrap_err();
        let mut names: Vec<_> = errors
            .iter()
            .map(|e| e.parameter.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["page", "pageSize", "sort", "status"]);
    }
}

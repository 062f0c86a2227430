//! `GET /conversations`: the query string becomes a typed `ListQuery`, or the list of
//! every offending parameter.

use validator::{Validate, ValidationErrors};

use super::{Conversation, ConversationStatus, ConversationType, InvalidParam, Priority};

/// Largest `pageSize`; Qpien documents no bound, and 100 keeps one page inside one
/// upstream call of sensible size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Largest `page`, so that `page × pageSize` always fits the upstream's 32-bit integers.
pub const MAX_PAGE: u32 = 100_000;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_BOUND: i64 = MAX_PAGE as i64;
const MAX_PAGE_SIZE_BOUND: i64 = MAX_PAGE_SIZE as i64;

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

/// The numeric and length bounds, checked by `validator` once the values are typed.
#[derive(Validate)]
struct Bounds {
    #[validate(range(min = 1, max = MAX_PAGE_BOUND, message = "must be a whole number from 1 to 100000"))]
    page: i64,
    #[validate(range(min = 1, max = MAX_PAGE_SIZE_BOUND, message = "must be a whole number from 1 to 100"))]
    page_size: i64,
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    tag: Option<String>,
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

        let bounds = Bounds {
            page,
            page_size,
            tag: filter.tag.clone(),
        };
        if let Err(invalid) = bounds.validate() {
            errors.extend(bounds_errors(&invalid));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ListQuery {
            filter,
            page: u32::try_from(page).expect("validated range"),
            page_size: u32::try_from(page_size).expect("validated range"),
        })
    }
}

fn bounds_errors(invalid: &ValidationErrors) -> Vec<InvalidParam> {
    let mut out = Vec::new();
    for (field, errors) in invalid.field_errors() {
        let name = match field.as_ref() {
            "page_size" => "pageSize",
            other => other,
        };
        for error in errors {
            let detail = error.message.as_deref().unwrap_or("is out of range");
            out.push(InvalidParam::parameter(name, detail));
        }
    }
    out.sort_by(|a, b| a.parameter.cmp(&b.parameter));
    out
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

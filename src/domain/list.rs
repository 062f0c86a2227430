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

    mod properties {
        use actix_web::web;
        use proptest::prelude::*;
        use proptest::sample::select;

        use super::*;

        /// A valid query, from the documented grammar: each filter maybe, a value from its
        /// set; a tag of 1 to 64 characters of any kind; page and pageSize in bounds.
        fn valid() -> impl Strategy<Value = ListQuery> {
            let filter = (
                prop::option::of(select(ConversationStatus::ALL)),
                prop::option::of(select(Priority::ALL)),
                prop::option::of(any::<bool>()),
                prop::option::of(select(ConversationType::ALL)),
                prop::option::of("\\PC{1,64}"),
            )
                .prop_map(|(status, priority, starred, kind, tag)| {
                    ConversationFilter {
                        status,
                        priority,
                        starred,
                        kind,
                        tag,
                    }
                });
            (filter, 1..=MAX_PAGE, 1..=MAX_PAGE_SIZE).prop_map(|(filter, page, page_size)| {
                ListQuery {
                    filter,
                    page,
                    page_size,
                }
            })
        }

        /// `query` as a caller may spell it: every member, in the order given.
        fn pairs(query: &ListQuery) -> Vec<(String, String)> {
            let f = &query.filter;
            let pairs = [
                ("status", f.status.map(|v| v.as_str().to_owned())),
                ("priority", f.priority.map(|v| v.as_str().to_owned())),
                ("starred", f.starred.map(|v| v.to_string())),
                ("type", f.kind.map(|v| v.as_str().to_owned())),
                ("tag", f.tag.clone()),
                ("page", Some(query.page.to_string())),
                ("pageSize", Some(query.page_size.to_string())),
            ];
            pairs
                .into_iter()
                .filter_map(|(name, value)| Some((name.to_owned(), value?)))
                .collect()
        }

        /// Through the URL encoding of a paging link and the decoding of the handler.
        fn through_a_url(pairs: &[(String, String)]) -> Vec<(String, String)> {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in pairs {
                query.append_pair(name, value);
            }
            web::Query::<Vec<(String, String)>>::from_query(&query.finish())
                .unwrap()
                .into_inner()
        }

        fn named(errors: &[InvalidParam]) -> Vec<&str> {
            errors
                .iter()
                .filter_map(|e| e.parameter.as_deref())
                .collect()
        }

        proptest! {
            #[test]
            fn arbitrary_pairs_never_panic(
                pairs in prop::collection::vec(
                    (prop_oneof![select(&ListQuery::PARAMETERS[..]).prop_map(str::to_owned), any::<String>()],
                     any::<String>()),
                    0..10,
                ),
            ) {
                let _ = ListQuery::parse(&pairs);
            }

            #[test]
            fn a_valid_query_in_any_order_survives_a_url_round_trip(
                query in valid(),
                order in any::<prop::sample::Index>(),
            ) {
                let mut spelt = pairs(&query);
                // Any order: parameters are named, not positional.
                let by = order.index(spelt.len());
                spelt.rotate_left(by);
                prop_assert_eq!(ListQuery::parse(&through_a_url(&spelt)), Ok(query));
            }

            #[test]
            fn an_unknown_parameter_is_named(query in valid(), name in "[a-zA-Z_]{1,12}") {
                prop_assume!(!ListQuery::PARAMETERS.contains(&name.as_str()));
                let mut spelt = pairs(&query);
                spelt.push((name.clone(), "1".to_owned()));
                let errors = ListQuery::parse(&spelt).unwrap_err();
                prop_assert_eq!(named(&errors), vec![name.as_str()]);
            }

            #[test]
            fn a_repeated_parameter_is_named(query in valid(), again in 0..7usize) {
                let mut spelt = pairs(&query);
                let repeated = spelt[again % spelt.len()].clone();
                spelt.push(repeated.clone());
                let errors = ListQuery::parse(&spelt).unwrap_err();
                prop_assert_eq!(named(&errors), vec![repeated.0.as_str()]);
            }

            #[test]
            fn page_and_page_size_outside_their_bounds_are_named(
                query in valid(),
                size in prop_oneof![i64::MIN..=0, i64::from(MAX_PAGE_SIZE) + 1..=i64::MAX],
                page in prop_oneof![i64::MIN..=0, i64::from(MAX_PAGE) + 1..=i64::MAX],
                which in 0..2usize,
            ) {
                let (name, value) = [("pageSize", size), ("page", page)][which];
                let mut spelt = pairs(&query);
                spelt.retain(|(n, _)| n != name);
                spelt.push((name.to_owned(), value.to_string()));
                let errors = ListQuery::parse(&spelt).unwrap_err();
                prop_assert_eq!(named(&errors), vec![name]);
            }

            #[test]
            fn a_value_outside_its_set_is_named(
                query in valid(),
                which in 0..7usize,
                value in any::<String>(),
            ) {
                let name = ListQuery::PARAMETERS[which];
                let valid_value = match name {
                    "status" => ConversationStatus::parse(&value).is_ok(),
                    "priority" => Priority::parse(&value).is_ok(),
                    "type" => ConversationType::parse(&value).is_ok(),
                    "starred" => value == "true" || value == "false",
                    "tag" => (1..=MAX_TAG_CHARS).contains(&value.chars().count()),
                    "page" => value.parse::<u32>().is_ok_and(|n| (1..=MAX_PAGE).contains(&n)),
                    _ => value.parse::<u32>().is_ok_and(|n| (1..=MAX_PAGE_SIZE).contains(&n)),
                };
                prop_assume!(!valid_value);
                let mut spelt = pairs(&query);
                spelt.retain(|(n, _)| n != name);
                spelt.push((name.to_owned(), value));
                let errors = ListQuery::parse(&spelt).unwrap_err();
                prop_assert_eq!(named(&errors), vec![name]);
            }
        }
    }
}

//! What each operation is, one row per operation: the single table that the router, the
//! route labels, the `Allow` answers, the scope checks, the OpenAPI problem responses,
//! headers and links, and the Power Automate connector rules are derived from.
//!
//! Adding an operation is writing its handler (with `#[utoipa::path]`), adding its row
//! here, and registering the handler in `routes::configure`; a test fails when a
//! handler has no row or a row no handler (`docs/architecture.md`, "Adding an operation").
//!
//! This file imports only plain enums, so the telemetry and the metrics can name routes
//! through it without depending on the handlers.

use actix_web::http::Method;

use crate::callers::Scope;
use crate::upstream::Class;

/// One operation of the service.
pub struct Operation {
    /// The OpenAPI `operationId`, also the handler's `#[utoipa::path(operation_id)]`.
    pub id: &'static str,
    pub method: Method,
    /// The route pattern, as in the OpenAPI document: `{name}` is one path segment.
    pub path: &'static str,
    /// The scope a caller key needs (`None`: open to every caller).
    pub scope: Option<Scope>,
    /// The problem statuses it can answer; the document gets one response per status,
    /// with an example of each problem kind that can cause it.
    pub problems: &'static [u16],
    /// The share of the rate budget toward Qpien it spends (`None`: it never calls
    /// Qpien on a caller's behalf); such operations report the budget in their headers.
    pub budget: Option<Class>,
    /// The response headers it documents beyond those every answer carries.
    pub headers: &'static [Documented],
    /// Where a client can go from its success answer, `200` or `201` (OpenAPI links).
    pub links: &'static [Link],
    /// Its place in the Power Automate connector.
    pub connector: Connector,
    /// Whether Qpien's webhook signature (`X-Qpien-Signature`), not a caller's
    /// credential, authenticates it.
    pub signed: bool,
    /// Whether it reads the change feed (the event log), never Qpien.
    pub feed: bool,
}

/// Response headers some operations send.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Documented {
    /// `Link` with the neighbouring pages, on `200`.
    PageLinks,
    /// `ETag` of the representation, on `200` (and `304` where it is cached).
    ETag,
    /// `Cache-Control`, `Cache-Status`, `Age` and `Vary`, on `200` and `304`.
    Cached,
}

/// An OpenAPI link from an operation's success answer to another operation on one
/// resource, passing as its `id` parameter the id found at `id` (a runtime expression).
pub struct Link {
    pub name: &'static str,
    pub operation: &'static str,
    pub id: &'static str,
    pub description: &'static str,
}

/// How the connector rendering shows an operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Connector {
    /// Left out: liveness, readiness, metrics, problem explanations.
    Hidden,
    /// An action; `important` names the parameters a maker sees without opening
    /// "advanced"; `pages` says whether its answer holds one page of a list, the next
    /// one at the absolute URL in the body's top-level `nextLink`.
    Action {
        important: &'static [&'static str],
        pages: bool,
    },
    /// A polling trigger (`x-ms-trigger`): Power Automate calls it without a cursor
    /// first, then the URL each answer's `Location` gives. `internal` names the
    /// parameters only those URLs carry, which a maker never sets.
    PollingTrigger {
        important: &'static [&'static str],
        internal: &'static [&'static str],
    },
    /// A webhook trigger (`x-ms-trigger`): Power Automate calls it when a flow is saved,
    /// with the flow's callback URL in the body member `url`, and calls `DELETE` on the
    /// answer's `Location` when the flow is turned off or deleted; each delivery to the
    /// callback URL runs the flow once. `summary` is its name in the flow designer.
    WebhookTrigger {
        summary: &'static str,
        important: &'static [&'static str],
    },
    /// In the connector but hidden from makers: Power Automate's own use (the webhook
    /// trigger's `DELETE`), and the other methods of a path the connector has (so the
    /// document lists every method `Allow` names).
    Internal,
}

/// Every problem status an operation that reads through Qpien can answer.
const READ_PROBLEMS: &[u16] = &[400, 401, 403, 404, 429, 502, 503, 504];

pub const LIST_CONVERSATIONS: Operation = Operation {
    id: "listConversations",
    method: Method::GET,
    path: "/conversations",
    scope: Some(Scope::Read),
    problems: &[400, 401, 403, 429, 502, 503, 504],
    budget: Some(Class::Read),
    headers: &[Documented::PageLinks, Documented::ETag, Documented::Cached],
    links: &[
        Link {
            name: "GetFirstConversation",
            operation: "getConversation",
            id: "$response.body#/items/0/id",
            description: "Read the first conversation of the page.",
        },
        Link {
            name: "UpdateFirstConversation",
            operation: "updateConversation",
            id: "$response.body#/items/0/id",
            description: "Update the first conversation of the page.",
        },
    ],
    connector: Connector::Action {
        important: &["status", "tag"],
        pages: true,
    },
    signed: false,
    feed: false,
};

/// The problem statuses of the operations that read the change feed.
const FEED_PROBLEMS: &[u16] = &[400, 401, 403, 410, 503];

pub const LIST_CONVERSATION_CHANGES: Operation = Operation {
    id: "listConversationChanges",
    method: Method::GET,
    path: "/conversations/changes",
    scope: Some(Scope::Read),
    problems: FEED_PROBLEMS,
    headers: &[Documented::ETag],
    connector: Connector::Action {
        important: &["types"],
        pages: true,
    },
    feed: true,
    ..UNBUDGETED
};

pub const STREAM_EVENTS: Operation = Operation {
    id: "streamEvents",
    method: Method::GET,
    path: "/events",
    scope: Some(Scope::Read),
    problems: &[400, 401, 403, 410, 429, 503],
    feed: true,
    ..UNBUDGETED
};

pub const ON_CONVERSATION_CHANGED: Operation = Operation {
    id: "onConversationChanged",
    method: Method::GET,
    path: "/triggers/conversation-changed",
    scope: Some(Scope::Read),
    problems: &[400, 401, 403, 503],
    connector: Connector::PollingTrigger {
        important: &["types", "conversationId"],
        internal: &["after"],
    },
    feed: true,
    ..UNBUDGETED
};

pub const GET_CONVERSATION: Operation = Operation {
    id: "getConversation",
    method: Method::GET,
    path: "/conversations/{id}",
    scope: Some(Scope::Read),
    problems: READ_PROBLEMS,
    budget: Some(Class::Read),
    headers: &[Documented::ETag, Documented::Cached],
    links: &[Link {
        name: "UpdateConversation",
        operation: "updateConversation",
        id: "$response.body#/id",
        description: "Update this conversation.",
    }],
    connector: Connector::Action {
        important: &["id"],
        pages: false,
    },
    signed: false,
    feed: false,
};

pub const UPDATE_CONVERSATION: Operation = Operation {
    id: "updateConversation",
    method: Method::PATCH,
    path: "/conversations/{id}",
    scope: Some(Scope::Write),
    problems: &[400, 401, 403, 404, 412, 413, 415, 422, 429, 502, 503, 504],
    budget: Some(Class::Write),
    headers: &[Documented::ETag],
    links: &[Link {
        name: "GetConversation",
        operation: "getConversation",
        id: "$response.body#/id",
        description: "Read this conversation again.",
    }],
    connector: Connector::Action {
        important: &["id", "body"],
        pages: false,
    },
    signed: false,
    feed: false,
};

pub const CHECK_LIVENESS: Operation = Operation {
    id: "checkLiveness",
    method: Method::GET,
    path: "/healthz",
    ..UNBUDGETED
};

pub const CHECK_READINESS: Operation = Operation {
    id: "checkReadiness",
    method: Method::GET,
    path: "/readyz",
    problems: &[503],
    ..UNBUDGETED
};

pub const GET_METRICS: Operation = Operation {
    id: "getMetrics",
    method: Method::GET,
    path: "/metrics",
    ..UNBUDGETED
};

pub const DESCRIBE_PROBLEM: Operation = Operation {
    id: "describeProblem",
    method: Method::GET,
    path: "/problems/{slug}",
    problems: &[404],
    ..UNBUDGETED
};

/// The defaults of an operation that serves the service itself, not conversations.
const UNBUDGETED: Operation = Operation {
    id: "",
    method: Method::GET,
    path: "",
    scope: None,
    problems: &[],
    budget: None,
    headers: &[],
    links: &[],
    connector: Connector::Hidden,
    signed: false,
    feed: false,
};

pub const RECEIVE_QPIEN_WEBHOOK: Operation = Operation {
    id: "receiveQpienWebhook",
    method: Method::POST,
    path: "/webhooks/qpien",
    problems: &[400, 401, 404, 413, 503],
    signed: true,
    ..UNBUDGETED
};

/// The problem statuses of the operations on one subscription.
const SUBSCRIPTION_PROBLEMS: &[u16] = &[401, 403, 404, 503];

pub const CREATE_SUBSCRIPTION: Operation = Operation {
    id: "createSubscription",
    method: Method::POST,
    path: "/subscriptions",
    scope: Some(Scope::Write),
    problems: &[400, 401, 403, 409, 413, 422, 503],
    links: &[
        Link {
            name: "GetSubscription",
            operation: "getSubscription",
            id: "$response.body#/id",
            description: "See how this subscription's deliveries go.",
        },
        Link {
            name: "RotateSubscriptionSecret",
            operation: "rotateSubscriptionSecret",
            id: "$response.body#/id",
            description: "Give this subscription a new signing secret.",
        },
        Link {
            name: "EnableSubscription",
            operation: "enableSubscription",
            id: "$response.body#/id",
            description: "Resume this subscription's deliveries once it is disabled.",
        },
        Link {
            name: "DeleteSubscription",
            operation: "deleteSubscription",
            id: "$response.body#/id",
            description: "Stop this subscription's deliveries and remove it.",
        },
    ],
    connector: Connector::WebhookTrigger {
        summary: "When a conversation changes",
        important: &["body"],
    },
    ..UNBUDGETED
};

pub const LIST_SUBSCRIPTIONS: Operation = Operation {
    id: "listSubscriptions",
    method: Method::GET,
    path: "/subscriptions",
    scope: Some(Scope::Write),
    problems: &[401, 403, 503],
    links: &[Link {
        name: "GetFirstSubscription",
        operation: "getSubscription",
        id: "$response.body#/items/0/id",
        description: "See how the first subscription's deliveries go.",
    }],
    // In the connector (hidden from makers), so that its paths list every method they
    // answer, as `Allow` does.
    connector: Connector::Internal,
    ..UNBUDGETED
};

pub const GET_SUBSCRIPTION: Operation = Operation {
    id: "getSubscription",
    method: Method::GET,
    path: "/subscriptions/{id}",
    scope: Some(Scope::Write),
    problems: SUBSCRIPTION_PROBLEMS,
    // In the connector (hidden from makers), so that its paths list every method they
    // answer, as `Allow` does.
    connector: Connector::Internal,
    ..UNBUDGETED
};

pub const DELETE_SUBSCRIPTION: Operation = Operation {
    id: "deleteSubscription",
    method: Method::DELETE,
    path: "/subscriptions/{id}",
    scope: Some(Scope::Write),
    problems: SUBSCRIPTION_PROBLEMS,
    connector: Connector::Internal,
    ..UNBUDGETED
};

pub const ROTATE_SUBSCRIPTION_SECRET: Operation = Operation {
    id: "rotateSubscriptionSecret",
    method: Method::POST,
    path: "/subscriptions/{id}/rotate-secret",
    scope: Some(Scope::Write),
    problems: SUBSCRIPTION_PROBLEMS,
    ..UNBUDGETED
};

pub const ENABLE_SUBSCRIPTION: Operation = Operation {
    id: "enableSubscription",
    method: Method::POST,
    path: "/subscriptions/{id}/enable",
    scope: Some(Scope::Write),
    problems: SUBSCRIPTION_PROBLEMS,
    ..UNBUDGETED
};

/// Every operation, in the order of the OpenAPI document.
pub const OPERATIONS: &[&Operation] = &[
    &LIST_CONVERSATIONS,
    &LIST_CONVERSATION_CHANGES,
    &GET_CONVERSATION,
    &UPDATE_CONVERSATION,
    &STREAM_EVENTS,
    &ON_CONVERSATION_CHANGED,
    &CREATE_SUBSCRIPTION,
    &LIST_SUBSCRIPTIONS,
    &GET_SUBSCRIPTION,
    &DELETE_SUBSCRIPTION,
    &ROTATE_SUBSCRIPTION_SECRET,
    &ENABLE_SUBSCRIPTION,
    &CHECK_LIVENESS,
    &CHECK_READINESS,
    &GET_METRICS,
    &DESCRIBE_PROBLEM,
    &RECEIVE_QPIEN_WEBHOOK,
];

/// Routes that are not operations of the API (the documents and Swagger UI): their
/// pattern and, where another method gets 405, the `Allow` answer. `{_:.*}` is the rest
/// of the path.
pub const PAGES: &[(&str, Option<&str>)] = &[
    ("/openapi.json", Some("GET")),
    ("/openapi-3.0.json", Some("GET")),
    ("/swagger-2.0.json", Some("GET")),
    ("/postman-collection.json", Some("GET")),
    ("/docs", None),
    ("/docs/{_:.*}", None),
    ("/", None),
];

/// The operation named `id`.
pub fn by_id(id: &str) -> Option<&'static Operation> {
    OPERATIONS.iter().copied().find(|op| op.id == id)
}

impl Operation {
    /// Whether the operation takes a request body (its problems may then be about it).
    pub fn has_body(&self) -> bool {
        matches!(self.method, Method::PATCH | Method::POST | Method::PUT)
    }

    /// The budget class of an operation that calls Qpien for its caller.
    pub fn class(&self) -> Class {
        self.budget
            .unwrap_or_else(|| panic!("{} spends no budget", self.id))
    }

    /// Whether it manages webhook subscriptions (`/subscriptions…`).
    pub fn subscriptions(&self) -> bool {
        self.path.starts_with("/subscriptions")
    }

    pub fn documents(&self, header: Documented) -> bool {
        self.headers.contains(&header)
    }
}

/// `path` as `pattern` matches it: each `{name}` takes one segment that is not empty, a
/// final `{_:.*}` the rest of the path; every other character must be equal. Compares
/// strings only, with no allocation, as on the hot path.
pub fn matches(pattern: &str, path: &str) -> bool {
    let mut pattern = pattern;
    let mut path = path;
    loop {
        let Some(open) = pattern.find('{') else {
            return pattern == path;
        };
        let (literal, rest) = pattern.split_at(open);
        let Some(after) = path.strip_prefix(literal) else {
            return false;
        };
        let close = rest.find('}').expect("a `{` in a pattern is closed");
        if &rest[..=close] == "{_:.*}" {
            return true;
        }
        let end = after.find('/').unwrap_or(after.len());
        if end == 0 {
            return false;
        }
        pattern = &rest[close + 1..];
        path = &after[end..];
    }
}

/// The value of the one `{param}` of `pattern` in `path`, when it matches and has one.
pub fn param<'p>(pattern: &str, path: &'p str) -> Option<&'p str> {
    let open = pattern.find('{')?;
    if !matches(pattern, path) {
        return None;
    }
    // `matches` held `path` to the pattern's literal up to `open`.
    let value = &path[open..];
    Some(&value[..value.find('/').unwrap_or(value.len())])
}

/// The name of the one `{param}` of `pattern`.
pub fn param_name(pattern: &str) -> Option<&str> {
    let open = pattern.find('{')?;
    let close = pattern.find('}')?;
    Some(&pattern[open + 1..close])
}

/// Whether an operation's pattern without a parameter is `path`: such a route wins over
/// patterns with one (`/conversations/changes` is no conversation id).
pub fn is_literal_route(path: &str) -> bool {
    OPERATIONS.iter().any(|op| op.path == path)
}

/// Every method some operation answers (in the order of `OPERATIONS`): what a page of
/// an allowed origin may send (CORS).
pub fn methods() -> Vec<Method> {
    let mut methods: Vec<Method> = Vec::new();
    for op in OPERATIONS {
        if !methods.contains(&op.method) {
            methods.push(op.method.clone());
        }
    }
    methods
}

/// The methods `path` answers, for `Allow`: those of the operations whose pattern it
/// matches (in the order of `OPERATIONS`; a literal pattern hides those with a
/// parameter), else those of the page it is.
pub fn allowed(path: &str) -> Option<String> {
    let mut methods: Vec<&str> = Vec::new();
    let literal = is_literal_route(path);
    let candidates = OPERATIONS
        .iter()
        .filter(|op| matches(op.path, path) && (!literal || op.path == path));
    for op in candidates {
        if !methods.contains(&op.method.as_str()) {
            methods.push(op.method.as_str());
        }
    }
    if methods.is_empty() {
        return PAGES
            .iter()
            .find(|(pattern, _)| matches(pattern, path))
            .and_then(|(_, allow)| allow.map(str::to_owned));
    }
    Some(methods.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_take_one_segment_per_parameter() {
        assert!(matches("/conversations/{id}", "/conversations/abc"));
        assert!(!matches("/conversations/{id}", "/conversations/"));
        assert!(!matches("/conversations/{id}", "/conversations/a/b"));
        assert!(matches("/c/{id}/messages", "/c/x/messages"));
        assert!(!matches("/c/{id}/messages", "/c/x/messagesx"));
        assert!(matches("/docs/{_:.*}", "/docs/a/b"));
        assert!(matches("/docs/{_:.*}", "/docs/"));
        assert!(!matches("/docs/{_:.*}", "/docs"));
        assert!(matches("/healthz", "/healthz"));
        assert!(!matches("/healthz", "/healthz/"));
    }

    #[test]
    fn a_parameter_is_read_from_its_segment() {
        assert_eq!(
            param("/conversations/{id}", "/conversations/abc"),
            Some("abc")
        );
        assert_eq!(param("/c/{id}/messages", "/c/x/messages"), Some("x"));
        assert_eq!(param("/c/{id}/messages", "/c/x/y"), None);
        assert_eq!(param("/healthz", "/healthz"), None);
    }

    #[test]
    fn every_link_leads_to_an_operation_on_one_resource() {
        for operation in OPERATIONS {
            for link in operation.links {
                let target = by_id(link.operation)
                    .unwrap_or_else(|| panic!("{}: {} is no operation", operation.id, link.name));
                assert!(
                    target.path.contains("{id}"),
                    "{}: {} leads to {}, which takes no id",
                    operation.id,
                    link.name,
                    target.id
                );
                assert!(link.id.starts_with("$response.body#/"), "{}", link.id);
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_and_each_method_and_path_has_one_operation() {
        for (i, a) in OPERATIONS.iter().enumerate() {
            for b in &OPERATIONS[i + 1..] {
                assert_ne!(a.id, b.id);
                assert!(
                    a.method != b.method || a.path != b.path,
                    "{} and {} share a method and path",
                    a.id,
                    b.id
                );
            }
        }
    }

    #[test]
    fn allow_lists_the_methods_of_a_path() {
        assert_eq!(allowed("/conversations/x").as_deref(), Some("GET, PATCH"));
        assert_eq!(allowed("/conversations").as_deref(), Some("GET"));
        assert_eq!(allowed("/conversations/changes").as_deref(), Some("GET"));
        assert_eq!(allowed("/openapi.json").as_deref(), Some("GET"));
        assert_eq!(allowed("/nothing"), None);
    }

    #[test]
    fn the_methods_of_all_operations_are_each_listed_once() {
        assert_eq!(
            methods(),
            [Method::GET, Method::PATCH, Method::POST, Method::DELETE]
        );
    }
}

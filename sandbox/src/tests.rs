//! Tests of the sandbox: agreement of the served schema with the SDL contract, and its
//! documented behaviour exercised over real HTTP with the facade's own operation documents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::time::Duration;

use apollo_compiler::Schema as ApolloSchema;
use apollo_compiler::schema::ExtendedType;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::*;

// The contract and the operation documents are the facade's (the root package's): the
// sandbox is held to what the facade assumes of Qpien and sends to it.

pub(crate) const CONTRACT: &str = include_str!("../../src/upstream/graphql/schema.graphql");
pub(crate) const FIELDS: &str =
    include_str!("../../src/upstream/graphql/conversation_fields.graphql");
pub(crate) const TOKEN_OP: &str =
    include_str!("../../src/upstream/graphql/generate_oauth_token.graphql");
pub(crate) const GET_OP: &str = include_str!("../../src/upstream/graphql/get_conversation.graphql");
pub(crate) const LIST_OP: &str =
    include_str!("../../src/upstream/graphql/get_conversation_list.graphql");
pub(crate) const UPDATE_OP: &str =
    include_str!("../../src/upstream/graphql/update_conversation.graphql");

// ---- schema agreement ----

fn norm(description: Option<&apollo_compiler::Node<str>>) -> String {
    description
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn input_value(v: &apollo_compiler::ast::InputValueDefinition) -> String {
    let default = v.default_value.as_ref().map(|d| format!(" = {d}"));
    format!(
        "{}{} \"{}\"",
        v.ty,
        default.unwrap_or_default(),
        norm(v.description.as_ref())
    )
}

/// Every type, field, argument, enum value and input field, with its type, default and
/// description, keyed by a path like `Query.getConversationList(page)`.
fn normalised(sdl: &str, origin: &str) -> BTreeMap<String, String> {
    let schema = ApolloSchema::parse_and_validate(sdl, origin)
        .unwrap_or_else(|e| panic!("{origin} is not a valid schema: {e}"));
    let mut map = BTreeMap::new();
    let roots = &schema.schema_definition;
    map.insert(
        "schema".to_owned(),
        format!(
            "query: {:?} mutation: {:?} subscription: {:?}",
            roots.query.as_ref().map(|n| n.name.as_str()),
            roots.mutation.as_ref().map(|n| n.name.as_str()),
            roots.subscription.as_ref().map(|n| n.name.as_str()),
        ),
    );
    for (name, ty) in &schema.types {
        if ty.is_built_in() {
            continue;
        }
        let (kind, description) = match ty {
            ExtendedType::Scalar(t) => ("scalar", &t.description),
            ExtendedType::Object(t) => ("type", &t.description),
            ExtendedType::Interface(t) => ("interface", &t.description),
            ExtendedType::Union(t) => ("union", &t.description),
            ExtendedType::Enum(t) => ("enum", &t.description),
            ExtendedType::InputObject(t) => ("input", &t.description),
        };
        map.insert(
            name.to_string(),
            format!("{kind} \"{}\"", norm(description.as_ref())),
        );
        match ty {
            ExtendedType::Object(t) => {
                for (field_name, field) in &t.fields {
                    map.insert(
                        format!("{name}.{field_name}"),
                        format!("{} \"{}\"", field.ty, norm(field.description.as_ref())),
                    );
                    for arg in &field.arguments {
                        map.insert(
                            format!("{name}.{field_name}({})", arg.name),
                            input_value(arg),
                        );
                    }
                }
                let implements: Vec<_> = t.implements_interfaces.iter().collect();
                if !implements.is_empty() {
                    map.insert(format!("{name} implements"), format!("{implements:?}"));
                }
            }
            ExtendedType::Enum(t) => {
                for (value, def) in &t.values {
                    map.insert(
                        format!("{name}.{value}"),
                        format!("\"{}\"", norm(def.description.as_ref())),
                    );
                }
            }
            ExtendedType::InputObject(t) => {
                for (field_name, field) in &t.fields {
                    map.insert(format!("{name}.{field_name}"), input_value(field));
                }
            }
            _ => {}
        }
    }
    map
}

#[test]
fn served_schema_agrees_with_the_contract() {
    let served = served_sdl();
    let expected = normalised(CONTRACT, "schema.graphql");
    let actual = normalised(&served, "served.graphql");
    assert_eq!(
        actual, expected,
        "the sandbox does not serve the contract schema; served SDL:\n{served}"
    );
}

// ---- configuration ----

#[test]
fn config_from_settings() {
    let none = SandboxConfig::from_lookup(|_| None).unwrap();
    assert_eq!(none.token_ttl, Duration::from_secs(3600));
    assert_eq!(none.rate_limit_per_minute, 100);

    let set = SandboxConfig::from_lookup(|name| {
        Some(match name {
            "SANDBOX_TOKEN_TTL_SECS" => " 5 ".to_owned(),
            _ => "7".to_owned(),
        })
    })
    .unwrap();
    assert_eq!(set.token_ttl, Duration::from_secs(5));
    assert_eq!(set.rate_limit_per_minute, 7);

    for bad in ["0", "-1", "abc", "", "1.5", "99999999999"] {
        let err = SandboxConfig::from_lookup(|name| {
            (name == "SANDBOX_RATE_LIMIT_PER_MINUTE").then(|| bad.to_owned())
        })
        .unwrap_err();
        assert!(err.contains("SANDBOX_RATE_LIMIT_PER_MINUTE"), "{err}");
    }
    assert!(
        SandboxConfig::from_lookup(|n| (n == "SANDBOX_TOKEN_TTL_SECS").then(|| "0".into()))
            .is_err()
    );
}

#[test]
fn activity_and_webhook_settings() {
    let quiet = SandboxConfig::from_lookup(|_| None).unwrap();
    assert_eq!(
        quiet.activity_per_minute, 0,
        "tests are quiet unless they ask"
    );
    assert_eq!(quiet.webhook_max_attempts, None);
    let busy = SandboxConfig {
        activity_per_minute: 60,
        ..Default::default()
    };
    let kept = SandboxConfig::from_lookup_over(busy.clone(), |_| None).unwrap();
    assert_eq!(
        kept.activity_per_minute, 60,
        "the caller's default holds when unset"
    );
    let set = SandboxConfig::from_lookup_over(busy, |name| match name {
        "SANDBOX_ACTIVITY_PER_MINUTE" => Some("0".into()),
        "SANDBOX_ACTIVITY_SEED" => Some("42".into()),
        "SANDBOX_WEBHOOK_MAX_ATTEMPTS" => Some("5".into()),
        _ => None,
    })
    .unwrap();
    assert_eq!(
        (
            set.activity_per_minute,
            set.activity_seed,
            set.webhook_max_attempts
        ),
        (0, 42, Some(5))
    );
    for (name, bad) in [
        ("SANDBOX_ACTIVITY_PER_MINUTE", "60001"),
        ("SANDBOX_ACTIVITY_PER_MINUTE", "-1"),
        ("SANDBOX_ACTIVITY_SEED", "x"),
        ("SANDBOX_WEBHOOK_MAX_ATTEMPTS", "0"),
    ] {
        let err = SandboxConfig::from_lookup(|n| (n == name).then(|| bad.to_owned())).unwrap_err();
        assert!(err.contains(name), "{err}");
    }

    let none = WebhookRegistration::from_lookup(|_| None).unwrap();
    assert_eq!(none, None);
    let settings = |pairs: &'static [(&'static str, &'static str)]| {
        WebhookRegistration::from_lookup(move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    };
    let all = settings(&[
        ("SANDBOX_WEBHOOK_URL", "http://facade:8080/webhooks/qpien"),
        ("SANDBOX_WEBHOOK_SECRET", "s3cret"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(all.events, WebhookEvent::ALL);
    assert_eq!(all.secret, "s3cret");
    let some = settings(&[
        ("SANDBOX_WEBHOOK_URL", "http://facade:8080/webhooks/qpien"),
        ("SANDBOX_WEBHOOK_SECRET", "s3cret"),
        (
            "SANDBOX_WEBHOOK_EVENTS",
            "JOIN_CONVERSATION, CONVERSATION_UPDATED",
        ),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        some.events,
        [
            WebhookEvent::JoinConversation,
            WebhookEvent::ConversationUpdated
        ]
    );
    for bad in [
        &[("SANDBOX_WEBHOOK_URL", "http://facade:8080/")][..],
        &[("SANDBOX_WEBHOOK_SECRET", "s3cret")][..],
        &[
            ("SANDBOX_WEBHOOK_URL", "http://facade:8080/"),
            ("SANDBOX_WEBHOOK_SECRET", "s3cret"),
            (
                "SANDBOX_WEBHOOK_EVENTS",
                "NEW_INCOMING_MESSAGE,MESSAGE_DELETED",
            ),
        ][..],
    ] {
        assert!(settings(bad).is_err(), "{bad:?}");
    }
}

// ---- HTTP behaviour ----

pub(crate) struct Harness {
    pub(crate) sandbox: Sandbox,
    pub(crate) http: reqwest::Client,
}

pub(crate) struct Answer {
    status: u16,
    headers: HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {}", self.body))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    /// Asserts the documented error shape and returns the code.
    fn error(&self) -> &str {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(
            self.body["errors"][0]["success"],
            json!(false),
            "{}",
            self.body
        );
        assert!(self.body["data"].is_null(), "{}", self.body);
        self.code()
    }
}

impl Harness {
    pub(crate) fn start(config: SandboxConfig) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Harness {
            sandbox: Sandbox::start(listener, config).unwrap(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, token: Option<&str>, body: Value) -> Answer {
        let mut request = self.http.post(self.sandbox.url()).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub(crate) async fn call(&self, token: Option<&str>, op: &str, variables: Value) -> Answer {
        let query = if op.contains("...ConversationFields") {
            format!("{op}\n{FIELDS}")
        } else {
            op.to_owned()
        };
        self.send(token, json!({"query": query, "variables": variables}))
            .await
    }

    async fn token_for(&self, id: &str, secret: &str) -> String {
        let answer = self
            .call(
                None,
                TOKEN_OP,
                json!({"clientId": id, "clientSecret": secret}),
            )
            .await;
        answer.body["data"]["generateOAuthToken"]["accessToken"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {}", answer.body))
            .to_owned()
    }

    pub(crate) async fn token(&self) -> String {
        self.token_for(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).await
    }

    async fn list(&self, token: &str, filter: Value, page: i64, limit: i64) -> Answer {
        self.call(
            Some(token),
            LIST_OP,
            json!({"filter": filter, "page": page, "limit": limit}),
        )
        .await
    }
}

pub(crate) fn conversation_id(n: usize) -> String {
    format!("6650a1{n:018x}")
}

#[tokio::test]
async fn token_happy_path_and_counters() {
    let h = Harness::start(SandboxConfig::default());
    let answer = h
        .call(
            None,
            TOKEN_OP,
            json!({"clientId": DEMO_CLIENT_ID, "clientSecret": DEMO_CLIENT_SECRET}),
        )
        .await;
    assert_eq!(answer.status, 200);
    let token = &answer.body["data"]["generateOAuthToken"];
    assert_eq!(token["tokenType"], "Bearer");
    assert_eq!(token["expiresIn"], 3600);
    assert_eq!(
        token["scopes"],
        json!(["read_conversations", "write_conversations"])
    );
    let access = token["accessToken"].as_str().unwrap();
    assert_eq!(access.len(), 64);
    assert_ne!(access, h.token().await, "tokens are fresh each time");
    assert!(answer.body.get("errors").is_none());

    let response = h
        .http
        .post(h.sandbox.url())
        .bearer_auth(access)
        .header("X-Request-Id", "req-123")
        .json(&json!({
            "query": format!("{GET_OP}\n{FIELDS}"),
            "variables": {"conversationId": conversation_id(1)}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["X-RateLimit-Limit"], "100");
    let body: Value = response.json().await.unwrap();
    let conversation = &body["data"]["getConversation"];
    assert_eq!(conversation["_id"], conversation_id(1));
    assert!(
        conversation["lastMessage"]["createdAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    let stats = h.sandbox.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.operations["generateOAuthToken"], 2);
    assert_eq!(stats.operations["getConversation"], 1);
    assert_eq!(stats.last_request_id.as_deref(), Some("req-123"));
    h.sandbox.stop().await;
}

#[tokio::test]
async fn wrong_credentials_give_invalid_client() {
    let h = Harness::start(SandboxConfig::default());
    for (id, secret) in [
        (DEMO_CLIENT_ID, "wrong"),
        (DEMO_CLIENT_ID, READ_ONLY_CLIENT_SECRET),
        ("nobody", DEMO_CLIENT_SECRET),
    ] {
        let answer = h
            .call(
                None,
                TOKEN_OP,
                json!({"clientId": id, "clientSecret": secret}),
            )
            .await;
        assert_eq!(answer.error(), "INVALID_CLIENT");
    }
}

#[tokio::test]
async fn missing_or_unknown_token_gives_unauthorized() {
    let h = Harness::start(SandboxConfig::default());
    let vars = json!({"conversationId": conversation_id(1)});
    for token in [None, Some("not-a-token")] {
        let answer = h.call(token, GET_OP, vars.clone()).await;
        assert_eq!(answer.error(), "UNAUTHORIZED");
        assert!(
            answer
                .header("X-RateLimit-Remaining")
                .parse::<u32>()
                .is_ok()
        );
    }
}

#[tokio::test]
async fn old_token_gives_token_expired() {
    let h = Harness::start(SandboxConfig {
        token_ttl: Duration::from_secs(1),
        ..SandboxConfig::default()
    });
    let token = h.token().await;
    let vars = json!({"conversationId": conversation_id(2)});
    assert!(h.call(Some(&token), GET_OP, vars.clone()).await.body["errors"].is_null());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answer = h.call(Some(&token), GET_OP, vars).await;
    assert_eq!(answer.error(), "TOKEN_EXPIRED");
}

#[tokio::test]
async fn read_only_client_cannot_update() {
    let h = Harness::start(SandboxConfig::default());
    let token = h
        .token_for(READ_ONLY_CLIENT_ID, READ_ONLY_CLIENT_SECRET)
        .await;
    let id = conversation_id(3);
    let read = h
        .call(Some(&token), GET_OP, json!({"conversationId": id}))
        .await;
    assert!(read.body["errors"].is_null(), "{}", read.body);

    let answer = h
        .call(
            Some(&token),
            UPDATE_OP,
            json!({"conversationId": id, "input": {"isStarred": true}}),
        )
        .await;
    assert_eq!(answer.error(), "INSUFFICIENT_SCOPES");
    assert_eq!(
        answer.body["errors"][0]["extensions"]["requiredScope"],
        "write_conversations"
    );
    assert_eq!(
        answer.body["errors"][0]["message"],
        "Insufficient scopes for this operation"
    );
}

#[tokio::test]
async fn unknown_or_malformed_ids() {
    let h = Harness::start(SandboxConfig::default());
    let token = h.token().await;
    let get = |id: &str| h.call(Some(&token), GET_OP, json!({"conversationId": id}));

    let answer = get(&conversation_id(9999)).await;
    assert_eq!(answer.error(), "NOT_FOUND");
    assert_eq!(
        answer.body["errors"][0]["message"],
        "Conversation not found"
    );
    assert_eq!(get("not-an-id").await.error(), "BAD_USER_INPUT");
    assert_eq!(
        get("6650a1zzzzzzzzzzzzzzzzzz").await.error(),
        "BAD_USER_INPUT"
    );

    let update = h
        .call(
            Some(&token),
            UPDATE_OP,
            json!({"conversationId": conversation_id(9999), "input": {"isStarred": true}}),
        )
        .await;
    assert_eq!(update.error(), "NOT_FOUND");
}

#[tokio::test]
async fn list_filters_pages_and_counts() {
    let h = Harness::start(SandboxConfig::default());
    let token = h.token().await;

    let all = h.list(&token, Value::Null, 1, 100).await;
    let all = &all.body["data"]["getConversationList"];
    let total = all["totalCount"].as_u64().unwrap() as usize;
    assert_eq!(total, data::CONVERSATION_COUNT);
    let dates: Vec<&str> = all["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["lastMessage"]["createdAt"].as_str().unwrap())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "most recent first");

    // Paging walks the same order without gaps or overlaps.
    let mut paged = Vec::new();
    for page in 1..=4 {
        let answer = h.list(&token, Value::Null, page, 25).await;
        let list = &answer.body["data"]["getConversationList"];
        assert_eq!(list["page"], page);
        assert_eq!(list["limit"], 25);
        assert_eq!(list["totalCount"], total);
        paged.extend(list["conversations"].as_array().unwrap().clone());
    }
    assert_eq!(&paged, all["conversations"].as_array().unwrap());

    let filter = json!({"status": "OPEN", "priority": "HIGH", "tagName": "vip"});
    let answer = h.list(&token, filter, 1, 100).await;
    let list = &answer.body["data"]["getConversationList"];
    let found = list["conversations"].as_array().unwrap();
    assert_eq!(list["totalCount"], found.len());
    assert!(
        !found.is_empty(),
        "the seed has an OPEN, HIGH, vip conversation"
    );
    for c in found {
        assert_eq!(c["status"], "OPEN");
        assert_eq!(c["priority"], "HIGH");
        assert!(
            c["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "vip")
        );
    }

    let starred = h
        .list(&token, json!({"isStarred": true, "type": "GROUP"}), 1, 100)
        .await;
    for c in starred.body["data"]["getConversationList"]["conversations"]
        .as_array()
        .unwrap()
    {
        assert_eq!(c["isStarred"], true);
        assert_eq!(c["type"], "GROUP");
        assert_eq!(c["isGroupOrChannel"], true);
    }

    let past_end = h.list(&token, Value::Null, 99, 20).await;
    let list = &past_end.body["data"]["getConversationList"];
    assert_eq!(list["conversations"], json!([]));
    assert_eq!(list["totalCount"], total);

    for (page, limit) in [(0, 20), (1, 0), (1, 101)] {
        assert_eq!(
            h.list(&token, Value::Null, page, limit).await.error(),
            "BAD_USER_INPUT"
        );
    }

    // The SDL defaults apply when page and limit are left out.
    let defaults = h
        .send(
            Some(&token),
            json!({"query": "{ getConversationList { page limit totalCount } }"}),
        )
        .await;
    assert_eq!(
        defaults.body["data"]["getConversationList"],
        json!({"page": 1, "limit": 20, "totalCount": total})
    );
}

#[tokio::test]
async fn updates_apply_and_persist() {
    let h = Harness::start(SandboxConfig::default());
    let token = h.token().await;
    let id = conversation_id(4);
    let update = |input: Value| {
        h.call(
            Some(&token),
            UPDATE_OP,
            json!({"conversationId": id, "input": input}),
        )
    };
    let get = || h.call(Some(&token), GET_OP, json!({"conversationId": id}));
    let before = get().await.body["data"]["getConversation"].clone();

    let agent = "6650a3000000000000000abc";
    let answer = update(json!({
        "status": "RESOLVED", "priority": "URGENT", "isStarred": true,
        "tagNames": ["bug", "refund"], "joinedPerson": agent
    }))
    .await;
    let updated = &answer.body["data"]["updateConversation"];
    assert_eq!(updated["status"], "RESOLVED");
    assert_eq!(updated["priority"], "URGENT");
    assert_eq!(updated["isStarred"], true);
    assert_eq!(updated["joinedPerson"], agent);
    let names: Vec<&str> = updated["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bug", "refund"]);
    assert!(
        updated["tags"][0]["color"]
            .as_str()
            .unwrap()
            .starts_with('#')
    );
    assert_eq!(updated["lastMessage"], before["lastMessage"]);
    assert_eq!(&get().await.body["data"]["getConversation"], updated);

    // Refused updates change nothing.
    for input in [
        json!({"tagNames": ["bug", "no-such-tag"], "status": "OPEN"}),
        json!({}),
        json!({"joinedPerson": "agent-7"}),
        json!({"joinedPerson": agent, "unsetJoinedPerson": true}),
    ] {
        let answer = update(input.clone()).await;
        assert_eq!(answer.error(), "BAD_USER_INPUT", "{input}");
    }
    let unknown = update(json!({"tagNames": ["no-such-tag"]})).await;
    assert!(
        unknown.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-tag")
    );
    assert_eq!(&get().await.body["data"]["getConversation"], updated);

    let cleared = update(json!({"unsetJoinedPerson": true, "tagNames": []})).await;
    let cleared = &cleared.body["data"]["updateConversation"];
    assert!(cleared["joinedPerson"].is_null());
    assert_eq!(cleared["tags"], json!([]));
    assert_eq!(&get().await.body["data"]["getConversation"], cleared);

    // Another sandbox has its own, untouched data.
    let other = Harness::start(SandboxConfig::default());
    let other_token = other.token().await;
    let fresh = other
        .call(Some(&other_token), GET_OP, json!({"conversationId": id}))
        .await;
    assert_eq!(fresh.body["data"]["getConversation"], before);
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let h = Harness::start(SandboxConfig {
        rate_limit_per_minute: 3,
        ..SandboxConfig::default()
    });
    let token = h.token().await; // 1st request of demo-client
    let vars = json!({"conversationId": conversation_id(1)});
    for remaining in [1, 0] {
        let answer = h.call(Some(&token), GET_OP, vars.clone()).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("X-RateLimit-Limit"), "3");
        assert_eq!(
            answer.header("X-RateLimit-Remaining"),
            remaining.to_string()
        );
        let reset: u64 = answer.header("X-RateLimit-Reset").parse().unwrap();
        assert!((1..=60).contains(&reset));
    }
    let limited = h.call(Some(&token), GET_OP, vars.clone()).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.body,
        json!({"errors":[{"message":"Too many requests","extensions":{"code":"RATE_LIMITED"},"success":false}]})
    );
    assert_eq!(limited.header("X-RateLimit-Remaining"), "0");
    assert_eq!(limited.header("X-RateLimit-Limit"), "3");
    let retry: u64 = limited.header("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        limited.header("X-RateLimit-Reset"),
        limited.header("Retry-After")
    );

    // Other clients have their own window.
    let other = h.call(None, GET_OP, vars).await;
    assert_eq!(other.error(), "UNAUTHORIZED");
    assert_eq!(other.header("X-RateLimit-Remaining"), "2");
    assert_eq!(h.sandbox.stats().operations["getConversation"], 3);
}

#[tokio::test]
async fn seed_covers_every_status_priority_and_type() {
    let h = Harness::start(SandboxConfig::default());
    let token = h.token().await;
    let answer = h.list(&token, Value::Null, 1, 100).await;
    let conversations = answer.body["data"]["getConversationList"]["conversations"]
        .as_array()
        .unwrap()
        .clone();
    assert!(conversations.len() >= 64);
    let pairs: BTreeSet<(String, String)> = conversations
        .iter()
        .map(|c| (c["status"].to_string(), c["priority"].to_string()))
        .collect();
    assert_eq!(pairs.len(), 16, "every status × priority: {pairs:?}");
    let set = |key: &str| -> BTreeSet<String> {
        conversations.iter().map(|c| c[key].to_string()).collect()
    };
    assert_eq!(set("type").len(), 3);
    assert_eq!(set("isStarred").len(), 2);
    assert_eq!(set("customer").len(), 1);
    let channel_kinds: BTreeSet<String> = conversations
        .iter()
        .flat_map(|c| c["channels"].as_array().unwrap().clone())
        .map(|ch| ch["channelType"].to_string())
        .collect();
    assert!(channel_kinds.len() >= 4, "{channel_kinds:?}");
    let ids: BTreeSet<String> = set("_id");
    assert_eq!(ids.len(), conversations.len());
    for c in &conversations {
        let id = c["_id"].as_str().unwrap();
        assert!(data::is_object_id(id) && id == id.to_lowercase());
        assert_eq!(c["isGroupOrChannel"], c["type"] != "DIRECT");
        assert!(c["tags"].as_array().unwrap().len() <= 3);
        assert!(c["lastMessage"]["createdAt"].as_str().unwrap() <= "2026-11-01T12:00:00Z");
    }
    let joined = conversations
        .iter()
        .filter(|c| !c["joinedPerson"].is_null())
        .count();
    assert!(joined * 2 > conversations.len());
}

#[tokio::test]
async fn malformed_body_and_healthz() {
    let h = Harness::start(SandboxConfig::default());
    let response = h
        .http
        .post(h.sandbox.url())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().contains_key("X-RateLimit-Reset"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["success"], false);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    // An invalid query is a GraphQL error, still in the documented shape.
    let invalid = h.send(None, json!({"query": "{ noSuchField }"})).await;
    assert_eq!(invalid.error(), "GRAPHQL_VALIDATION_FAILED");

    let health = h
        .http
        .get(h.sandbox.url().replace("/api/v1", "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    assert_eq!(h.sandbox.stats().requests, 2);
}

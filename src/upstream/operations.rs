//! The GraphQL operations the facade sends. Each is a document under `graphql/`, checked
//! against `graphql/schema.graphql` by `build.rs`, so a wrong field name fails the build.
//! Values always travel as variables; the documents are constants, and so is everything
//! of a request body but the variables: made once per operation, then copied.

use std::sync::OnceLock;

use actix_web::web::Bytes;
use serde::Serialize;

pub struct Operation {
    /// `operationName`, also the label of logs and metrics.
    pub name: &'static str,
    /// Root field whose value is the result.
    pub root_field: &'static str,
    pub document: &'static str,
    /// Whether repeating it is harmless (the queries); mutations are never retried.
    pub read_only: bool,
    body_parts: OnceLock<BodyParts>,
}

/// A request body up to the variables, and after them.
struct BodyParts {
    head: Box<[u8]>,
    tail: Box<[u8]>,
}

impl Operation {
    const fn new(
        name: &'static str,
        root_field: &'static str,
        document: &'static str,
        read_only: bool,
    ) -> Self {
        Self {
            name,
            root_field,
            document,
            read_only,
            body_parts: OnceLock::new(),
        }
    }

    /// The JSON body of a request: `{"query":…,"variables":…,"operationName":…}`.
    pub fn request_body(&self, variables: &impl Serialize) -> Bytes {
        let BodyParts { head, tail } = self.body_parts.get_or_init(|| {
            let json = |value: &str| serde_json::to_string(value).expect("a string serialises");
            BodyParts {
                head: format!("{{\"query\":{},\"variables\":", json(self.document))
                    .into_bytes()
                    .into(),
                tail: format!(",\"operationName\":{}}}", json(self.name))
                    .into_bytes()
                    .into(),
            }
        });
        let mut body = Vec::with_capacity(head.len() + 64 + tail.len());
        body.extend_from_slice(head);
        serde_json::to_writer(&mut body, variables).expect("variables serialise");
        body.extend_from_slice(tail);
        body.into()
    }
}

macro_rules! with_fragment {
    ($file:literal) => {
        concat!(
            include_str!($file),
            "\n",
            include_str!("graphql/conversation_fields.graphql")
        )
    };
}

pub static GET_CONVERSATION: Operation = Operation::new(
    "GetConversation",
    "getConversation",
    with_fragment!("graphql/get_conversation.graphql"),
    true,
);

pub static GET_CONVERSATION_LIST: Operation = Operation::new(
    "GetConversationList",
    "getConversationList",
    with_fragment!("graphql/get_conversation_list.graphql"),
    true,
);

pub static UPDATE_CONVERSATION: Operation = Operation::new(
    "UpdateConversation",
    "updateConversation",
    with_fragment!("graphql/update_conversation.graphql"),
    false,
);

pub static GENERATE_OAUTH_TOKEN: Operation = Operation::new(
    "GenerateOAuthToken",
    "generateOAuthToken",
    include_str!("graphql/generate_oauth_token.graphql"),
    false,
);

/// A probe for `/readyz`: any GraphQL answer, even an auth error, proves the upstream is up.
pub static PING: Operation = Operation::new(
    "Ping",
    "__typename",
    include_str!("graphql/ping.graphql"),
    true,
);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_request_body_is_the_json_of_query_variables_and_operation_name() {
        let variables = json!({ "conversationId": "6650a1000000000000000001" });
        for _ in 0..2 {
            let body = GET_CONVERSATION.request_body(&variables);
            let expected = json!({
                "query": GET_CONVERSATION.document,
                "variables": variables,
                "operationName": GET_CONVERSATION.name,
            });
            assert_eq!(body, serde_json::to_vec(&expected).unwrap());
        }
    }
}

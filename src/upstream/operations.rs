//! The GraphQL operations the facade sends. Each is a document under `graphql/`, checked
//! against `graphql/schema.graphql` by `build.rs`, so a wrong field name fails the build.
//! Values always travel as variables; the documents are constants.

pub struct Operation {
    /// `operationName`, also the label of logs and metrics.
    pub name: &'static str,
    /// Root field whose value is the result.
    pub root_field: &'static str,
    pub document: &'static str,
    /// Whether repeating it is harmless (the queries); mutations are never retried.
    pub read_only: bool,
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

pub const GET_CONVERSATION: Operation = Operation {
    name: "GetConversation",
    root_field: "getConversation",
    document: with_fragment!("graphql/get_conversation.graphql"),
    read_only: true,
};

pub const GET_CONVERSATION_LIST: Operation = Operation {
    name: "GetConversationList",
    root_field: "getConversationList",
    document: with_fragment!("graphql/get_conversation_list.graphql"),
    read_only: true,
};

pub const UPDATE_CONVERSATION: Operation = Operation {
    name: "UpdateConversation",
    root_field: "updateConversation",
    document: with_fragment!("graphql/update_conversation.graphql"),
    read_only: false,
};

pub const GENERATE_OAUTH_TOKEN: Operation = Operation {
    name: "GenerateOAuthToken",
    root_field: "generateOAuthToken",
    document: include_str!("graphql/generate_oauth_token.graphql"),
    read_only: false,
};

/// A probe for `/readyz`: any GraphQL answer, even an auth error, proves the upstream is up.
pub const PING: Operation = Operation {
    name: "Ping",
    root_field: "__typename",
    document: include_str!("graphql/ping.graphql"),
    read_only: true,
};

//! The GraphQL schema the sandbox serves: its resolvers, over the types of `types.rs`.
//!
//! It mirrors `src/upstream/graphql/schema.graphql`. The doc comments on the resolvers
//! below *are* their GraphQL descriptions, so they must stay word for word those of the
//! SDL file; the schema-agreement test checks this. Internal notes therefore use `//`
//! comments.

use std::sync::Arc;

use async_graphql::{Context, EmptySubscription, Error, ID, Object, Result, Schema};

use super::auth::{self, Caller, READ_CONVERSATIONS, TokenStore, WRITE_CONVERSATIONS};
use super::data::{Store, StoreError};
use super::events::{self, WebhookEvent};
use super::types::{
    ConversationListFilterInput, ConversationListOutput, ExternalConversation, OAuthToken,
    UpdateConversationInput, coded_error,
};
use super::webhooks::Webhooks;

pub(crate) type SandboxSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Builds the schema; `store`, `tokens` and `webhooks` are this sandbox instance's own state.
pub(crate) fn build(
    store: Arc<Store>,
    tokens: Arc<TokenStore>,
    webhooks: Arc<Webhooks>,
) -> SandboxSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(store)
        .data(tokens)
        .data(webhooks)
        .finish()
}

fn store_error(err: StoreError) -> Error {
    match err {
        StoreError::NotFound => coded_error("NOT_FOUND", "Conversation not found"),
        StoreError::BadInput(message) => coded_error("BAD_USER_INPUT", message),
    }
}

pub struct QueryRoot;

// No doc comment on the impl: the SDL gives the Query type no description.
#[Object(name = "Query")]
impl QueryRoot {
    /// Use this query to get conversation details. Needs scope read_conversations.
    /// ASSUMPTION: the argument; an unknown id gives a NOT_FOUND error.
    #[graphql(name = "getConversation")]
    async fn get_conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "conversationId")] conversation_id: ID,
    ) -> Result<ExternalConversation> {
        ctx.data_unchecked::<Caller>().require(READ_CONVERSATIONS)?;
        ctx.data_unchecked::<Arc<Store>>()
            .get(&conversation_id)
            .map_err(store_error)
    }

    /// Use this query to get conversation list. Needs scope read_conversations.
    /// ASSUMPTION: the arguments and the result shape; page starts at 1, limit is 1 to 100.
    #[graphql(name = "getConversationList")]
    async fn get_conversation_list(
        &self,
        ctx: &Context<'_>,
        filter: Option<ConversationListFilterInput>,
        #[graphql(default = 1)] page: i32,
        #[graphql(default = 20)] limit: i32,
    ) -> Result<ConversationListOutput> {
        ctx.data_unchecked::<Caller>().require(READ_CONVERSATIONS)?;
        let filter = filter.unwrap_or_default();
        let (conversations, total) = ctx
            .data_unchecked::<Arc<Store>>()
            .list(&filter, page, limit)
            .map_err(store_error)?;
        Ok(ConversationListOutput {
            conversations,
            total_count: i32::try_from(total).unwrap_or(i32::MAX),
            page,
            limit,
        })
    }
}

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Exchanges an API key's Client ID and Client Secret for an access token valid for one hour.
    /// Needs no bearer token. Wrong credentials give INVALID_CLIENT.
    /// ASSUMPTION: the argument names and the result type.
    #[graphql(name = "generateOAuthToken")]
    async fn generate_oauth_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "clientId")] client_id: String,
        #[graphql(name = "clientSecret")] client_secret: String,
    ) -> Result<OAuthToken> {
        let client = auth::authenticate_client(&client_id, &client_secret)
            .ok_or_else(|| coded_error("INVALID_CLIENT", "Invalid client credentials"))?;
        let tokens = ctx.data_unchecked::<Arc<TokenStore>>();
        Ok(OAuthToken {
            access_token: tokens.issue(client),
            token_type: "Bearer".to_owned(),
            expires_in: i32::try_from(tokens.ttl().as_secs()).unwrap_or(i32::MAX),
            scopes: client.scopes.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Use this mutation to update the conversation. Needs scope write_conversations.
    /// ASSUMPTION: the arguments; returns the conversation as updated.
    #[graphql(name = "updateConversation")]
    async fn update_conversation(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "conversationId")] conversation_id: ID,
        input: UpdateConversationInput,
    ) -> Result<ExternalConversation> {
        ctx.data_unchecked::<Caller>()
            .require(WRITE_CONVERSATIONS)?;
        let updated = ctx
            .data_unchecked::<Arc<Store>>()
            .update(&conversation_id, &input)
            .map_err(store_error)?;
        // The store has changed already, so a read made on the delivery sees the change.
        let webhooks = ctx.data_unchecked::<Arc<Webhooks>>();
        webhooks.emit(
            WebhookEvent::ConversationUpdated,
            events::conversation_updated(&updated.conversation),
        );
        if updated.joined {
            webhooks.emit(
                WebhookEvent::JoinConversation,
                events::join_conversation(&updated.conversation),
            );
        }
        Ok(updated.conversation)
    }
}

/// The SDL of the served schema, exactly as async-graphql generates it.
pub(crate) fn sdl() -> String {
    // The data is irrelevant to the SDL; an empty schema without state is enough.
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}

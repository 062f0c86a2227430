//! Everything about Qpien: the GraphQL schema we assume (`graphql/schema.graphql`), the
//! operation documents, the HTTP client, the token lifecycle and the error type. Nothing
//! outside this module knows Qpien's wire names.

mod answer;
mod breaker;
mod budget;
mod client;
mod credential;
mod error;
mod operations;
mod proofs;
mod retry;
mod token;
mod wire;

pub use breaker::BreakerState;
pub use budget::{BudgetReport, Class};
pub use client::{BudgetWait, QpienClient, ServiceToken};
pub use credential::{CallerShare, Credential, CredentialHasher, CredentialId};
pub use error::UpstreamError;
pub use proofs::{Cap, ClientKey};
pub use wire::{conversation_from_payload, message_from_payload};

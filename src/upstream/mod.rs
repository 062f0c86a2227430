//! Everything about Qpien: the GraphQL schema we assume (`graphql/schema.graphql`), the
//! operation documents, the HTTP client, the token lifecycle and the error type. Nothing
//! outside this module knows Qpien's wire names.

mod client;
mod error;
mod operations;
mod token;
mod wire;

pub use client::{Credential, QpienClient};
pub use error::UpstreamError;

//! qpien-rest: a REST facade, with an OpenAPI document and Swagger UI, over Qpien's
//! GraphQL conversation API. `main.rs` only calls into this library, so the tests start
//! the application exactly as production does.

pub mod admin;
#[cfg(test)]
mod arbitrary;
pub mod callers;
pub mod cli;
pub mod connector;
pub mod domain;
pub mod error;
pub mod events;
pub mod metrics;
pub mod openapi;
pub mod public_url;
pub mod reads;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod upstream;

/// Installs the TLS crypto provider (ring). reqwest is built without a bundled one, so
/// every `reqwest::Client` must be built after this; calling it again is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

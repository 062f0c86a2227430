//! qpien-rest: a REST facade, with an OpenAPI document and Swagger UI, over Qpien's
//! GraphQL conversation API. `main.rs` only calls into this library, so the tests start
//! the application exactly as production does.

pub mod cli;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sandbox;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod upstream;

//! State the facade keeps about callers and Qpien, behind one seam: the rate budget's
//! windows, the service's token, the read cache's shared tier, the webhook deliveries
//! already applied, the change feed's event log. Each has an implementation for one
//! replica (in-process; for the event log, a SQLite file) and a Redis one (several
//! replicas), chosen at start-up.

pub mod redis;
pub mod sealing;
mod shared_budget;
mod shared_events;
pub mod shared_reads;
mod shared_token;
pub mod sqlite;
pub mod streams;
pub mod subscriptions_redis;
pub mod subscriptions_sqlite;
pub mod trust;
pub mod window;

pub use shared_budget::SharedAdmission;
pub use shared_token::{SharedToken, StoredToken};

//! Black-box tests: the application is started on port 0 exactly as in production and
//! driven over HTTP, against the sandbox for behaviour and against wiremock for upstream
//! answers the sandbox never gives. One binary, so it links once.

mod helpers;

mod auth;
mod caller_key_shares;
mod caller_keys;
mod change_feed;
mod connector;
mod cors;
mod event_log;
mod faults;
mod get_conversation;
mod junk_tokens;
mod list_conversations;
mod openapi;
mod operations;
mod postman;
mod power_platform;
mod process;
mod read_cache;
mod receiver;
mod redis_server;
mod resilience;
mod shared_state;
mod subscription_processes;
mod subscriptions;
mod untrusted_redis;
mod update_conversation;
mod update_locks;
mod upstream_failures;
mod webhooks;

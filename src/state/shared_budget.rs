//! The rate budget in Redis: `budget.lua`, the ring of `window.rs` as one atomic script,
//! so replicas share one window per credential and never together exceed the limit.
//! What no replica writes there (another type, a field that is no number, a grant or a
//! block far ahead) is dropped by the script and counted, so it cannot stall the budget.

use std::sync::LazyLock;
use std::time::Duration;

use super::redis::RedisState;
use super::trust::Rejected;
use super::window::Admission;
use crate::upstream::CredentialId;

static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("budget.lua")));

/// What Redis decided, and what the window holds after it.
pub struct SharedAdmission {
    pub admission: Admission,
    /// Grants that count now, this one included.
    pub used: u32,
    /// Until the oldest of them stops counting.
    pub reset: Duration,
}

impl RedisState {
    /// A slot under `limit` within `max_wait`, or `None` when Redis cannot say.
    pub async fn budget_admit(
        &self,
        key: CredentialId,
        limit: u32,
        max_wait: Duration,
    ) -> Option<SharedAdmission> {
        let name = self.key("budget", &key.to_hex());
        let max_wait_ms = max_wait.as_millis().min(u128::from(u32::MAX)) as u64;
        let (status, wait, used, reset, junk): (u8, u64, u32, u64, u32) = self
            .run(|mut connection| async move {
                SCRIPT
                    .key(name)
                    .arg("admit")
                    .arg(limit)
                    .arg(max_wait_ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        if junk > 0 {
            self.reject("budget", Rejected::Malformed);
        }
        let wait = Duration::from_millis(wait);
        Some(SharedAdmission {
            admission: match status {
                0 => Admission::Now,
                1 => Admission::After(wait),
                _ => Admission::Refused(wait),
            },
            used,
            reset: Duration::from_millis(reset),
        })
    }

    /// Qpien said its window is used up for `reset`: no replica calls before then.
    pub async fn budget_block(&self, key: CredentialId, reset: Duration) {
        let name = self.key("budget", &key.to_hex());
        let ms = reset.as_millis().min(u128::from(u32::MAX)) as u64;
        let answer: Option<(u8, u64, u32, u64, u32)> = self
            .run(|mut connection| async move {
                SCRIPT
                    .key(name)
                    .arg("block")
                    .arg(ms)
                    .invoke_async(&mut connection)
                    .await
            })
            .await;
        if answer.is_some_and(|(.., junk)| junk > 0) {
            self.reject("budget", Rejected::Malformed);
        }
    }
}

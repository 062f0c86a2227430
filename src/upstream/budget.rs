//! The facade's own budget of upstream requests, one per upstream credential, so the
//! Qpien account is never blocked: at most `limit` requests in any 60 seconds (a strict
//! sliding window, `state::window`), and none while Qpien itself reports its window used
//! up. A request that would exceed it waits up to `max_wait`, else is refused with the
//! time to wait.
//!
//! Reads stop `write_reserve` requests short of the limit, so a flood of polling never
//! takes the last requests of the minute from an update (or a token renewal): readers
//! then get cached or stale answers, or an honest 429, and writes still go through.
//!
//! Keys are `CredentialId`s (keyed hashes; no token is kept). Windows of idle
//! credentials are forgotten by the map itself (moka: bounded, time-to-idle), never by a
//! scan on the request path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use crate::state::window::Admission;
use crate::state::window::{WINDOW, Window};
use crate::upstream::CredentialId;

/// Credentials whose windows are kept at once; past it the least used are forgotten.
const MAX_CREDENTIALS: u64 = 100_000;

/// Whether a request may use the write reserve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Queries: stop short of the reserve.
    Read,
    /// Mutations and token renewals: may use the whole limit.
    Write,
}

pub struct RateBudget {
    limit: u32,
    write_reserve: u32,
    max_wait: Duration,
    windows: moka::sync::Cache<CredentialId, Arc<Mutex<Window>>>,
}

/// The state of one budget, for the response headers.
#[derive(Clone, Copy, Debug)]
pub struct BudgetReport {
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

impl RateBudget {
    pub fn new(limit: u32, write_reserve: u32, max_wait: Duration) -> Self {
        Self {
            limit,
            write_reserve: write_reserve.min(limit.saturating_sub(1)),
            max_wait,
            windows: moka::sync::Cache::builder()
                .max_capacity(MAX_CREDENTIALS)
                // Idle this long, a window holds no grant that still counts.
                .time_to_idle(WINDOW + max_wait + Duration::from_secs(1))
                .build(),
        }
    }

    fn limit_for(&self, class: Class) -> u32 {
        match class {
            Class::Read => self.limit - self.write_reserve,
            Class::Write => self.limit,
        }
    }

    /// The window of `key`; a new one counts from `now`, so its first grant falls on a
    /// bucket's edge and is held exactly 60 s.
    fn window(&self, key: CredentialId, now: Instant) -> Arc<Mutex<Window>> {
        self.windows.get_with(key, || {
            Arc::new(Mutex::new(Window::new(now, self.max_wait)))
        })
    }

    /// A slot for one request of `class`, waiting at most `wait_allowed` (and `max_wait`).
    pub fn admit(&self, key: CredentialId, class: Class, wait_allowed: Duration) -> Admission {
        let now = Instant::now();
        let window = self.window(key, now);
        let mut window = window.lock().expect("not poisoned");
        window.admit(now, self.limit_for(class), self.max_wait.min(wait_allowed))
    }

    /// What Qpien reported with its answer: the requests left and the seconds until its
    /// window resets.
    pub fn upstream_report(
        &self,
        key: CredentialId,
        remaining: Option<u32>,
        reset: Option<Duration>,
    ) {
        let window = self.window(key, Instant::now());
        let mut window = window.lock().expect("not poisoned");
        window.upstream_remaining = remaining;
        if let (Some(0), Some(reset)) = (remaining, reset) {
            window.blocked_until = Some(Instant::now() + reset);
        }
    }

    /// What is left for requests of `class`.
    pub fn report(&self, key: CredentialId, class: Class) -> BudgetReport {
        let limit = self.limit_for(class);
        let Some(window) = self.windows.get(&key) else {
            return BudgetReport {
                limit: self.limit,
                remaining: limit,
                reset: Duration::ZERO,
            };
        };
        let mut window = window.lock().expect("not poisoned");
        let (ours, reset) = window.remaining(Instant::now(), limit);
        let remaining = window
            .upstream_remaining
            .map_or(ours, |theirs| theirs.min(ours));
        BudgetReport {
            limit: self.limit,
            remaining,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::CredentialHasher;

    fn keys() -> CredentialHasher {
        CredentialHasher::random(None)
    }

    #[tokio::test(start_paused = true)]
    async fn no_sixty_seconds_see_more_than_the_limit() {
        let budget = RateBudget::new(3, 0, Duration::ZERO);
        let key = keys().bearer("client").id();
        for _ in 0..3 {
            assert_eq!(
                budget.admit(key, Class::Read, Duration::MAX),
                Admission::Now
            );
        }
        assert!(
            matches!(budget.admit(key, Class::Read, Duration::MAX), Admission::Refused(d) if d == WINDOW)
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(
            budget.admit(key, Class::Read, Duration::MAX),
            Admission::Refused(_)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            budget.admit(key, Class::Read, Duration::MAX),
            Admission::Now
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_when_the_slot_frees_within_max_wait() {
        let budget = RateBudget::new(1, 0, Duration::from_secs(5));
        let key = keys().bearer("client").id();
        budget.admit(key, Class::Read, Duration::MAX);
        tokio::time::advance(Duration::from_secs(57)).await;
        assert_eq!(
            budget.admit(key, Class::Read, Duration::MAX),
            Admission::After(Duration::from_secs(3))
        );
        assert!(
            matches!(
                budget.admit(key, Class::Read, Duration::MAX),
                Admission::Refused(_)
            ),
            "the slot is taken"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_have_separate_budgets_and_qpien_can_block_one() {
        let budget = RateBudget::new(2, 0, Duration::ZERO);
        let keys = keys();
        let (a, b) = (keys.bearer("token-a").id(), keys.bearer("token-b").id());
        budget.upstream_report(a, Some(0), Some(Duration::from_secs(20)));
        assert!(
            matches!(budget.admit(a, Class::Read, Duration::MAX), Admission::Refused(d) if d == Duration::from_secs(20))
        );
        assert_eq!(budget.admit(b, Class::Read, Duration::MAX), Admission::Now);
        assert_eq!(budget.report(b, Class::Read).remaining, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_leave_the_write_reserve_to_writes() {
        let budget = RateBudget::new(10, 2, Duration::ZERO);
        let key = keys().bearer("service").id();
        for _ in 0..8 {
            assert_eq!(
                budget.admit(key, Class::Read, Duration::MAX),
                Admission::Now
            );
        }
        assert!(matches!(
            budget.admit(key, Class::Read, Duration::MAX),
            Admission::Refused(_)
        ));
        assert_eq!(budget.report(key, Class::Read).remaining, 0);
        assert_eq!(budget.report(key, Class::Write).remaining, 2);
        assert_eq!(
            budget.admit(key, Class::Write, Duration::MAX),
            Admission::Now
        );
        assert_eq!(
            budget.admit(key, Class::Write, Duration::MAX),
            Admission::Now
        );
        assert!(matches!(
            budget.admit(key, Class::Write, Duration::MAX),
            Admission::Refused(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cost_of_a_check_does_not_grow_with_the_limit() {
        // A hundred thousand grants in one minute are held in the ring's 62 counters.
        let budget = RateBudget::new(100_000, 0, Duration::ZERO);
        let key = keys().bearer("busy").id();
        for _ in 0..100_000 {
            assert_eq!(
                budget.admit(key, Class::Read, Duration::ZERO),
                Admission::Now
            );
        }
        assert!(
            matches!(budget.admit(key, Class::Read, Duration::ZERO), Admission::Refused(d) if d == WINDOW)
        );
    }
}

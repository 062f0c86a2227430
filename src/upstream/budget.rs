//! The facade's own budget of upstream requests, one per upstream credential, so the
//! Qpien account is never blocked: at most `limit` requests in any 60 seconds (a sliding
//! window, stricter than Qpien's fixed one), and none while Qpien itself reports the
//! window used up. A request that would exceed it waits up to `max_wait`, else is refused
//! with the time to wait.
//!
//! Keys are the service's client id or, in pass-through mode, a keyed hash of the
//! caller's token: callers never share a budget, and no token is kept.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);
/// Forget idle keys once the map holds this many, so pass-through callers cannot grow it
/// without bound.
const PRUNE_AT: usize = 1024;

pub struct RateBudget {
    limit: u32,
    max_wait: Duration,
    hasher: RandomState,
    keys: Mutex<HashMap<u64, Window>>,
}

#[derive(Default)]
struct Window {
    /// Start times of the requests of the last minute, oldest first; may hold reserved
    /// future slots of waiting requests.
    grants: VecDeque<Instant>,
    /// Qpien said the window is used up until then.
    blocked_until: Option<Instant>,
    /// Qpien's last report of what remains.
    upstream_remaining: Option<u32>,
}

/// What a caller may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// Wait this long, then go: the slot is reserved.
    After(Duration),
    /// Refused; retry after this long.
    Refused(Duration),
}

/// The state of one budget, for the response headers.
#[derive(Clone, Copy, Debug)]
pub struct BudgetReport {
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

impl RateBudget {
    pub fn new(limit: u32, max_wait: Duration) -> Self {
        Self {
            limit,
            max_wait,
            hasher: RandomState::new(),
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn key(&self, credential: &str) -> u64 {
        self.hasher.hash_one(credential)
    }

    pub fn admit(&self, key: u64, wait_allowed: Duration) -> Admission {
        let now = Instant::now();
        let mut keys = self.keys.lock().expect("not poisoned");
        if keys.len() >= PRUNE_AT {
            keys.retain(|_, w| {
                w.grants
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < WINDOW)
            });
        }
        let window = keys.entry(key).or_default();
        while window
            .grants
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            window.grants.pop_front();
        }
        let mut start = now;
        if let Some(until) = window.blocked_until.filter(|until| *until > now) {
            start = until;
        }
        if window.grants.len() >= self.limit as usize {
            let oldest = window.grants[window.grants.len() - self.limit as usize];
            start = start.max(oldest + WINDOW);
        }
        let wait = start - now;
        if wait.is_zero() {
            window.grants.push_back(now);
            Admission::Now
        } else if wait <= self.max_wait.min(wait_allowed) {
            window.grants.push_back(start);
            Admission::After(wait)
        } else {
            Admission::Refused(wait)
        }
    }

    /// What Qpien reported with its answer: the requests left and the seconds until its
    /// window resets.
    pub fn upstream_report(&self, key: u64, remaining: Option<u32>, reset: Option<Duration>) {
        let mut keys = self.keys.lock().expect("not poisoned");
        let window = keys.entry(key).or_default();
        window.upstream_remaining = remaining;
        if let (Some(0), Some(reset)) = (remaining, reset) {
            window.blocked_until = Some(Instant::now() + reset);
        }
    }

    pub fn report(&self, key: u64) -> BudgetReport {
        let now = Instant::now();
        let keys = self.keys.lock().expect("not poisoned");
        let Some(window) = keys.get(&key) else {
            return BudgetReport {
                limit: self.limit,
                remaining: self.limit,
                reset: Duration::ZERO,
            };
        };
        let recent: Vec<&Instant> = window
            .grants
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < WINDOW)
            .collect();
        let ours = self.limit.saturating_sub(recent.len() as u32);
        let remaining = window
            .upstream_remaining
            .map_or(ours, |theirs| theirs.min(ours));
        let reset = recent.first().map_or(Duration::ZERO, |oldest| {
            (**oldest + WINDOW).saturating_duration_since(now)
        });
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

    #[tokio::test(start_paused = true)]
    async fn no_sixty_seconds_see_more_than_the_limit() {
        let budget = RateBudget::new(3, Duration::ZERO);
        let key = budget.key("client");
        for _ in 0..3 {
            assert_eq!(budget.admit(key, Duration::MAX), Admission::Now);
        }
        assert!(matches!(budget.admit(key, Duration::MAX), Admission::Refused(d) if d == WINDOW));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(
            budget.admit(key, Duration::MAX),
            Admission::Refused(_)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(budget.admit(key, Duration::MAX), Admission::Now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_when_the_slot_frees_within_max_wait() {
        let budget = RateBudget::new(1, Duration::from_secs(5));
        let key = budget.key("client");
        budget.admit(key, Duration::MAX);
        tokio::time::advance(Duration::from_secs(57)).await;
        assert_eq!(
            budget.admit(key, Duration::MAX),
            Admission::After(Duration::from_secs(3))
        );
        assert!(
            matches!(budget.admit(key, Duration::MAX), Admission::Refused(_)),
            "the slot is taken"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_have_separate_budgets_and_qpien_can_block_one() {
        let budget = RateBudget::new(2, Duration::ZERO);
        let (a, b) = (budget.key("token-a"), budget.key("token-b"));
        budget.upstream_report(a, Some(0), Some(Duration::from_secs(20)));
        assert!(
            matches!(budget.admit(a, Duration::MAX), Admission::Refused(d) if d == Duration::from_secs(20))
        );
        assert_eq!(budget.admit(b, Duration::MAX), Admission::Now);
        assert_eq!(budget.report(b).remaining, 1);
    }
}

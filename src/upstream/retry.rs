//! When and how long to wait before repeating a read. Only the two queries are retried,
//! never `updateConversation`; only after a connection failure or HTTP 502/503/504; at
//! most `max_retries` times with jittered exponential backoff; and only while the retry
//! budget lasts: each call earns a fifth of a retry, so retries add at most about 20 %
//! to the upstream load even when everything fails.

use std::sync::Mutex;
use std::time::Duration;

use super::UpstreamError;

const BASE_DELAY: Duration = Duration::from_millis(100);
/// The budget counts in fifths of a retry: a call earns one, a retry costs five.
const RETRY_COST: u32 = 5;
/// Retries that can be saved up (10), so a burst of failures after a calm spell may retry.
const MAX_SAVED: u32 = 10 * RETRY_COST;
/// What a fresh process starts with (2 retries).
const INITIAL: u32 = 2 * RETRY_COST;

pub struct RetryPolicy {
    pub max_retries: u32,
    balance: Mutex<u32>,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            balance: Mutex::new(INITIAL),
        }
    }

    /// Called once per call, before its first attempt.
    pub fn earn(&self) {
        let mut balance = self.balance.lock().expect("not poisoned");
        *balance = (*balance + 1).min(MAX_SAVED);
    }

    /// Whether `error`, after `retries_done` retries, may be retried now; spends budget.
    pub fn may_retry(&self, error: &UpstreamError, retries_done: u32) -> bool {
        if retries_done >= self.max_retries || !is_transient(error) {
            return false;
        }
        let mut balance = self.balance.lock().expect("not poisoned");
        if *balance >= RETRY_COST {
            *balance -= RETRY_COST;
            true
        } else {
            false
        }
    }

    /// Backoff before retry number `retry` (1-based): half of 100 ms × 2^(retry-1) fixed,
    /// the other half random, so retries of many callers spread out.
    pub fn delay(retry: u32) -> Duration {
        let ceiling = BASE_DELAY * 2u32.saturating_pow(retry.saturating_sub(1));
        let half = ceiling / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

fn is_transient(error: &UpstreamError) -> bool {
    match error {
        UpstreamError::Unreachable(_) => true,
        UpstreamError::BadStatus { status } => matches!(status, 502..=504),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_transient_failures_up_to_the_maximum_and_within_the_budget() {
        let policy = RetryPolicy::new(2);
        let unavailable = UpstreamError::BadStatus { status: 503 };
        assert!(!policy.may_retry(&UpstreamError::BadStatus { status: 500 }, 0));
        assert!(!policy.may_retry(&UpstreamError::Timeout, 0));
        assert!(!policy.may_retry(&unavailable, 2), "at most two retries");
        assert!(policy.may_retry(&unavailable, 0));
        assert!(policy.may_retry(&unavailable, 1));
        assert!(
            !policy.may_retry(&unavailable, 0),
            "the initial budget is spent"
        );
        for _ in 0..5 {
            policy.earn();
        }
        assert!(
            policy.may_retry(&unavailable, 0),
            "five calls earn one retry"
        );
        assert!(!policy.may_retry(&unavailable, 0));
    }

    #[test]
    fn backoff_grows_and_stays_within_its_band() {
        for retry in 1..=3 {
            let ceiling = BASE_DELAY * 2u32.pow(retry - 1);
            let delay = RetryPolicy::delay(retry);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} for retry {retry}"
            );
        }
    }
}

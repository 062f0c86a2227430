//! Circuit breaker toward Qpien. After `threshold` consecutive failed calls (the upstream
//! unreachable, timing out, answering 5xx or not GraphQL) it opens: calls fail at once
//! with 503 for `cool_down`. Then one probe call goes through; its success closes the
//! breaker, its failure opens it again. Answers that prove Qpien is up (data, GraphQL
//! errors, 429) count as successes.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }

    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

/// Leave to make one call; report its outcome with `record`. A permit dropped without a
/// record (the caller went away) frees the probe slot without judging the upstream.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold,
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        let mut state = self.state.lock().expect("not poisoned");
        if let State::Open { until } = *state
            && Instant::now() >= until
        {
            *state = State::HalfOpen { probing: false };
        }
        match *state {
            State::Closed { .. } => BreakerState::Closed,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
        }
    }

    /// A permit, or how long until a probe may be tried.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("not poisoned");
        match *state {
            State::Closed { .. } => Ok(Permit {
                breaker: self,
                probe: false,
                recorded: false,
            }),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                Ok(Permit {
                    breaker: self,
                    probe: true,
                    recorded: false,
                })
            }
            // A probe is under way; the others wait for its verdict.
            State::HalfOpen { probing: true } => Err(Duration::from_secs(1)),
        }
    }
}

impl Permit<'_> {
    pub fn record(mut self, upstream_healthy: bool) {
        self.recorded = true;
        let breaker = self.breaker;
        let mut state = breaker.state.lock().expect("not poisoned");
        *state = match (&*state, upstream_healthy) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < breaker.threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => {
                tracing::warn!(
                    cool_down_secs = breaker.cool_down.as_secs(),
                    "Qpien keeps failing; circuit breaker open"
                );
                State::Open {
                    until: Instant::now() + breaker.cool_down,
                }
            }
        };
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut state = self.breaker.state.lock().expect("not poisoned");
            if let State::HalfOpen { probing: true } = *state {
                *state = State::HalfOpen { probing: false };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_then_lets_one_probe_through() {
        let breaker = Breaker::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            breaker.try_acquire().unwrap().record(false);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_err());

        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = breaker
            .try_acquire()
            .expect("one probe after the cool-down");
        assert!(breaker.try_acquire().is_err(), "only one probe at a time");
        probe.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_and_a_success_resets_the_count() {
        let breaker = Breaker::new(2, Duration::from_secs(5));
        breaker.try_acquire().unwrap().record(false);
        breaker.try_acquire().unwrap().record(true);
        breaker.try_acquire().unwrap().record(false);
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "failures must be consecutive"
        );
        breaker.try_acquire().unwrap().record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        breaker.try_acquire().unwrap().record(false);
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}

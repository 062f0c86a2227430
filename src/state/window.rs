//! One credential's budget of upstream requests: at most `limit` in any 60 seconds.
//!
//! A strict sliding window whose cost does not grow with the limit: grants are counted
//! in one-second buckets of a ring, and each grant counts until 60 s after the end of
//! its bucket's second (rounded up, never down, so no 60 seconds ever hold more than
//! the limit). Admission, expiry and the wait until a slot frees walk at most the ring,
//! whose length is fixed by the longest allowed wait (60 + max wait seconds), not by the
//! limit. GCRA or a token bucket would be O(1) too, but let through up to twice the
//! limit in some 60 seconds (a full bucket, then its refill), which a fixed upstream
//! window punishes with a block; a pair of fixed windows only estimates.
//!
//! `ADMIT_SCRIPT` in `state::redis` is the same arithmetic as one atomic Lua script.

use std::time::Duration;

use tokio::time::Instant;

pub const WINDOW: Duration = Duration::from_secs(60);
/// The bucket width: how far a grant's expiry may be rounded up.
pub const GRANULE: Duration = Duration::from_secs(1);

/// What a caller may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Now,
    /// Wait this long, then go: the slot is reserved.
    After(Duration),
    /// Refused; retry after this long.
    Refused(Duration),
}

pub struct Window {
    /// Bucket `k` holds grants made in `(epoch + (k-1) s, epoch + k s]`.
    epoch: Instant,
    /// The oldest bucket that may still hold grants.
    base: u64,
    counts: Box<[u32]>,
    total: u32,
    /// Qpien said its window is used up until then.
    pub blocked_until: Option<Instant>,
    /// Qpien's last report of what remains.
    pub upstream_remaining: Option<u32>,
}

impl Window {
    /// A ring long enough for grants reserved up to `max_wait` ahead.
    pub fn new(now: Instant, max_wait: Duration) -> Self {
        let len = (WINDOW + max_wait).as_secs() as usize + 2;
        Self {
            epoch: now,
            base: 0,
            counts: vec![0; len].into_boxed_slice(),
            total: 0,
            blocked_until: None,
            upstream_remaining: None,
        }
    }

    fn bucket_of(&self, at: Instant) -> u64 {
        let offset = at.saturating_duration_since(self.epoch);
        offset.as_secs() + u64::from(offset.subsec_nanos() > 0)
    }

    fn expiry(&self, bucket: u64) -> Instant {
        self.epoch + GRANULE * bucket as u32 + WINDOW
    }

    fn slot(&self, bucket: u64) -> usize {
        (bucket % self.counts.len() as u64) as usize
    }

    /// Forgets grants that no longer count: each bucket is passed once, so this is O(1)
    /// amortized.
    fn advance(&mut self, now: Instant) {
        while self.total > 0 && self.expiry(self.base) <= now {
            let slot = self.slot(self.base);
            self.total -= self.counts[slot];
            self.counts[slot] = 0;
            self.base += 1;
        }
        if self.total == 0 {
            self.base = self.base.max(self.bucket_of(now));
        }
    }

    /// Takes a slot under `limit` if one is free now or within `max_wait`.
    pub fn admit(&mut self, now: Instant, limit: u32, max_wait: Duration) -> Admission {
        self.advance(now);
        if limit == 0 {
            return Admission::Refused(WINDOW);
        }
        let mut start = self.blocked_until.map_or(now, |until| until.max(now));
        if self.total >= limit {
            start = start.max(self.frees_at(self.total - limit + 1));
        }
        let wait = start - now;
        if wait > max_wait {
            return Admission::Refused(wait);
        }
        let slot = self.slot(self.bucket_of(start));
        self.counts[slot] += 1;
        self.total += 1;
        if wait.is_zero() {
            Admission::Now
        } else {
            Admission::After(wait)
        }
    }

    /// Counts `count` grants made at `at` without asking: what another replica or Redis
    /// granted, so this window knows it if it must decide alone.
    pub fn record(&mut self, now: Instant, at: Instant, count: u32) {
        self.advance(now);
        let slot = self.slot(self.bucket_of(at));
        self.counts[slot] += count;
        self.total += count;
    }

    /// Grants that count now.
    pub fn used(&mut self, now: Instant) -> u32 {
        self.advance(now);
        self.total
    }

    /// When `count` of the grants held have expired.
    fn frees_at(&self, count: u32) -> Instant {
        let mut freed = 0;
        let mut bucket = self.base;
        loop {
            freed += self.counts[self.slot(bucket)];
            if freed >= count {
                return self.expiry(bucket);
            }
            bucket += 1;
        }
    }

    /// Slots left under `limit`, and how long until the oldest grant held stops counting.
    pub fn remaining(&mut self, now: Instant, limit: u32) -> (u32, Duration) {
        self.advance(now);
        let reset = if self.total == 0 {
            Duration::ZERO
        } else {
            self.frees_at(1).saturating_duration_since(now)
        };
        (limit.saturating_sub(self.total), reset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn grants_count_until_sixty_seconds_after_their_second_ends() {
        let start = Instant::now();
        let mut window = Window::new(start, Duration::ZERO);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(
            window.admit(Instant::now(), 1, Duration::ZERO),
            Admission::Now
        );

        // Made at 0.3 s, in the bucket of the first second: it counts until 61 s.
        let refused = window.admit(Instant::now(), 1, Duration::ZERO);
        assert_eq!(refused, Admission::Refused(Duration::from_millis(60_700)));
        tokio::time::advance(Duration::from_millis(60_600)).await;
        assert!(matches!(
            window.admit(Instant::now(), 1, Duration::ZERO),
            Admission::Refused(_)
        ));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            window.admit(Instant::now(), 1, Duration::ZERO),
            Admission::Now
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_for_enough_grants_to_expire_and_a_smaller_limit_stops_sooner() {
        let mut window = Window::new(Instant::now(), Duration::from_secs(30));
        for _ in 0..4 {
            window.admit(Instant::now(), 10, Duration::ZERO);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..4 {
            window.admit(Instant::now(), 10, Duration::ZERO);
        }
        assert_eq!(window.remaining(Instant::now(), 10).0, 2);
        assert_eq!(window.remaining(Instant::now(), 8).0, 0);

        // Under a limit of 8 the next slot frees when the first four expire, at 60 s.
        assert_eq!(
            window.admit(Instant::now(), 8, Duration::from_secs(30)),
            Admission::Refused(Duration::from_secs(50))
        );
        // Under 10 two are free now.
        assert_eq!(
            window.admit(Instant::now(), 10, Duration::ZERO),
            Admission::Now
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_idle_spell_forgets_everything_in_one_step() {
        let mut window = Window::new(Instant::now(), Duration::ZERO);
        for _ in 0..5 {
            window.admit(Instant::now(), 5, Duration::ZERO);
        }
        tokio::time::advance(Duration::from_secs(3_600)).await;
        assert_eq!(window.remaining(Instant::now(), 5), (5, Duration::ZERO));
        for _ in 0..5 {
            assert_eq!(
                window.admit(Instant::now(), 5, Duration::ZERO),
                Admission::Now
            );
        }
    }
}

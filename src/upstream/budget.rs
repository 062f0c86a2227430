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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::state::redis::RedisState;
pub use crate::state::window::Admission;
use crate::state::window::{WINDOW, Window};
use crate::upstream::CredentialId;

/// Credentials whose windows are kept at once; past it the least used are forgotten.
const MAX_CREDENTIALS: u64 = 100_000;
/// After Redis comes back, how long a replica still keeps to its own share while feeding
/// the shared window: until every grant made alone has stopped counting, by then known
/// or expired everywhere (a minute, and the probe's delay in noticing).
const HOLD_DOWN: Duration = Duration::from_secs(62);
/// How recent the last word from Redis must be to stand for the account's use when it
/// goes away; older, a replica assumes the whole budget was used.
const FRESH_REPORT: Duration = Duration::from_secs(2);

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
    /// Replicas sharing the account: alone, each keeps to its share of the limit.
    replicas: u32,
    windows: moka::sync::Cache<CredentialId, Arc<Mutex<Local>>>,
    shared: Option<Arc<RedisState>>,
    /// Whether Qpien ever reported what it has left (its rate-limit headers): until it
    /// does, its answers leave the windows alone.
    has_upstream_reports: AtomicBool,
}

/// One credential's window in this process, and what it last heard from Redis.
struct Local {
    window: Window,
    /// Grants the shared window held at the last answer from Redis, when, and until the
    /// oldest stopped counting.
    shared: Option<(u32, Instant, Duration)>,
    /// The outage whose unknown grants this window has counted in.
    seeded_for: u64,
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
            replicas: 1,
            windows: moka::sync::Cache::builder()
                .max_capacity(MAX_CREDENTIALS)
                // Idle this long, a window holds no grant that still counts.
                .time_to_idle(WINDOW + max_wait + Duration::from_secs(1))
                .build(),
            shared: None,
            has_upstream_reports: AtomicBool::new(false),
        }
    }

    /// `replicas` share the account, through `shared` when it answers.
    pub fn shared(mut self, replicas: u32, shared: Option<Arc<RedisState>>) -> Self {
        self.replicas = replicas.max(1);
        self.shared = shared;
        self
    }

    /// Where the budget is kept: `redis`, `in-process` (no Redis), or `in-process (Redis
    /// unreachable)`.
    pub fn kept_in(&self) -> &'static str {
        match &self.shared {
            None => "in-process",
            Some(redis) if redis.is_up() => "redis",
            Some(_) => "in-process (Redis unreachable)",
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
    fn local(&self, key: CredentialId, now: Instant) -> Arc<Mutex<Local>> {
        self.windows.get_with(key, || {
            Arc::new(Mutex::new(Local {
                window: Window::new(now, self.max_wait),
                shared: None,
                seeded_for: 0,
            }))
        })
    }

    /// A slot for one request of `class`, waiting at most `wait_allowed` (and `max_wait`).
    pub async fn admit(
        &self,
        key: CredentialId,
        class: Class,
        wait_allowed: Duration,
    ) -> Admission {
        self.admit_under(key, self.limit_for(class), wait_allowed)
            .await
    }

    /// A slot under a caller key's own share of `per_minute`, besides the account's.
    pub async fn admit_share(
        &self,
        key: CredentialId,
        per_minute: u32,
        wait_allowed: Duration,
    ) -> Admission {
        self.admit_under(key, per_minute, wait_allowed).await
    }

    /// Alone (no Redis, or Redis down or just back), a replica keeps to `limit /
    /// replicas`; with Redis, the shared window decides and this one only listens.
    async fn admit_under(
        &self,
        key: CredentialId,
        limit: u32,
        wait_allowed: Duration,
    ) -> Admission {
        let max_wait = self.max_wait.min(wait_allowed);
        let share = limit / self.replicas;
        let Some(redis) = &self.shared else {
            return self.alone(key, share, max_wait, None);
        };
        match redis.up_for() {
            Some(up) if up >= HOLD_DOWN => {}
            Some(_) => {
                // Just back: the grants made alone are unknown to the shared window, so
                // this replica keeps to its share, and tells Redis of each grant.
                let alone = self.alone(key, share, max_wait, Some(redis.outage()));
                if matches!(alone, Admission::Refused(_)) {
                    return alone;
                }
                return match self.ask(redis, key, limit, max_wait).await {
                    Some(Admission::Refused(wait)) => Admission::Refused(wait),
                    Some(shared) => later(alone, shared),
                    None => alone,
                };
            }
            None => return self.alone(key, share, max_wait, Some(redis.outage())),
        }
        match self.ask(redis, key, limit, max_wait).await {
            Some(admission) => {
                if let Some(start) = start_of(&admission) {
                    let now = Instant::now();
                    let local = self.local(key, now);
                    local
                        .lock()
                        .expect("not poisoned")
                        .window
                        .record(now, start, 1);
                }
                admission
            }
            None => self.alone(key, share, max_wait, Some(redis.outage())),
        }
    }

    /// The shared window's answer, remembered for the headers and for an outage.
    async fn ask(
        &self,
        redis: &RedisState,
        key: CredentialId,
        limit: u32,
        max_wait: Duration,
    ) -> Option<Admission> {
        let answer = redis.budget_admit(key, limit, max_wait).await?;
        let now = Instant::now();
        let local = self.local(key, now);
        local.lock().expect("not poisoned").shared = Some((answer.used, now, answer.reset));
        Some(answer.admission)
    }

    /// This window alone, under `share`. Entering an outage (`outage` is its number), it
    /// first counts the grants of other replicas it cannot see: as many as the shared
    /// window held at its last answer if that was a moment ago, else the whole limit.
    fn alone(
        &self,
        key: CredentialId,
        share: u32,
        max_wait: Duration,
        outage: Option<u64>,
    ) -> Admission {
        let now = Instant::now();
        let local = self.local(key, now);
        let mut local = local.lock().expect("not poisoned");
        if let Some(outage) = outage
            && local.seeded_for != outage
        {
            let known = match local.shared {
                Some((used, at, _)) if now.duration_since(at) < FRESH_REPORT => used,
                _ => self.limit,
            };
            let own = local.window.used(now);
            local.window.record(now, now, known.saturating_sub(own));
            local.seeded_for = outage;
        }
        local.window.admit(now, share, max_wait)
    }

    /// What Qpien reported with its answer: the requests left and the seconds until its
    /// window resets. Used up, every replica holds off until then.
    pub async fn upstream_report(
        &self,
        key: CredentialId,
        remaining: Option<u32>,
        reset: Option<Duration>,
    ) {
        // Qpien's usual answer reports nothing: a window that holds no report of its own
        // is then left alone, without a lookup.
        if remaining.is_none() && !self.has_upstream_reports.load(Ordering::Relaxed) {
            return;
        }
        if remaining.is_some() {
            self.has_upstream_reports.store(true, Ordering::Relaxed);
        }
        {
            let local = self.local(key, Instant::now());
            let mut local = local.lock().expect("not poisoned");
            local.window.upstream_remaining = remaining;
            if let (Some(0), Some(reset)) = (remaining, reset) {
                local.window.blocked_until = Some(Instant::now() + reset);
            }
        }
        if let (Some(0), Some(reset), Some(redis)) = (remaining, reset, &self.shared) {
            redis.budget_block(key, reset).await;
        }
    }

    /// What is left for requests of `class`.
    pub fn report(&self, key: CredentialId, class: Class) -> BudgetReport {
        let limit = self.limit_for(class);
        let report = self.report_under(key, limit);
        BudgetReport {
            limit: self.limit,
            ..report
        }
    }

    /// What is left of a caller key's share.
    pub fn share_report(&self, key: CredentialId, per_minute: u32) -> BudgetReport {
        self.report_under(key, per_minute)
    }

    /// What is left under `limit` (see `own_remaining`), and no more than Qpien said.
    fn report_under(&self, key: CredentialId, limit: u32) -> BudgetReport {
        let Some(local) = self.windows.get(&key) else {
            return BudgetReport {
                limit,
                remaining: limit,
                reset: Duration::ZERO,
            };
        };
        let now = Instant::now();
        let mut local = local.lock().expect("not poisoned");
        let (ours, reset) = self.own_remaining(&mut local, now, limit);
        let remaining = local
            .window
            .upstream_remaining
            .map_or(ours, |theirs| theirs.min(ours));
        BudgetReport {
            limit,
            remaining,
            reset,
        }
    }

    /// Whether a request of `class` that may not wait would be refused now, as far as
    /// this replica knows: our own window (or the shared one's last answer) is full, or
    /// Qpien said it is used up. Unlike the report, Qpien's count of what remains is left
    /// out, since admission does not go by it: a refusal predicted here is one `admit`
    /// would give.
    pub fn spent(&self, key: CredentialId, class: Class) -> bool {
        self.spent_under(key, self.limit_for(class))
    }

    /// The same, for a caller key's share.
    pub fn share_spent(&self, key: CredentialId, per_minute: u32) -> bool {
        self.spent_under(key, per_minute)
    }

    fn spent_under(&self, key: CredentialId, limit: u32) -> bool {
        let Some(local) = self.windows.get(&key) else {
            return false;
        };
        let now = Instant::now();
        let mut local = local.lock().expect("not poisoned");
        local.window.blocked_until.is_some_and(|until| until > now)
            || self.own_remaining(&mut local, now, limit).0 == 0
    }

    /// With Redis up, the shared window as at its last answer (aged: once its oldest
    /// grant is gone, the window is whole again); else this window, under its share.
    fn own_remaining(&self, local: &mut Local, now: Instant, limit: u32) -> (u32, Duration) {
        let shared_up = self.shared.as_ref().is_some_and(|r| r.is_up());
        match local.shared {
            Some((used, at, reset)) if shared_up => {
                let left = reset.saturating_sub(now.duration_since(at));
                if left.is_zero() {
                    (limit, Duration::ZERO)
                } else {
                    (limit.saturating_sub(used), left)
                }
            }
            _ => local.window.remaining(now, limit / self.replicas),
        }
    }
}

/// When an admitted request goes: now, or after its wait.
fn start_of(admission: &Admission) -> Option<Instant> {
    match admission {
        Admission::Now => Some(Instant::now()),
        Admission::After(wait) => Some(Instant::now() + *wait),
        Admission::Refused(_) => None,
    }
}

/// Two admissions of one request: it goes when both let it.
fn later(a: Admission, b: Admission) -> Admission {
    let wait = |x: &Admission| match x {
        Admission::Now => Duration::ZERO,
        Admission::After(w) | Admission::Refused(w) => *w,
    };
    match wait(&a).max(wait(&b)) {
        w if w.is_zero() => Admission::Now,
        w => Admission::After(w),
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
                budget.admit(key, Class::Read, Duration::MAX).await,
                Admission::Now
            );
        }
        assert!(
            matches!(budget.admit(key, Class::Read, Duration::MAX).await, Admission::Refused(d) if d == WINDOW)
        );
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(matches!(
            budget.admit(key, Class::Read, Duration::MAX).await,
            Admission::Refused(_)
        ));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            budget.admit(key, Class::Read, Duration::MAX).await,
            Admission::Now
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_when_the_slot_frees_within_max_wait() {
        let budget = RateBudget::new(1, 0, Duration::from_secs(5));
        let key = keys().bearer("client").id();
        budget.admit(key, Class::Read, Duration::MAX).await;
        tokio::time::advance(Duration::from_secs(57)).await;
        assert_eq!(
            budget.admit(key, Class::Read, Duration::MAX).await,
            Admission::After(Duration::from_secs(3))
        );
        assert!(
            matches!(
                budget.admit(key, Class::Read, Duration::MAX).await,
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
        budget
            .upstream_report(a, Some(0), Some(Duration::from_secs(20)))
            .await;
        assert!(
            matches!(budget.admit(a, Class::Read, Duration::MAX).await, Admission::Refused(d) if d == Duration::from_secs(20))
        );
        assert_eq!(
            budget.admit(b, Class::Read, Duration::MAX).await,
            Admission::Now
        );
        assert_eq!(budget.report(b, Class::Read).remaining, 1);
    }

    /// `spent` lets a read with a stale answer at hand skip a call that `admit` would
    /// refuse; it must never claim a refusal that `admit` would not give.
    #[tokio::test(start_paused = true)]
    async fn spent_foretells_what_admit_refuses_and_nothing_more() {
        let budget = RateBudget::new(3, 1, Duration::ZERO);
        let keys = keys();
        let (a, b) = (keys.bearer("token-a").id(), keys.bearer("token-b").id());
        assert!(!budget.spent(a, Class::Read), "a credential never seen");
        budget.admit(a, Class::Read, Duration::ZERO).await;
        assert!(!budget.spent(a, Class::Read));
        budget.admit(a, Class::Read, Duration::ZERO).await;
        assert!(
            budget.spent(a, Class::Read),
            "reads stop short of the reserve"
        );
        assert!(!budget.spent(a, Class::Write));
        assert!(matches!(
            budget.admit(a, Class::Read, Duration::ZERO).await,
            Admission::Refused(_)
        ));
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        assert!(!budget.spent(a, Class::Read), "the window moved on");

        // Qpien's count of what remains is reported, but admission does not go by it.
        budget.upstream_report(b, Some(0), None).await;
        assert_eq!(budget.report(b, Class::Read).remaining, 0);
        assert!(!budget.spent(b, Class::Read));
        // Its "used up until then" is a refusal.
        budget
            .upstream_report(b, Some(0), Some(Duration::from_secs(5)))
            .await;
        assert!(budget.spent(b, Class::Read));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!budget.spent(b, Class::Read));
        assert_eq!(
            budget.admit(b, Class::Read, Duration::ZERO).await,
            Admission::Now
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reads_leave_the_write_reserve_to_writes() {
        let budget = RateBudget::new(10, 2, Duration::ZERO);
        let key = keys().bearer("service").id();
        for _ in 0..8 {
            assert_eq!(
                budget.admit(key, Class::Read, Duration::MAX).await,
                Admission::Now
            );
        }
        assert!(matches!(
            budget.admit(key, Class::Read, Duration::MAX).await,
            Admission::Refused(_)
        ));
        assert_eq!(budget.report(key, Class::Read).remaining, 0);
        assert_eq!(budget.report(key, Class::Write).remaining, 2);
        assert_eq!(
            budget.admit(key, Class::Write, Duration::MAX).await,
            Admission::Now
        );
        assert_eq!(
            budget.admit(key, Class::Write, Duration::MAX).await,
            Admission::Now
        );
        assert!(matches!(
            budget.admit(key, Class::Write, Duration::MAX).await,
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
                budget.admit(key, Class::Read, Duration::ZERO).await,
                Admission::Now
            );
        }
        assert!(
            matches!(budget.admit(key, Class::Read, Duration::ZERO).await, Admission::Refused(d) if d == WINDOW)
        );
    }
}

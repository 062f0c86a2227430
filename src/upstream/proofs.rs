//! Pass-through mode's guard against junk bearers: what Qpien said of each bearer, and
//! what the facade lets through for bearers it has not yet heard of.
//!
//! In pass-through mode any non-empty bearer is forwarded, so without this every made-up
//! token would cost a call to Qpien from the facade's address (and a budget window here).
//! Three things keep that in bounds:
//! - a bearer Qpien refused (`UNAUTHORIZED`, `TOKEN_EXPIRED`) is answered the same 401
//!   for `REJECTED_CREDENTIALS_TTL_SECS` without asking Qpien again;
//! - a bearer Qpien has answered for (anything but a refusal of the token) is *proven*
//!   and passes untouched;
//! - requests with unproven bearers are capped per client address and in total, each a
//!   strict sliding window of a minute (`state::window`, as the rate budget: a GCRA or
//!   token bucket would let twice the cap through in some 60 seconds).
//!
//! Every map is keyed by `CredentialId` (the keyed hash, never the token) or by client
//! address, and bounded (moka: capacity and time-based expiry), so memory does not grow
//! with the number of distinct bearers or addresses. All of it is per replica.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::error::{REMEMBERED_REFUSAL, whole_seconds};
use super::{CredentialId, UpstreamError};
use crate::settings::BearerLimits;
use crate::state::window::{Admission, WINDOW, Window};

/// Bearers refused by Qpien remembered at once; within the caps a minute brings far fewer.
const MAX_REJECTED: u64 = 10_000;
/// Bearers remembered as proven at once; the least used are forgotten first.
const MAX_PROVEN: u64 = 10_000;
/// A proven bearer unused this long is forgotten: Qpien's tokens live an hour.
const PROVEN_IDLE: Duration = Duration::from_secs(3_600);
/// Client addresses whose windows are kept at once. Past it the least used are
/// forgotten (their count starts again), and the total cap still holds.
const MAX_CLIENTS: u64 = 10_000;

/// Which cap refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// `UNPROVEN_CREDENTIALS_PER_MINUTE_PER_CLIENT`.
    Client,
    /// `UNPROVEN_CREDENTIALS_PER_MINUTE`.
    Total,
}

impl Cap {
    pub fn label(self) -> &'static str {
        match self {
            Cap::Client => "client-cap",
            Cap::Total => "total-cap",
        }
    }
}

/// Who a client is, for the per-client cap: an IPv4 address, or the /64 network of an
/// IPv6 one (a single host is commonly handed a whole /64).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn of(address: Option<IpAddr>) -> Self {
        match address.map(|a| a.to_canonical()) {
            Some(IpAddr::V4(v4)) => Self(u128::from(u32::from(v4))),
            Some(IpAddr::V6(v6)) => Self(u128::from(v6) & !((1u128 << 64) - 1)),
            // No peer address (not over TCP): one client for all such requests.
            None => Self(u128::MAX),
        }
    }
}

pub struct Proofs {
    limits: BearerLimits,
    /// Bearers Qpien refused, with its code.
    rejected: moka::sync::Cache<CredentialId, &'static str>,
    proven: moka::sync::Cache<CredentialId, ()>,
    per_client: moka::sync::Cache<ClientKey, Arc<Mutex<Window>>>,
    total: Mutex<Window>,
}

impl Proofs {
    pub fn new(limits: BearerLimits) -> Self {
        Self {
            limits,
            rejected: moka::sync::Cache::builder()
                .max_capacity(MAX_REJECTED)
                .time_to_live(limits.rejected_ttl)
                .build(),
            proven: moka::sync::Cache::builder()
                .max_capacity(MAX_PROVEN)
                .time_to_idle(PROVEN_IDLE)
                .build(),
            per_client: moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS)
                // Idle this long, a window holds no grant that still counts.
                .time_to_idle(WINDOW + Duration::from_secs(2))
                .build(),
            total: Mutex::new(Window::new(Instant::now(), Duration::ZERO)),
        }
    }

    /// Whether a request with the bearer `id` from `client` may go on toward Qpien: a
    /// remembered refusal is answered as Qpien answered it, a proven bearer passes, an
    /// unproven one takes a slot under both caps.
    pub fn admit(&self, id: CredentialId, client: ClientKey) -> Result<(), Refusal> {
        if let Some(code) = self.rejected.get(&id) {
            return Err(Refusal::Rejected(code));
        }
        if self.proven.contains_key(&id) {
            return Ok(());
        }
        let now = Instant::now();
        let window = self.per_client.get_with(client, || {
            Arc::new(Mutex::new(Window::new(now, Duration::ZERO)))
        });
        let per_client = window.lock().expect("not poisoned").admit(
            now,
            self.limits.unproven_per_client,
            Duration::ZERO,
        );
        if let Admission::Refused(wait) = per_client {
            return Err(Refusal::Capped(Cap::Client, wait));
        }
        let total = self.total.lock().expect("not poisoned").admit(
            now,
            self.limits.unproven_total,
            Duration::ZERO,
        );
        match total {
            Admission::Refused(wait) => Err(Refusal::Capped(Cap::Total, wait)),
            _ => Ok(()),
        }
    }

    /// Marks `id` proven without a call of its own: an answer cached for it (perhaps by
    /// another replica, through Redis) is Qpien's word that it was accepted.
    pub fn vouch(&self, id: CredentialId) {
        if !self.proven.contains_key(&id) {
            self.proven.insert(id, ());
        }
    }

    /// Learns from Qpien's answer to a call made with the bearer `id`: a refusal of the
    /// token is remembered, any other answer from Qpien proves it. Failures that say
    /// nothing of the token (timeouts, 5xx, our own limits) teach nothing.
    pub fn learn<T>(&self, id: CredentialId, result: &Result<T, UpstreamError>) {
        match result {
            Err(UpstreamError::Unauthorized { code, .. }) => {
                self.proven.invalidate(&id);
                self.rejected.insert(id, code);
            }
            Ok(_)
            | Err(
                UpstreamError::InsufficientScope { .. }
                | UpstreamError::NotFound { .. }
                | UpstreamError::BadInput { .. },
            ) => self.vouch(id),
            Err(_) => {}
        }
    }
}

/// Why a bearer's request was not let through.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Qpien refused this bearer a moment ago, with this code.
    Rejected(&'static str),
    /// A cap on unproven bearers is reached; a slot frees after this long.
    Capped(Cap, Duration),
}

impl Refusal {
    /// The `reason` label of the `bearer_refusals` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Rejected(_) => "rejected",
            Refusal::Capped(cap, _) => cap.label(),
        }
    }
}

impl From<Refusal> for UpstreamError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Rejected(code) => UpstreamError::Unauthorized {
                code,
                message: REMEMBERED_REFUSAL.to_owned(),
            },
            Refusal::Capped(cap, wait) => UpstreamError::UnprovenLimited {
                cap,
                retry_after: whole_seconds(wait),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::CredentialHasher;

    fn limits(per_client: u32, total: u32) -> BearerLimits {
        BearerLimits {
            rejected_ttl: Duration::from_secs(60),
            unproven_per_client: per_client,
            unproven_total: total,
        }
    }

    fn client(last: u8) -> ClientKey {
        ClientKey::of(Some(IpAddr::from([10, 0, 0, last])))
    }

    #[tokio::test(start_paused = true)]
    async fn unproven_bearers_are_capped_per_client_and_in_total_and_proven_ones_pass() {
        let proofs = Proofs::new(limits(2, 3));
        let keys = CredentialHasher::random(None);
        let id = |n: u32| keys.bearer(&format!("junk-{n}")).id();
        assert_eq!(proofs.admit(id(1), client(1)), Ok(()));
        assert_eq!(proofs.admit(id(2), client(1)), Ok(()));
        assert!(matches!(
            proofs.admit(id(3), client(1)),
            Err(Refusal::Capped(Cap::Client, _))
        ));
        assert_eq!(proofs.admit(id(4), client(2)), Ok(()));
        assert!(matches!(
            proofs.admit(id(5), client(3)),
            Err(Refusal::Capped(Cap::Total, wait)) if wait <= WINDOW
        ));

        let good = keys.bearer("good").id();
        proofs.learn(good, &Ok::<(), UpstreamError>(()));
        assert_eq!(proofs.admit(good, client(1)), Ok(()), "proven: not capped");

        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        assert_eq!(
            proofs.admit(id(6), client(1)),
            Ok(()),
            "the minute moved on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_bearer_is_answered_alike_until_its_time_is_up() {
        let proofs = Proofs::new(limits(100, 100));
        let id = CredentialHasher::random(None).bearer("expired").id();
        proofs.learn(id, &Ok::<(), UpstreamError>(()));
        let refused: Result<(), _> = Err(UpstreamError::Unauthorized {
            code: "TOKEN_EXPIRED",
            message: String::new(),
        });
        proofs.learn(id, &refused);
        assert_eq!(
            proofs.admit(id, client(1)),
            Err(Refusal::Rejected("TOKEN_EXPIRED")),
            "a refusal outweighs an earlier proof"
        );
        let timeout: Result<(), _> = Err(UpstreamError::Timeout);
        proofs.learn(id, &timeout);
        assert!(
            proofs.admit(id, client(1)).is_err(),
            "a timeout proves nothing"
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64_bit_network_and_a_mapped_ipv4_is_the_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(Some(a)), ClientKey::of(Some(b)));
        assert_ne!(ClientKey::of(Some(a)), ClientKey::of(Some(c)));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ClientKey::of(Some(mapped)), client(1));
    }
}

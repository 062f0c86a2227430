//! What a value read from Redis must show before a replica believes it. Whoever can
//! write to Redis is not trusted: a value another replica decodes into an answer carries
//! an HMAC-SHA-256 over the full key name and the value, keyed by a subkey of the shared
//! hash secret (`REDIS_HASH_SECRET`, else the client secret), so a planted or copied
//! value is refused; a value dated ahead of this replica's clock by more than
//! `CLOCK_SKEW` is refused too, as it would otherwise stay fresh and outrank every
//! newer write. A refused value is a miss, counted by kind and reason
//! (`qpien_rest_redis_values_rejected_total`); it never marks Redis down.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far ahead of this replica's clock a value may be dated (another replica's clock
/// running a little ahead) before it is refused.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

const TAG_LEN: usize = 32;

/// Why a value read from Redis was not used: the metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Its HMAC is missing or wrong: not written by a replica holding the secret, or
    /// moved from another key.
    Unauthenticated,
    /// Dated ahead of now by more than `CLOCK_SKEW`.
    Future,
    /// Not in the form this version writes (or of another Redis type).
    Malformed,
    /// A lock with no expiry: never one a replica took, so it is taken over.
    Unexpiring,
}

impl Rejected {
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Unauthenticated => "unauthenticated",
            Rejected::Future => "future",
            Rejected::Malformed => "malformed",
            Rejected::Unexpiring => "unexpiring",
        }
    }
}

/// The keyed MAC of shared values.
#[derive(Clone)]
pub struct ValueMac(Hmac<Sha256>);

impl ValueMac {
    /// Keyed by a subkey of `secret`, so the MAC key is no other use's key.
    pub fn new(secret: &str) -> Self {
        let mut derive = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .expect("HMAC takes a key of any length");
        derive.update(b"qpien-rest cache-mac v1");
        let subkey = derive.finalize().into_bytes();
        Self(Hmac::<Sha256>::new_from_slice(&subkey).expect("HMAC takes a key of any length"))
    }

    /// The key's length first, so no split of key and value reads as another.
    fn over(&self, key: &str, value: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(&(key.len() as u64).to_be_bytes());
        mac.update(key.as_bytes());
        mac.update(value);
        mac
    }

    /// `value` ‖ its tag under `key`.
    pub fn seal(&self, key: &str, mut value: Vec<u8>) -> Vec<u8> {
        let tag = self.over(key, &value).finalize().into_bytes();
        value.extend_from_slice(&tag);
        value
    }

    /// The tag of `value` under `key`, in hex: for a value kept as text beside it.
    pub fn tag_hex(&self, key: &str, value: &[u8]) -> String {
        let tag = self.over(key, value).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `tag` (hex) is the tag of `value` under `key` (compared in constant time).
    pub fn check_hex(&self, key: &str, value: &[u8], tag: &str) -> Result<(), Rejected> {
        let bytes = (tag.len() == TAG_LEN * 2)
            .then(|| {
                (0..TAG_LEN)
                    .map(|i| u8::from_str_radix(tag.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()
            })
            .flatten()
            .ok_or(Rejected::Unauthenticated)?;
        self.over(key, value)
            .verify_slice(&bytes)
            .map_err(|_| Rejected::Unauthenticated)
    }

    /// The value `seal` wrapped for `key`, if its tag holds (compared in constant time).
    pub fn open<'a>(&self, key: &str, sealed: &'a [u8]) -> Result<&'a [u8], Rejected> {
        let split = sealed
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Rejected::Unauthenticated)?;
        let (value, tag) = sealed.split_at(split);
        self.over(key, value)
            .verify_slice(tag)
            .map_err(|_| Rejected::Unauthenticated)?;
        Ok(value)
    }
}

/// A number as a counter or a change record holds it, or why not.
pub fn number(value: &[u8]) -> Result<u64, Rejected> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Rejected::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_under_its_key_only() {
        let mac = ValueMac::new("a shared secret of some length");
        let sealed = mac.seal("p:read:a", b"1:2:3:{}".to_vec());
        assert_eq!(mac.open("p:read:a", &sealed), Ok(&b"1:2:3:{}"[..]));
        assert_eq!(
            mac.open("p:read:b", &sealed),
            Err(Rejected::Unauthenticated)
        );
        let other = ValueMac::new("another shared secret of length");
        assert_eq!(
            other.open("p:read:a", &sealed),
            Err(Rejected::Unauthenticated)
        );
    }

    #[test]
    fn a_changed_byte_or_a_short_value_is_refused() {
        let mac = ValueMac::new("a shared secret of some length");
        let mut sealed = mac.seal("k", b"value".to_vec());
        sealed[0] ^= 1;
        assert_eq!(mac.open("k", &sealed), Err(Rejected::Unauthenticated));
        assert_eq!(mac.open("k", b"short"), Err(Rejected::Unauthenticated));
    }

    #[test]
    fn a_hex_tag_checks_only_for_its_key_and_value() {
        let mac = ValueMac::new("a shared secret of some length");
        let tag = mac.tag_hex("p:events:log", b"{}");
        assert_eq!(mac.check_hex("p:events:log", b"{}", &tag), Ok(()));
        assert!(mac.check_hex("p:events:log", b"{ }", &tag).is_err());
        assert!(mac.check_hex("p:other", b"{}", &tag).is_err());
        assert!(mac.check_hex("p:events:log", b"{}", &tag[1..]).is_err());
        assert!(mac.check_hex("p:events:log", b"{}", "é").is_err());
    }

    #[test]
    fn key_and_value_cannot_trade_bytes() {
        let mac = ValueMac::new("a shared secret of some length");
        let sealed = mac.seal("ab", b"c".to_vec());
        let tag = &sealed[1..];
        let moved = [b"bc".as_slice(), tag].concat();
        assert_eq!(mac.open("a", &moved), Err(Rejected::Unauthenticated));
    }
}

//! What a value read from Redis must show before a replica believes it. Whoever can
//! write to Redis is not trusted: a value another replica decodes into an answer carries
//! an HMAC-SHA-256 over the full key name and the value, keyed by a subkey of the shared
//! hash secret (`REDIS_HASH_SECRET`, else the client secret), so a planted or copied
//! value is refused; a value dated ahead of this replica's clock by more than
//! `CLOCK_SKEW` is refused too, as it would otherwise stay fresh and outrank every
//! newer write. A refused value is a miss, counted by kind and reason
//! (`qpien_rest_redis_values_rejected_total`); it never marks Redis down.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far ahead of this replica's clock a value may be dated (another replica's clock
/// running a little ahead) before it is refused.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// A tag (HMAC-SHA-256, 32 bytes) as text.
const TAG_TEXT_LEN: usize = 43;

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

    /// The tag of `value` under `key` as text (unpadded URL-safe base64, 43
    /// characters): for a value kept as text beside it.
    pub fn tag_text(&self, key: &str, value: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.over(key, value).finalize().into_bytes())
    }

    /// Whether `tag` (as `tag_text` writes it) is the tag of `value` under `key`
    /// (compared in constant time).
    pub fn check_text(&self, key: &str, value: &[u8], tag: &str) -> Result<(), Rejected> {
        let bytes = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Rejected::Unauthenticated)?;
        self.over(key, value)
            .verify_slice(&bytes)
            .map_err(|_| Rejected::Unauthenticated)
    }

    /// `value` with its tag under `key` as its second field: `<first field>:<tag as
    /// text>:<rest>`. The first field stays first (a script reads it); a version that knows
    /// no MAC finds no number in the second field and takes the value for junk, never for
    /// an answer.
    pub fn seal(&self, key: &str, value: &[u8]) -> Vec<u8> {
        let tag = self.tag_text(key, value);
        let at = value.iter().position(|b| *b == b':').unwrap_or(value.len());
        let (head, rest) = value.split_at(at);
        [head, b":", tag.as_bytes(), rest].concat()
    }

    /// The value `seal` made for `key`, if its tag holds.
    pub fn open(&self, key: &str, sealed: &[u8]) -> Result<Vec<u8>, Rejected> {
        let at = sealed
            .iter()
            .position(|b| *b == b':')
            .ok_or(Rejected::Unauthenticated)?;
        let (head, after) = sealed.split_at(at);
        let after = &after[1..];
        let tag = after
            .get(..TAG_TEXT_LEN)
            .and_then(|tag| std::str::from_utf8(tag).ok())
            .ok_or(Rejected::Unauthenticated)?;
        let value = [head, &after[TAG_TEXT_LEN..]].concat();
        self.check_text(key, &value, tag)?;
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
        let sealed = mac.seal("p:read:a", b"1:2:3:{}");
        assert!(sealed.starts_with(b"1:") && sealed.ends_with(b":2:3:{}"));
        assert_eq!(mac.open("p:read:a", &sealed), Ok(b"1:2:3:{}".to_vec()));
        assert_eq!(
            mac.open("p:read:b", &sealed),
            Err(Rejected::Unauthenticated)
        );
        let other = ValueMac::new("another shared secret of length");
        assert_eq!(
            other.open("p:read:a", &sealed),
            Err(Rejected::Unauthenticated)
        );
        let bare = mac.seal("k", b"no field");
        assert_eq!(mac.open("k", &bare), Ok(b"no field".to_vec()));
    }

    #[test]
    fn a_changed_byte_or_a_value_without_a_tag_is_refused() {
        let mac = ValueMac::new("a shared secret of some length");
        let mut sealed = mac.seal("k", b"12:value");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(mac.open("k", &sealed), Err(Rejected::Unauthenticated));
        for junk in [&b"12:value"[..], b"short", b"", b"1:\xff\xfe"] {
            assert_eq!(mac.open("k", junk), Err(Rejected::Unauthenticated));
        }
    }

    #[test]
    fn a_text_tag_checks_only_for_its_key_and_value() {
        let mac = ValueMac::new("a shared secret of some length");
        let tag = mac.tag_text("p:events:log", b"{}");
        assert_eq!(mac.check_text("p:events:log", b"{}", &tag), Ok(()));
        assert!(mac.check_text("p:events:log", b"{ }", &tag).is_err());
        assert!(mac.check_text("p:other", b"{}", &tag).is_err());
        assert!(mac.check_text("p:events:log", b"{}", &tag[1..]).is_err());
        assert!(mac.check_text("p:events:log", b"{}", "é").is_err());
    }

    #[test]
    fn key_and_value_cannot_trade_bytes() {
        let mac = ValueMac::new("a shared secret of some length");
        let tag = mac.tag_text("ab", b"c");
        assert!(mac.check_text("a", b"bc", &tag).is_err());
    }

    #[test]
    fn a_sealed_answer_is_junk_to_a_reader_that_knows_no_mac() {
        // An older replica during a rolling update decodes the stored bytes as they are.
        let mac = ValueMac::new("a shared secret of some length");
        let sealed = mac.seal("p:read:a", b"1700000000000:3:0:{}");
        assert!(crate::reads::cache::Entry::decode(&sealed).is_err());
    }
}

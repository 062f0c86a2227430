//! Caller keys: who may call a service-mode instance, with which scopes, and with what
//! share of the upstream budget. A key is a random secret handed to one caller (a CRM, an
//! ERP sync, a flow); the service keeps only its SHA-256 in `API_KEYS_FILE`.
//!
//! `file` reads and writes that file, `reload` publishes its current contents to the
//! request path, `cli` is `qpien-rest keys add | list | revoke`. The extractor that checks
//! a request's key is `routes::Caller`.

pub mod cli;
mod file;
mod reload;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::settings::Secret;

pub use file::{KeyFileError, Replaced, add_key, read_key_file, revoke_key};
pub use reload::{Failing, KeyStore, KeysHealth, Reload};

/// Every generated key starts with this, so a leaked one is recognisable (secret
/// scanners, log reviews) and cannot be mistaken for a Qpien token.
pub const KEY_PREFIX: &str = "qpk_";
/// Random bytes in a generated key: 256 bits, beyond any guessing.
const KEY_BYTES: usize = 32;
/// The longest key id, and the characters it may use (`[A-Za-z0-9._-]`, starting with a
/// letter or digit): ids appear in logs and metric labels, so they stay plain.
pub const MAX_ID_LEN: usize = 64;

/// What a key allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The reads: `GET /conversations`, `GET /conversations/{id}`.
    Read,
    /// The updates: `PATCH /conversations/{id}`.
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
        }
    }
}

/// The scopes of one key; independent of each other (a `write`-only key cannot read).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// `read`, `write` or `read,write` (either order); at least one, nothing else.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut bits = 0;
        for name in text.split(',') {
            bits |= match name.trim() {
                "read" => Scope::Read.bit(),
                "write" => Scope::Write.bit(),
                other => {
                    return Err(format!(
                        "unknown scope {other:?}: scopes are read, write or read,write"
                    ));
                }
            };
        }
        Ok(Self(bits))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [Scope::Read, Scope::Write]
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// The SHA-256 of a key. A fast hash is right here, and a slow password KDF (argon2,
/// bcrypt) would be wrong: those make guessing a *low-entropy* password expensive, but a
/// generated key carries 256 random bits, so even a leaked file gives an attacker nothing
/// to guess, at any hash speed. A KDF would only cost every request milliseconds of CPU,
/// and hand anyone who can reach the port a way to burn it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest([u8; 32]);

impl KeyDigest {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// `sha256:` and 64 hexadecimal digits, as in the file.
    pub fn parse(text: &str) -> Option<Self> {
        let hex = text.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// The index a key set is looked up by: half the digest. The final decision compares
    /// all of it in constant time (`KeySet::authenticate`).
    fn prefix(&self) -> [u8; 16] {
        self.0[..16].try_into().expect("16 of 32 bytes")
    }
}

impl fmt::Display for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret, but nothing a log reader needs either.
        f.write_str("KeyDigest(..)")
    }
}

/// One caller key as the service knows it: never the key itself.
#[derive(Debug)]
pub struct CallerKey {
    /// The name the operator gave it; in logs (`caller.key_id`) and metrics (`key`).
    pub id: String,
    pub scopes: Scopes,
    /// This key's share of the upstream budget, in requests a minute; `None`: no share of
    /// its own, only the account's limit.
    pub per_minute: Option<u32>,
    pub digest: KeyDigest,
}

/// A valid key id: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_id(id: &str) -> Result<(), String> {
    let valid = (1..=MAX_ID_LEN).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "key id {id:?} must be 1 to {MAX_ID_LEN} of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    }
}

/// A new key from the operating system's randomness: `qpk_` and 32 random bytes in
/// unpadded base64url (43 characters), safe in headers, URLs and shells.
pub fn generate_key() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(Secret::new(format!(
        "{KEY_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )))
}

/// The keys of one reading of the file, indexed for lookup by digest.
#[derive(Debug, Default)]
pub struct KeySet {
    /// In file order, for listings.
    keys: Vec<Arc<CallerKey>>,
    by_prefix: HashMap<[u8; 16], Arc<CallerKey>>,
}

impl KeySet {
    /// Fails on a repeated id or a key listed twice, naming the id.
    pub fn new(keys: Vec<CallerKey>) -> Result<Self, String> {
        let mut set = Self::default();
        for key in keys {
            let key = Arc::new(key);
            if set.keys.iter().any(|k| k.id == key.id) {
                return Err(format!("key id {:?} appears twice", key.id));
            }
            if let Some(other) = set.by_prefix.insert(key.digest.prefix(), key.clone()) {
                return Err(format!(
                    "keys {:?} and {:?} have the same hash: one key listed twice",
                    other.id, key.id
                ));
            }
            set.keys.push(key);
        }
        Ok(set)
    }

    /// The key `presented` is, if it is one of these. The map lookup is not constant-time,
    /// but it only ever sees half of a SHA-256 of the presented secret, which tells a timing
    /// attacker nothing about any stored key; the match itself is decided by comparing the
    /// whole digest in constant time.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<CallerKey>> {
        let digest = KeyDigest::of(presented);
        let candidate = self.by_prefix.get(&digest.prefix())?;
        bool::from(candidate.digest.0.ct_eq(&digest.0)).then(|| candidate.clone())
    }

    pub fn keys(&self) -> &[Arc<CallerKey>] {
        &self.keys
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CallerKey>> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, secret: &str, scopes: &str) -> CallerKey {
        CallerKey {
            id: id.to_owned(),
            scopes: Scopes::parse(scopes).unwrap(),
            per_minute: None,
            digest: KeyDigest::of(secret),
        }
    }

    #[test]
    fn the_digest_is_sha256_and_reads_back_from_its_text() {
        let digest = KeyDigest::of("abc");

        let text = digest.to_string();

        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(KeyDigest::parse(&text), Some(digest));
        assert_eq!(KeyDigest::parse(&text.to_uppercase()[..]), None, "prefix");
        assert_eq!(KeyDigest::parse("sha256:abc"), None);
        assert_eq!(KeyDigest::parse(&text.replace('b', "g")), None);
    }

    #[test]
    fn a_set_finds_a_key_by_its_secret_and_nothing_else() {
        let set = KeySet::new(vec![
            key("crm", "qpk_one", "read"),
            key("erp", "qpk_two", "read,write"),
        ])
        .unwrap();

        assert_eq!(set.authenticate("qpk_two").unwrap().id, "erp");
        assert_eq!(set.authenticate("qpk_one").unwrap().id, "crm");
        assert!(set.authenticate("qpk_three").is_none());
        assert!(set.authenticate("").is_none());
    }

    #[test]
    fn a_set_refuses_a_repeated_id_or_a_repeated_key() {
        let twice = KeySet::new(vec![key("crm", "a", "read"), key("crm", "b", "read")]);
        let same = KeySet::new(vec![key("crm", "a", "read"), key("erp", "a", "read")]);

        assert!(twice.unwrap_err().contains("appears twice"));
        assert!(same.unwrap_err().contains("same hash"));
    }

    #[test]
    fn scopes_parse_and_print_in_a_fixed_order() {
        let both = Scopes::parse("write,read").unwrap();

        assert_eq!(both.to_string(), "read,write");
        assert!(both.contains(Scope::Read) && both.contains(Scope::Write));
        assert!(!Scopes::parse("read").unwrap().contains(Scope::Write));
        assert!(Scopes::parse("admin").is_err());
        assert!(Scopes::parse("").is_err());
    }

    #[test]
    fn generated_keys_are_prefixed_long_and_different() {
        let a = generate_key().unwrap();
        let b = generate_key().unwrap();

        assert!(a.expose().starts_with(KEY_PREFIX));
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + 43);
        assert!(
            a.expose()[KEY_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_plain_names() {
        for good in ["crm", "erp-sync", "power.automate_1", "A"] {
            assert!(check_id(good).is_ok(), "{good}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in ["", "-crm", "crm sync", "crm/1", "crm\"", "ü", long.as_str()] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}

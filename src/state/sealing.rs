//! Secrets the service must read back (the shared token in Redis, the subscriptions'
//! signing secrets): AES-256-GCM under a key derived by HKDF-SHA-256 from a secret of
//! the service, each use with a salt of its own; stored as nonce ‖ ciphertext, bound by
//! associated data to where it is kept, so a sealed value moved elsewhere does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::Sha256;

use super::trust::Rejected;
use crate::settings::Secret;

const NONCE: usize = 12;

pub struct Sealer(Aes256Gcm);

impl Sealer {
    /// The key derived from `secret` for the use that `salt` names.
    pub fn derive(secret: &Secret, salt: &[u8]) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(salt), secret.expose().as_bytes());
        let mut key = [0u8; 32];
        hkdf.expand(b"aes-256-gcm key", &mut key)
            .expect("32 bytes is a valid HKDF-SHA-256 length");
        Self(Aes256Gcm::new(&key.into()))
    }

    /// nonce ‖ AES-256-GCM(`plain`), bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce).expect("the operating system provides randomness");
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .expect("AES-GCM encrypts any message of this size");
        [nonce.as_slice(), &sealed].concat()
    }

    /// What [`Sealer::seal`] sealed with this key and `aad`: `Malformed` when it is too
    /// short to be sealed, `Unauthenticated` when another key, other associated data or
    /// a change to it keeps it shut.
    pub fn open(&self, stored: &[u8], aad: &[u8]) -> Result<Vec<u8>, Rejected> {
        let (nonce, sealed) = stored.split_at_checked(NONCE).ok_or(Rejected::Malformed)?;
        self.0
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| Rejected::Unauthenticated)
    }
}

//! Whose authority a call runs under, and the name the facade's state knows it by.
//!
//! Every per-caller thing the facade keeps (rate budget, read cache, coalesced flights)
//! is keyed by a `CredentialId`: an HMAC-SHA-256 of the credential under a key of this
//! process, cut to 128 bits. The token itself is never a key, so a heap dump or a
//! cache listing shows no token, and nobody who sees an id can test a guessed token
//! against it without the key. 128 bits make two callers sharing an id (and so each
//! other's cached answers) practically impossible, even over billions of tokens.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::settings::Secret;

/// Whose authority a call runs under.
#[derive(Clone)]
pub struct Credential {
    kind: CredentialKind,
    id: CredentialId,
    /// Service mode with caller keys: the key that asked, whose own share of the budget
    /// the call also spends.
    caller: Option<Arc<CallerShare>>,
}

/// A caller key's part in a call: its id (for metrics) and its share of the budget.
pub struct CallerShare {
    pub key_id: String,
    /// What the key's share is counted under.
    pub budget_key: CredentialId,
    /// Requests a minute; `None`: no share of its own, the account's limit only.
    pub per_minute: Option<u32>,
}

#[derive(Clone)]
enum CredentialKind {
    /// Service mode: the facade's own token.
    Service,
    /// Pass-through mode: the caller's bearer token, forwarded as it came.
    Bearer(Secret),
}

impl Credential {
    /// The caller's bearer, forwarded to Qpien as it is (pass-through mode).
    pub fn bearer(&self) -> Option<&Secret> {
        match &self.kind {
            CredentialKind::Service => None,
            CredentialKind::Bearer(token) => Some(token),
        }
    }

    pub fn id(&self) -> CredentialId {
        self.id
    }

    pub fn caller(&self) -> Option<&CallerShare> {
        self.caller.as_deref()
    }
}

/// The keyed hash of a credential: what caches, flights and budgets are keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialId([u8; 16]);

impl CredentialId {
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lower-case hex, for keys of shared stores.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({})", &self.to_hex()[..8])
    }
}

/// Turns credentials into `CredentialId`s under one key.
#[derive(Clone)]
pub struct CredentialHasher {
    mac: Hmac<Sha256>,
    /// `Some` in service mode: every call runs under the facade's own API key.
    service: Option<CredentialId>,
}

impl CredentialHasher {
    /// `key` is the secret of the keyed hash; `service_client_id` is `Some` in service
    /// mode.
    pub fn new(key: &[u8], service_client_id: Option<&str>) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        let mut hasher = Self { mac, service: None };
        hasher.service = service_client_id.map(|id| hasher.id_of(b"service\0", id.as_bytes()));
        hasher
    }

    /// A hasher whose key is derived from `secret`, shared by every replica that knows it,
    /// so they name each credential alike in their shared state.
    pub fn shared(secret: &str, service_client_id: Option<&str>) -> Self {
        let hkdf =
            hkdf::Hkdf::<Sha256>::new(Some(b"qpien-rest credential ids v1"), secret.as_bytes());
        let mut key = [0u8; 32];
        hkdf.expand(b"hmac key", &mut key)
            .expect("32 bytes is a valid HKDF-SHA-256 length");
        Self::new(&key, service_client_id)
    }

    /// A hasher with a key of fresh randomness: ids are meaningful in this process only.
    pub fn random(service_client_id: Option<&str>) -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system provides randomness");
        Self::new(&key, service_client_id)
    }

    fn id_of(&self, domain: &[u8], value: &[u8]) -> CredentialId {
        let mut mac = self.mac.clone();
        mac.update(domain);
        mac.update(value);
        let digest = mac.finalize().into_bytes();
        let mut id = [0; 16];
        id.copy_from_slice(&digest[..16]);
        CredentialId(id)
    }

    pub fn is_service_mode(&self) -> bool {
        self.service.is_some()
    }

    /// The facade's own credential (service mode).
    pub fn service(&self) -> Option<Credential> {
        self.service.map(|id| Credential {
            kind: CredentialKind::Service,
            id,
            caller: None,
        })
    }

    /// The facade's own credential, used on behalf of the caller key `key_id`.
    pub fn service_for_key(&self, key_id: &str, per_minute: Option<u32>) -> Option<Credential> {
        let caller = Arc::new(CallerShare {
            key_id: key_id.to_owned(),
            budget_key: self.id_of(b"caller-key\0", key_id.as_bytes()),
            per_minute,
        });
        self.service().map(|credential| Credential {
            caller: Some(caller),
            ..credential
        })
    }

    /// A caller's bearer token (pass-through mode).
    pub fn bearer(&self, token: &str) -> Credential {
        Credential {
            id: self.id_of(b"bearer\0", token.as_bytes()),
            kind: CredentialKind::Bearer(Secret::new(token)),
            caller: None,
        }
    }

    /// No credential at all: only the readiness probe in pass-through mode sends this.
    pub fn anonymous(&self) -> Credential {
        Credential {
            id: self.id_of(b"anonymous\0", b""),
            kind: CredentialKind::Service,
            caller: None,
        }
    }
}

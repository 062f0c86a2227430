//! API clients, access tokens and scopes of the sandbox, after Qpien's documented
//! authentication: a Client ID and Secret are exchanged for an opaque bearer token that
//! expires after the configured lifetime and carries the scopes of its client.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_graphql::{Error, ErrorExtensions};

use super::types::coded_error;
use super::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, READ_ONLY_CLIENT_ID, READ_ONLY_CLIENT_SECRET};

pub(crate) const READ_CONVERSATIONS: &str = "read_conversations";
pub(crate) const WRITE_CONVERSATIONS: &str = "write_conversations";

/// An API key as a Qpien customer would create it in the app.
#[derive(Debug)]
pub(crate) struct Client {
    pub id: &'static str,
    secret: &'static str,
    pub scopes: &'static [&'static str],
}

const CLIENTS: &[Client] = &[
    Client {
        id: DEMO_CLIENT_ID,
        secret: DEMO_CLIENT_SECRET,
        scopes: &[READ_CONVERSATIONS, WRITE_CONVERSATIONS],
    },
    Client {
        id: READ_ONLY_CLIENT_ID,
        secret: READ_ONLY_CLIENT_SECRET,
        scopes: &[READ_CONVERSATIONS],
    },
];

/// Compares without stopping at the first difference, so the answer time does not tell
/// how much of a guessed secret was right.
fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// The client with this id, if the secret matches it.
pub(crate) fn authenticate_client(id: &str, secret: &str) -> Option<&'static Client> {
    let client = CLIENTS.iter().find(|c| c.id == id);
    // Compare against something even for an unknown id, to keep timings alike.
    let expected = client.map_or(DEMO_CLIENT_SECRET, |c| c.secret);
    let matches = same_secret(secret, expected);
    client.filter(|_| matches)
}

struct Issued {
    client: &'static Client,
    issued_at: Instant,
}

/// The tokens issued by one sandbox instance. Expired tokens are kept so that they can be
/// answered with TOKEN_EXPIRED rather than UNAUTHORIZED, as Qpien documents.
pub(crate) struct TokenStore {
    ttl: Duration,
    tokens: Mutex<HashMap<String, Issued>>,
}

/// Who is calling, as far as the bearer token tells.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// No Authorization header, or not a bearer one.
    Anonymous,
    /// A bearer token this sandbox never issued.
    UnknownToken,
    Expired,
    Valid(&'static Client),
}

impl TokenStore {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    pub(crate) fn issue(&self, client: &'static Client) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Forget tokens long past expiry so a long-running sandbox does not grow forever.
        let horizon = self.ttl.saturating_mul(24).max(Duration::from_secs(86_400));
        tokens.retain(|_, t| t.issued_at.elapsed() < horizon);
        tokens.insert(
            token.clone(),
            Issued {
                client,
                issued_at: Instant::now(),
            },
        );
        token
    }

    /// Resolves the value of an Authorization header.
    pub(crate) fn caller(&self, authorization: Option<&str>) -> Caller {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Caller::Anonymous;
        };
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token) {
            None => Caller::UnknownToken,
            Some(t) if t.issued_at.elapsed() >= self.ttl => Caller::Expired,
            Some(t) => Caller::Valid(t.client),
        }
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Caller {
    /// Ok when the caller holds a live token with `scope`, else the documented error.
    pub(crate) fn require(&self, scope: &'static str) -> Result<(), Error> {
        match self {
            Caller::Anonymous | Caller::UnknownToken => Err(coded_error(
                "UNAUTHORIZED",
                "Missing or invalid access token",
            )),
            Caller::Expired => Err(coded_error(
                "TOKEN_EXPIRED",
                "Access token expired; generate a new one",
            )),
            Caller::Valid(client) if client.scopes.contains(&scope) => Ok(()),
            Caller::Valid(_) => Err(coded_error(
                "INSUFFICIENT_SCOPES",
                "Insufficient scopes for this operation",
            )
            .extend_with(|_, e| e.set("requiredScope", scope))),
        }
    }

    /// The client id for rate limiting, when the token is live.
    pub(crate) fn client_id(&self) -> Option<&'static str> {
        match self {
            Caller::Valid(client) => Some(client.id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("demo-secret", "demo-secret"));
        assert!(!same_secret("demo-secre", "demo-secret"));
        assert!(!same_secret("demo-secret!", "demo-secret"));
        assert!(!same_secret("", "demo-secret"));
        assert!(authenticate_client(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET).is_some());
        assert!(authenticate_client(DEMO_CLIENT_ID, READ_ONLY_CLIENT_SECRET).is_none());
        assert!(authenticate_client("nobody", DEMO_CLIENT_SECRET).is_none());
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}

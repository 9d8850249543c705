//! Server-side state of redirect sign-ins (OIDC's state, nonce and PKCE
//! verifier; SAML's request id), kept between the redirect to the identity
//! provider and the callback.
//!
//! Each entry is found by an unguessable key that travels through the
//! browser (OIDC `state`, SAML `RelayState`), is taken at most once, and
//! lives for a bounded time. It is also bound to the browser that started
//! it: the caller sets a random value in a cookie there and passes it to
//! [`PendingFlows::start`] and [`PendingFlows::take`], which compare their
//! hashes. Without that, an attacker could start a sign-in, sign in at the
//! provider as themselves, and send someone the callback link: that person
//! would be signed in as the attacker (login CSRF).
//!
//! The table is bounded too: when it is full the oldest pending sign-in is
//! dropped, so a flood of abandoned flows costs a fixed amount of memory
//! (the sign-in page is rate-limited per client address as well).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::secrets;

/// How long a viewer has at the identity provider's pages.
pub const FLOW_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Pending sign-ins kept at once, per provider.
pub const MAX_PENDING_FLOWS: usize = 10_000;

struct Pending<T> {
    state: T,
    started: Instant,
    /// SHA-256 of the browser's binding cookie.
    binding: [u8; 32],
}

fn binding_hash(binding: &str) -> [u8; 32] {
    Sha256::digest(binding.as_bytes()).into()
}

/// Pending redirect sign-ins, keyed by the value sent through the browser.
pub struct PendingFlows<T> {
    entries: Mutex<HashMap<String, Pending<T>>>,
    lifetime: Duration,
    capacity: usize,
}

impl<T> Default for PendingFlows<T> {
    fn default() -> Self {
        Self::new(FLOW_LIFETIME, MAX_PENDING_FLOWS)
    }
}

impl<T> PendingFlows<T> {
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            lifetime,
            capacity: capacity.max(1),
        }
    }

    /// Keeps `state` for the browser holding `binding` and returns the key
    /// to send through it: 32 random bytes, base64url.
    pub fn start(&self, state: T, binding: &str) -> Result<String, AuthError> {
        if binding.is_empty() {
            return Err(AuthError::Internal(
                "a redirect sign-in was started without a browser binding".into(),
            ));
        }
        let bytes = secrets::random_bytes::<32>()
            .map_err(|e| AuthError::Unavailable(format!("no randomness for a sign-in: {e}")))?;
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, p| now.duration_since(p.started) < self.lifetime);
        while entries.len() >= self.capacity {
            let oldest = entries
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => entries.remove(&k),
                None => break,
            };
        }
        entries.insert(
            key.clone(),
            Pending {
                state,
                started: now,
                binding: binding_hash(binding),
            },
        );
        Ok(key)
    }

    /// Takes the state kept under `key`: once, only within its lifetime,
    /// and only for the browser that started it (`binding`). A second use,
    /// an expired flow and a key never issued look the same to the caller.
    pub fn take(&self, key: &str, binding: &str) -> Result<T, AuthError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.remove(key) {
            Some(p) if p.started.elapsed() >= self.lifetime => Err(AuthError::Flow(
                "this sign-in is unknown, was already used or took too long".into(),
            )),
            // Hashes of equal length: comparing them leaks nothing of the
            // cookie's value.
            Some(p) if p.binding != binding_hash(binding) => Err(AuthError::Flow(
                "this sign-in was started in another browser, or the browser did not send \
                 its sign-in cookie back (a link someone sent, or cookies blocked)"
                    .into(),
            )),
            Some(p) => Ok(p.state),
            None => Err(AuthError::Flow(
                "this sign-in is unknown, was already used or took too long".into(),
            )),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_is_taken_once() {
        let flows = PendingFlows::default();
        let key = flows.start("nonce-1", "b").expect("start");
        assert_eq!(key.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(flows.take(&key, "b").expect("first use"), "nonce-1");
        assert!(matches!(flows.take(&key, "b"), Err(AuthError::Flow(_))));
        assert!(matches!(flows.take("forged", "b"), Err(AuthError::Flow(_))));
    }

    #[test]
    fn keys_are_unguessable_and_distinct() {
        let flows = PendingFlows::default();
        let a = flows.start(1, "b").expect("start");
        let b = flows.start(2, "b").expect("start");
        assert_ne!(a, b);
        assert_eq!(flows.take(&b, "b").expect("b"), 2);
        assert_eq!(flows.take(&a, "b").expect("a"), 1);
    }

    #[test]
    fn an_expired_flow_is_refused() {
        let flows = PendingFlows::new(Duration::from_millis(1), 10);
        let key = flows.start((), "b").expect("start");
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(flows.take(&key, "b"), Err(AuthError::Flow(_))));
    }

    #[test]
    fn a_full_table_drops_the_oldest() {
        let flows = PendingFlows::new(FLOW_LIFETIME, 2);
        let first = flows.start("first", "b").expect("start");
        std::thread::sleep(Duration::from_millis(2));
        let second = flows.start("second", "b").expect("start");
        std::thread::sleep(Duration::from_millis(2));
        let third = flows.start("third", "b").expect("start");
        assert_eq!(flows.len(), 2);
        assert!(flows.take(&first, "b").is_err(), "the oldest made room");
        assert_eq!(flows.take(&second, "b").expect("second"), "second");
        assert_eq!(flows.take(&third, "b").expect("third"), "third");
    }

    #[test]
    fn a_flow_is_only_for_the_browser_that_started_it() {
        let flows = PendingFlows::default();
        let key = flows
            .start("attacker's sign-in", "attacker-cookie")
            .expect("start");
        let Err(AuthError::Flow(why)) = flows.take(&key, "victim-cookie") else {
            panic!("another browser's callback must be refused");
        };
        assert!(why.contains("another browser"), "{why}");
        assert!(
            flows.take(&key, "attacker-cookie").is_err(),
            "and it is used up"
        );
        assert!(flows.start("x", "").is_err(), "no flow without a binding");
    }
}

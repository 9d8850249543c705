//! Passwords, API keys and session tokens.
//!
//! Passwords and API keys are stored only as Argon2id hashes (PHC strings,
//! so parameters can be raised later without invalidating old hashes).
//! Session tokens are 256-bit random values; the database keeps their
//! SHA-256, so a copy of the database does not hold usable sessions.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system's random number generator failed: {0}")]
    Random(String),
    #[error("cannot hash: {0}")]
    Hash(String),
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], SecretError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Argon2id with the crate's defaults (19 MiB, 2 passes: OWASP's minimum).
pub fn hash_password(password: &str) -> Result<String, SecretError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| SecretError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SecretError::Hash(e.to_string()))
}

/// Whether `password` matches a stored PHC hash; a malformed hash never matches.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash that no password matches, verified against when a username is
/// unknown so that timing does not tell which usernames exist.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy: no password matches this").unwrap_or_default())
}

/// A new session token (for the cookie) and what the database stores.
pub fn new_session_token() -> Result<(String, String), SecretError> {
    let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// API keys are `<id>.<secret>`: the id (public, 12 characters) finds the
/// row; the secret (256 bits) is checked against its Argon2id hash.
pub struct NewApiKey {
    pub key: String,
    pub key_id: String,
    pub hash: String,
}

pub fn new_api_key() -> Result<NewApiKey, SecretError> {
    let key_id = URL_SAFE_NO_PAD.encode(random_bytes::<9>()?);
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let hash = hash_password(&secret)?;
    Ok(NewApiKey {
        key: format!("{key_id}.{secret}"),
        key_id,
        hash,
    })
}

/// Splits a presented key into its id and secret, if it has that shape.
pub fn split_api_key(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.split_once('.')?;
    let shaped = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (shaped(id, 12) && shaped(secret, 43)).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsf", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(!verify_password("", decoy_hash()));
    }

    #[test]
    fn api_keys_round_trip_through_their_shape() {
        let k = new_api_key().expect("key");
        let (id, secret) = split_api_key(&k.key).expect("shape");
        assert_eq!(id, k.key_id);
        assert!(verify_password(secret, &k.hash));
        assert!(split_api_key("short.key").is_none());
        assert!(split_api_key(&k.key.replace('.', "")).is_none());
    }

    #[test]
    fn session_tokens_are_unique_and_hashed() {
        let (a, ha) = new_session_token().expect("token");
        let (b, _) = new_session_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(ha, token_hash(&a));
        assert_eq!(ha.len(), 64);
    }

    #[test]
    fn token_hashes_are_lowercase_hex_sha256() {
        // FIPS 180-2, appendix B.1 and B.2, and the empty message: the
        // expected digests come from the standard, not from this code.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            token_hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            token_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

//! Identity providers: each turns what a viewer presents into an
//! [`ExternalIdentity`] (or refuses), and nothing more. Roles, storage and
//! provisioning happen afterwards, the same way for every provider, in
//! [`crate::identity::login`].
//!
//! OAuth2/OIDC and SAML slot in the same way: a redirect flow ends with an
//! `ExternalIdentity` built from claims or assertions.

pub mod ldap;
pub mod login;
pub mod pam;
pub mod proxy;

use crate::store::GroupRef;

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// Stable provider name stored with the user: `ldap/<section>`, `pam`,
    /// `proxy`. Part of the identity, with `unique_id`.
    pub provider: String,
    /// The provider's stable id for the person (LDAP `UniqueIdAttribute`,
    /// the PAM username, the proxy's unique-id header or username).
    pub unique_id: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// `None` when the provider knows no groups (PAM).
    pub groups: Option<Vec<GroupRef>>,
    /// Values of the provider's role attribute/header, for role mapping.
    pub role_values: Vec<String>,
    /// `Logging = true` in the provider's section.
    pub logging: bool,
    pub is_ldap: bool,
}

/// Why a sign-in failed. Messages for viewers never say which part was
/// wrong; the log says more.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    InvalidCredentials,
    /// The provider could not be asked (down, timed out).
    #[error("the identity provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider answered in a way configuration must fix.
    #[error("the identity provider is misconfigured: {0}")]
    Misconfigured(String),
    /// Identity headers from a peer that is not a trusted proxy.
    #[error("identity headers from {0}, which is not a trusted proxy ([ProxyAuth] TrustedProxy)")]
    UntrustedProxy(std::net::IpAddr),
    /// A trusted proxy sent unusable headers.
    #[error("{0}")]
    BadHeaders(String),
}

/// The most a username may be; longer input is refused before any provider
/// sees it.
pub const MAX_USERNAME_LEN: usize = 255;

/// Usernames are refused before they reach a provider when they are empty,
/// too long, or hold control characters (which no directory uses, and which
/// would forge log lines).
pub fn plausible_username(username: &str) -> bool {
    !username.trim().is_empty()
        && username.len() <= MAX_USERNAME_LEN
        && !username.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_screened() {
        assert!(plausible_username("alice"));
        assert!(plausible_username("Alice.Smith@example.org"));
        assert!(
            plausible_username("*)(uid=*"),
            "escaped later, not refused here"
        );
        assert!(!plausible_username(""));
        assert!(!plausible_username("   "));
        assert!(!plausible_username("a\nINFO forged"));
        assert!(!plausible_username("a\0b"));
        assert!(!plausible_username(&"a".repeat(256)));
    }
}

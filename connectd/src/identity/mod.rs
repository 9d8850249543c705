//! Sign-in: who a viewer is, whatever the provider.
//!
//! - [`provider`]: the [`IdentityProvider`] trait every sign-in method
//!   implements, in one of three shapes (credentials, trusted headers, a
//!   redirect flow);
//! - [`password`], [`ldap`], [`pam`], [`proxy`], [`oidc`], [`saml`]: the
//!   providers;
//! - [`http_client`]: the back-channel HTTP client of OIDC and SAML;
//! - [`flow`]: server-side state of redirect flows, bounded and single use;
//! - [`login`]: everything after a provider said yes, the same way for
//!   every provider: role mapping, storage, provisioning.
//!
//! [`from_settings`] is the one place that turns `[Authentication]
//! Provider` into a provider. May import `config`, `roles`, `secrets`,
//! `store`, `accounts` and `logging`; never `run`, `http` or content.

pub mod flow;
pub(crate) mod http_client;
pub mod ldap;
pub mod login;
pub mod oidc;
pub mod pam;
pub mod password;
pub mod provider;
pub mod proxy;
pub mod saml;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod login_tests;

use std::sync::Arc;

pub use provider::{
    AccountSource, Callback, IdentityProvider, Redirect, Returned, SignInMethod, Verified,
};

use crate::config::{ProviderKind, Settings};
use crate::store::Store;

/// The provider `[Authentication] Provider` names, with its settings; an
/// error names what an administrator must fix. Providers that need their
/// identity provider's metadata first (SAML) read it here.
pub async fn from_settings(
    settings: &Settings,
    store: Arc<dyn Store>,
) -> Result<Arc<dyn IdentityProvider>, String> {
    Ok(match settings.provider {
        ProviderKind::Password => Arc::new(password::PasswordProvider::new(store)),
        ProviderKind::Ldap => Arc::new(ldap::LdapProvider::new(settings.ldap.clone())),
        ProviderKind::Pam => Arc::new(pam::PamProvider::new(
            settings.pam.service.clone(),
            settings.pam.forward_password,
        )),
        ProviderKind::Proxy => Arc::new(proxy::ProxyProvider::new(settings.proxy.clone())),
        ProviderKind::OAuth2 => {
            let (Some(oauth2), Some(address)) = (&settings.oauth2, &settings.address) else {
                return Err(
                    "[Authentication] Provider = oauth2 needs an [OAuth2] section and \
                            [Server] Address"
                        .into(),
                );
            };
            Arc::new(oidc::OidcProvider::new(oauth2.clone(), address, store)?)
        }
        ProviderKind::Saml => {
            let (Some(saml), Some(address)) = (&settings.saml, &settings.address) else {
                return Err(
                    "[Authentication] Provider = saml needs a [SAML] section and [Server] Address"
                        .into(),
                );
            };
            Arc::new(saml::SamlProvider::new(saml.clone(), address, store).await?)
        }
    })
}

/// With `GroupsAutoProvision = false`, only groups connectd has already
/// are joined.
pub(crate) fn keep_existing_groups(
    store: &dyn Store,
    identity: &mut ExternalIdentity,
) -> Result<(), AuthError> {
    let Some(groups) = identity.groups.as_mut() else {
        return Ok(());
    };
    let known = store
        .list_groups(None)
        .map_err(|e| AuthError::Internal(e.to_string()))?;
    groups.retain(|g| {
        known
            .iter()
            .any(|k| k.provider == identity.provider && k.unique_id == g.unique_id)
    });
    Ok(())
}

use crate::model::GroupRef;

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// Stable provider name stored with the user: `ldap/<section>`, `pam`,
    /// `proxy`, `oidc/<issuer>`. Part of the identity, with `unique_id`.
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
    /// A redirect sign-in came back without a usable state: unknown, used
    /// twice, expired, or altered on the way. The viewer starts again.
    #[error("the sign-in could not be completed: {0}")]
    Flow(String),
    /// The identity provider answered the sign-in with an error
    /// (`access_denied`, ...). `shown` is for the viewer, when the code is
    /// a standard one; `logged` is everything, for the administrator.
    #[error("{logged}")]
    Denied {
        shown: Option<String>,
        logged: String,
    },
    /// What came back failed verification (a token's signature, issuer,
    /// audience, times or nonce; a refused code). The viewer is told only
    /// that it failed.
    #[error("{0}")]
    Rejected(String),
    /// The provider vouched for the person but left out something this
    /// server needs; the message is written for the viewer.
    #[error("{0}")]
    Incomplete(String),
    /// The configured provider does not sign in this way (a password sent
    /// to a proxy-authenticated server, a callback without a redirect flow).
    #[error("this server does not sign in this way")]
    NotOffered,
    /// connectd itself failed (its database, a worker thread).
    #[error("internal error: {0}")]
    Internal(String),
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

//! The seam every sign-in method plugs into.
//!
//! A provider answers one question, "who is this?", in one of three shapes:
//! credentials checked in one step (password, LDAP, PAM), headers from a
//! trusted front proxy, or a redirect flow through an identity provider's
//! pages (OIDC, SAML) whose state the provider keeps server-side in a
//! [`PendingFlows`](super::flow::PendingFlows). What happens next (roles,
//! storage, provisioning, the session) is the same for every provider and
//! lives in [`Authenticator`](super::login::Authenticator), so a new
//! provider adds no match arms anywhere else.

use std::net::IpAddr;

use async_trait::async_trait;
use axum::http::HeaderMap;

use super::{AuthError, ExternalIdentity};
use crate::config::ProviderKind;
use crate::model::User;

/// How a provider takes a viewer's proof of identity; the sign-in page
/// and the request middleware ask this instead of the provider's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInMethod {
    /// A username and password in connectd's own form.
    Password,
    /// Headers set by a trusted front proxy on every request.
    TrustedHeaders,
    /// The browser is sent to the identity provider and comes back to
    /// `/__login__/callback`.
    Redirect,
}

/// Where the Unix account of a person this provider signs in comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountSource {
    /// Federated identities: nameserviced provisions an account for each.
    Provisioned,
    /// The person is a Unix account of this host already (PAM).
    Host,
    /// connectd's own users: no account of their own, content runs as
    /// `Applications.RunAs`.
    None,
}

/// What a provider answers when it has checked a viewer.
#[derive(Debug)]
pub enum Verified {
    /// A person the provider vouches for; connectd records them, maps their
    /// role and provisions their account.
    External(ExternalIdentity),
    /// One of connectd's own password users, checked against the store.
    Local(User),
}

/// Where a redirect flow sends the browser first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The identity provider's URL, with whatever state the flow needs.
    pub location: String,
}

/// What came back to `/__login__/callback`.
#[derive(Debug, Clone, Copy)]
pub struct Callback<'a> {
    /// The query string, without `?` (HTTP-Redirect bindings, OIDC).
    pub query: &'a str,
    /// An `application/x-www-form-urlencoded` body (HTTP-POST bindings).
    pub form: Option<&'a [u8]>,
    /// The browser's sign-in cookie, empty when it sent none: the value
    /// [`IdentityProvider::begin`] was given in the same browser.
    pub binding: &'a str,
}

/// A finished redirect flow: who signed in, and the local page they set
/// out for (already checked by whoever started the flow).
#[derive(Debug)]
pub struct Returned {
    pub identity: ExternalIdentity,
    pub return_to: String,
    /// The identity provider started this sign-in (SAML's IdP-initiated
    /// SSO): nothing binds it to this browser, so an attacker could have
    /// had it posted from their own page with their own identity. The
    /// viewer confirms it before a session starts.
    pub unsolicited: bool,
}

/// One sign-in method. Implementations hold their own settings and
/// clients; every method a provider does not offer answers
/// [`AuthError::NotOffered`], so callers need not know which is which.
#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// The configured `[Authentication] Provider`, for logs and the API.
    fn kind(&self) -> ProviderKind;

    /// The shape of its sign-in.
    fn method(&self) -> SignInMethod;

    /// Where its people's Unix accounts come from.
    fn accounts(&self) -> AccountSource;

    /// Whether people may be created in connectd itself (an administrator's
    /// `POST /users`, self-registration): only when the provider is
    /// connectd's own user list.
    fn creates_local_users(&self) -> bool {
        false
    }

    /// Whether the password of a successful sign-in is kept in memory for
    /// the PAM sessions of the viewer's content (`[PAM] ForwardPassword`).
    fn keeps_password(&self) -> bool {
        false
    }

    /// Checks a username and password. Called only with a plausible
    /// username ([`super::plausible_username`]).
    async fn with_password(&self, _username: &str, _password: &str) -> Result<Verified, AuthError> {
        Err(AuthError::NotOffered)
    }

    /// The identity a request's headers assert, `Ok(None)` when it carries
    /// none.
    fn identity_in_headers(
        &self,
        _peer: IpAddr,
        _headers: &HeaderMap,
    ) -> Result<Option<ExternalIdentity>, AuthError> {
        Ok(None)
    }

    /// Starts a redirect flow that will return the viewer to `return_to`
    /// (a local path the caller has checked), for the browser holding the
    /// random `binding` in a cookie: the callback is accepted only with it
    /// ([`super::flow`] says why).
    async fn begin(&self, _return_to: &str, _binding: &str) -> Result<Redirect, AuthError> {
        Err(AuthError::NotOffered)
    }

    /// Whether the identity provider sends the browser back with a
    /// cross-site POST (SAML's HTTP-POST binding): the sign-in cookie must
    /// then be one a browser sends on such a request.
    fn callback_is_cross_site_post(&self) -> bool {
        false
    }

    /// This server's metadata for the identity provider to import (SAML),
    /// served at `/__login__/metadata`.
    fn service_metadata(&self) -> Option<String> {
        None
    }

    /// Where a viewer may also end their session at the identity provider
    /// (OpenID Connect RP-initiated logout), once connectd's is ended.
    fn end_session_endpoint(&self) -> Option<String> {
        None
    }

    /// Finishes a redirect flow: checks what came back against the state
    /// kept by [`begin`](Self::begin), once.
    async fn finish(&self, _callback: Callback<'_>) -> Result<Returned, AuthError> {
        Err(AuthError::NotOffered)
    }
}

//! A provider for unit tests: a directory held in memory that can be told
//! to be down, signing in either with a password or through a redirect
//! flow that stands in for an OIDC or SAML identity provider's pages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::flow::PendingFlows;
use super::{
    AccountSource, AuthError, Callback, ExternalIdentity, IdentityProvider, Redirect, Returned,
    SignInMethod, Verified,
};
use crate::config::ProviderKind;
use crate::model::GroupRef;

/// Where the fake identity provider's "pages" live.
pub const FAKE_IDP: &str = "https://idp.example/authorize";

pub struct FakeProvider {
    pub method: SignInMethod,
    pub accounts: AccountSource,
    pub keeps_password: bool,
    /// username -> (password, groups)
    people: Mutex<HashMap<String, (String, Vec<String>)>>,
    pub down: AtomicBool,
    /// What `begin` kept: the page to return to.
    flows: PendingFlows<String>,
}

impl FakeProvider {
    pub fn new(method: SignInMethod) -> Self {
        Self {
            method,
            accounts: AccountSource::Provisioned,
            keeps_password: false,
            people: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
            flows: PendingFlows::default(),
        }
    }

    pub fn with_person(self, username: &str, password: &str, groups: &[&str]) -> Self {
        self.people
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                username.into(),
                (
                    password.into(),
                    groups.iter().map(|g| g.to_string()).collect(),
                ),
            );
        self
    }

    pub fn pending(&self) -> usize {
        self.flows.len()
    }

    fn identity(&self, username: &str) -> Option<ExternalIdentity> {
        let people = self.people.lock().unwrap_or_else(|p| p.into_inner());
        let (_, groups) = people.get(username)?;
        Some(ExternalIdentity {
            provider: "fake".into(),
            unique_id: format!("id-{username}"),
            username: username.into(),
            first_name: String::new(),
            last_name: String::new(),
            email: format!("{username}@example.org"),
            groups: Some(
                groups
                    .iter()
                    .map(|g| GroupRef {
                        unique_id: format!("gid-{g}"),
                        name: g.clone(),
                    })
                    .collect(),
            ),
            role_values: Vec::new(),
            logging: false,
            is_ldap: true,
        })
    }

    fn check_up(&self) -> Result<(), AuthError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuthError::Unavailable("the fake directory is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl IdentityProvider for FakeProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ldap
    }

    fn method(&self) -> SignInMethod {
        self.method
    }

    fn accounts(&self) -> AccountSource {
        self.accounts
    }

    fn keeps_password(&self) -> bool {
        self.keeps_password
    }

    async fn with_password(&self, username: &str, password: &str) -> Result<Verified, AuthError> {
        if self.method != SignInMethod::Password {
            return Err(AuthError::NotOffered);
        }
        self.check_up()?;
        let known = {
            let people = self.people.lock().unwrap_or_else(|p| p.into_inner());
            people.get(username).is_some_and(|(p, _)| p == password)
        };
        match self.identity(username) {
            Some(identity) if known => Ok(Verified::External(identity)),
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    async fn begin(&self, return_to: &str, binding: &str) -> Result<Redirect, AuthError> {
        if self.method != SignInMethod::Redirect {
            return Err(AuthError::NotOffered);
        }
        self.check_up()?;
        let state = self.flows.start(return_to.to_owned(), binding)?;
        Ok(Redirect {
            location: format!("{FAKE_IDP}?state={state}"),
        })
    }

    /// The callback carries `state=<key>&user=<name>`, as if the identity
    /// provider had signed `user` in.
    async fn finish(&self, callback: Callback<'_>) -> Result<Returned, AuthError> {
        if self.method != SignInMethod::Redirect {
            return Err(AuthError::NotOffered);
        }
        let params: HashMap<String, String> = serde_urlencoded::from_str(callback.query)
            .map_err(|e| AuthError::Flow(format!("unreadable callback: {e}")))?;
        let state = params
            .get("state")
            .ok_or_else(|| AuthError::Flow("the callback has no state".into()))?;
        let return_to = self.flows.take(state, callback.binding)?;
        let user = params.get("user").map(String::as_str).unwrap_or("");
        let identity = self.identity(user).ok_or(AuthError::InvalidCredentials)?;
        Ok(Returned {
            identity,
            return_to,
            unsolicited: false,
        })
    }
}

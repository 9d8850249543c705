//! One sign-in, whatever the provider: authenticate, compute the role,
//! record the user and their groups, then provision their Unix account.
//!
//! Order matters: nothing is written until the provider has said yes, so a
//! bad login creates no user; the account is provisioned before the login
//! completes, so the viewer's first app launch finds it.

use std::sync::Arc;

use crate::accounts::provision::Provisioner;
use crate::config::Settings;
use crate::identity::{
    self, AccountSource, AuthError, Callback, ExternalIdentity, IdentityProvider, Redirect,
    Returned, Verified,
};
use crate::model::{GroupRef, User};
use crate::roles::{self, Evidence, Role};
use crate::store::{LoginRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("this user is locked")]
    Locked,
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Locked => LoginError::Locked,
            StoreError::UsernameTaken(_) => LoginError::Conflict(e.to_string()),
            StoreError::Backend(_) => LoginError::Internal(e.to_string()),
        }
    }
}

pub struct Authenticator {
    pub settings: Arc<Settings>,
    pub store: Arc<dyn Store>,
    provider: Arc<dyn IdentityProvider>,
    pub provisioner: Provisioner,
    /// `[PAM] ForwardPassword`: each PAM user's last password, in memory
    /// only, for the authenticated PAM session of their content processes
    /// (Kerberos credentials). Gone when connectd restarts.
    pub forwarded: ForwardedPasswords,
}

/// Passwords kept for PAM sessions; overwritten when replaced or dropped.
#[derive(Default)]
pub struct ForwardedPasswords(std::sync::Mutex<std::collections::HashMap<i64, Vec<u8>>>);

impl ForwardedPasswords {
    fn keep(&self, user_id: i64, password: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut old) = map.insert(user_id, password.as_bytes().to_vec()) {
            old.fill(0);
        }
    }

    fn get(&self, user_id: i64) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&user_id)
            .and_then(|b| String::from_utf8(b.clone()).ok())
    }
}

impl Drop for ForwardedPasswords {
    fn drop(&mut self) {
        let map = self.0.get_mut().unwrap_or_else(|p| p.into_inner());
        for bytes in map.values_mut() {
            bytes.fill(0);
        }
    }
}

impl Authenticator {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        provider: Arc<dyn IdentityProvider>,
        provisioner: Provisioner,
    ) -> Self {
        Self {
            settings,
            store,
            provider,
            provisioner,
            forwarded: Default::default(),
        }
    }

    /// The configured sign-in method.
    pub fn provider(&self) -> &dyn IdentityProvider {
        self.provider.as_ref()
    }

    /// A username and password, checked by the configured provider.
    pub async fn with_password(&self, username: &str, password: &str) -> Result<User, LoginError> {
        if !identity::plausible_username(username) {
            return Err(AuthError::InvalidCredentials.into());
        }
        let user = match self.provider.with_password(username, password).await {
            Ok(Verified::External(identity)) => self.complete(identity).await?,
            Ok(Verified::Local(user)) => {
                // Locked is only revealed to someone who knows the password.
                if user.locked {
                    return Err(LoginError::Locked);
                }
                self.store.mark_password_login(user.id)?;
                user
            }
            // These providers never see a password form.
            Err(AuthError::NotOffered) => return Err(AuthError::InvalidCredentials.into()),
            Err(e) => return Err(e.into()),
        };
        if self.provider.keeps_password() {
            self.forwarded.keep(user.id, password);
        }
        Ok(user)
    }

    /// The identity a trusted proxy's headers assert, `Ok(None)` when the
    /// request carries none; [`complete`](Self::complete) records it.
    pub fn with_headers(
        &self,
        peer: std::net::IpAddr,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<ExternalIdentity>, AuthError> {
        self.provider.identity_in_headers(peer, headers)
    }

    /// Starts a redirect sign-in that returns to `return_to`, bound to
    /// the browser that holds `binding`.
    pub async fn begin(&self, return_to: &str, binding: &str) -> Result<Redirect, LoginError> {
        Ok(self.provider.begin(return_to, binding).await?)
    }

    /// Finishes a redirect sign-in: the provider checks the callback, then
    /// the person is recorded, mapped and provisioned like any other.
    /// Finishes a redirect sign-in: the user, where they set out for, and
    /// whether they must confirm it first ([`Returned::unsolicited`]).
    pub async fn finish(&self, callback: Callback<'_>) -> Result<(User, String, bool), LoginError> {
        let Returned {
            identity,
            return_to,
            unsolicited,
        } = self.provider.finish(callback).await?;
        Ok((self.complete(identity).await?, return_to, unsolicited))
    }

    /// The password `user_id` last signed in with, when
    /// `[PAM] ForwardPassword` keeps it.
    pub fn forwarded_password(&self, user_id: i64) -> Option<String> {
        self.forwarded.get(user_id)
    }

    /// Everything after a provider said yes: role mapping, storage,
    /// provisioning.
    pub async fn complete(&self, identity: ExternalIdentity) -> Result<User, LoginError> {
        let settings = &self.settings;
        let groups: Vec<String> = identity
            .groups
            .iter()
            .flatten()
            .map(|g| g.name.clone())
            .collect();
        let mut messages = Vec::new();
        let record = LoginRecord {
            provider: &identity.provider,
            unique_id: &identity.unique_id,
            username: &identity.username,
            first_name: &identity.first_name,
            last_name: &identity.last_name,
            email: &identity.email,
            groups: identity.groups.as_deref(),
        };
        let (user, created) = self
            .store
            .record_login(&record, &mut |current, first_user| {
                let fallback = if first_user {
                    Role::Administrator
                } else {
                    settings.default_role
                };
                let decision = roles::decide(
                    &settings.mapping,
                    Evidence {
                        groups: &groups,
                        role_values: &identity.role_values,
                        is_ldap: identity.is_ldap,
                    },
                    current,
                    fallback,
                    settings.default_role,
                );
                messages = decision.messages;
                decision.role
            })?;
        for message in &messages {
            if identity.logging {
                tracing::info!(user = %user.username, "{message}");
            } else {
                tracing::debug!(user = %user.username, "{message}");
            }
        }
        if created {
            tracing::info!(
                user = %user.username,
                provider = %user.provider,
                role = %user.role,
                "new user signed in for the first time"
            );
        }
        if settings.run_as_current_user && self.provider.accounts() == AccountSource::Provisioned {
            let groups = identity.groups.clone().unwrap_or_default();
            self.provision(&user, &groups).await;
        }
        // Re-read: provisioning may have changed the pending flag.
        Ok(self.store.user_by_guid(&user.guid)?.unwrap_or(user))
    }

    /// Ensures the user's Unix account. A failure does not fail the login:
    /// it is logged, remembered, and retried when content is launched.
    pub async fn provision(&self, user: &User, groups: &[GroupRef]) -> bool {
        match self.provisioner.ensure(user, groups).await {
            Ok(account) => {
                tracing::info!(
                    user = %user.username,
                    account = %account.name,
                    uid = account.uid,
                    "Unix account ready"
                );
                if let Err(e) = self.store.set_unix_account(user.id, &account.name) {
                    tracing::error!(user = %user.username, "could not record the Unix account: {e}");
                    return false;
                }
                if user.needs_provisioning {
                    let _ = self.store.set_needs_provisioning(user.id, false);
                }
                true
            }
            Err(e) => {
                tracing::error!(
                    user = %user.username,
                    "could not provision the Unix account at sign-in; the sign-in goes on and \
                     provisioning is retried when content is launched: {e}"
                );
                let _ = self.store.set_needs_provisioning(user.id, true);
                false
            }
        }
    }
}

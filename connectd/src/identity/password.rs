//! connectd's own users: usernames and Argon2id password hashes in the
//! store, created by an administrator or by self-registration.
//!
//! An unknown username is checked against a decoy hash, so the answer takes
//! as long as for a known one and does not tell which usernames exist.

use std::sync::Arc;

use async_trait::async_trait;

use super::{AccountSource, AuthError, IdentityProvider, SignInMethod, Verified};
use crate::config::ProviderKind;
use crate::secrets;
use crate::store::Store;

pub struct PasswordProvider {
    store: Arc<dyn Store>,
}

impl PasswordProvider {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl IdentityProvider for PasswordProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Password
    }

    fn method(&self) -> SignInMethod {
        SignInMethod::Password
    }

    fn accounts(&self) -> AccountSource {
        AccountSource::None
    }

    fn creates_local_users(&self) -> bool {
        true
    }

    async fn with_password(&self, username: &str, password: &str) -> Result<Verified, AuthError> {
        let found = self
            .store
            .password_hash(username)
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, secrets::decoy_hash().to_owned()),
        };
        let password = password.to_owned();
        let matches =
            tokio::task::spawn_blocking(move || secrets::verify_password(&password, &hash))
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))?;
        match user {
            Some(user) if matches => Ok(Verified::Local(user)),
            _ => Err(AuthError::InvalidCredentials),
        }
    }
}

//! PAM sign-in through the machine's real PAM stack (`[PAM] Service`).
//!
//! PAM users are Unix accounts already, so they are never provisioned; the
//! username is their identity. libpam is blocking and may take seconds
//! (pam_faildelay), so it runs on the blocking pool.

use async_trait::async_trait;

use super::{AccountSource, AuthError, ExternalIdentity, IdentityProvider, SignInMethod, Verified};
use crate::config::ProviderKind;

/// `[PAM] Service`, and whether `[PAM] ForwardPassword` keeps passwords.
pub struct PamProvider {
    service: String,
    forward_password: bool,
}

impl PamProvider {
    pub fn new(service: String, forward_password: bool) -> Self {
        Self {
            service,
            forward_password,
        }
    }
}

#[async_trait]
impl IdentityProvider for PamProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Pam
    }

    fn method(&self) -> SignInMethod {
        SignInMethod::Password
    }

    fn accounts(&self) -> AccountSource {
        AccountSource::Host
    }

    fn keeps_password(&self) -> bool {
        self.forward_password
    }

    async fn with_password(&self, username: &str, password: &str) -> Result<Verified, AuthError> {
        authenticate(&self.service, username, password)
            .await
            .map(Verified::External)
    }
}

pub async fn authenticate(
    service: &str,
    username: &str,
    password: &str,
) -> Result<ExternalIdentity, AuthError> {
    if password.is_empty() {
        return Err(AuthError::InvalidCredentials);
    }
    let (service, user, pass) = (service.to_owned(), username.to_owned(), password.to_owned());
    let checked = tokio::task::spawn_blocking(move || -> Result<String, AuthError> {
        let mut client = pam::Authenticator::with_password(&service).map_err(|e| {
            AuthError::Misconfigured(format!(
                "cannot start PAM service {service:?} ([PAM] Service; /etc/pam.d/{service}): {e}"
            ))
        })?;
        client.get_handler().set_credentials(user.clone(), pass);
        // authenticate() runs pam_authenticate and then pam_acct_mgmt, so
        // expired and disabled accounts are refused too.
        client
            .authenticate()
            .map_err(|_| AuthError::InvalidCredentials)?;
        Ok(user)
    })
    .await
    .map_err(|e| AuthError::Unavailable(format!("PAM worker failed: {e}")))??;
    let (first_name, last_name) = gecos_names(&checked);
    Ok(ExternalIdentity {
        provider: "pam".into(),
        unique_id: checked.clone(),
        username: checked,
        first_name,
        last_name,
        email: String::new(),
        groups: None,
        role_values: Vec::new(),
        logging: false,
        is_ldap: false,
    })
}

/// First and last name from the account's GECOS field, through libc like
/// every other account lookup.
fn gecos_names(username: &str) -> (String, String) {
    let full = crate::accounts::unix::lookup_user(username)
        .ok()
        .flatten()
        .map(|a| a.gecos.split(',').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    match full.rsplit_once(' ') {
        Some((first, last)) => (first.to_owned(), last.to_owned()),
        None => (full, String::new()),
    }
}

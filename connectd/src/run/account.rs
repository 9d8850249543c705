//! Account decisions: which Unix account a request runs as, whether it may,
//! and which PAM session its process opens. Asked only when a process is
//! to start; requests that find a process need no lookup.

use std::sync::Arc;

use crate::accounts::runas::{self, AccountRefusal, RunAccount};
use crate::config::Settings;
use crate::identity::login::Authenticator;
use crate::identity::AccountSource;
use crate::model::Content;
use crate::model::{GroupRef, User};
use crate::run::launcher::SessionPlan;
use crate::store::Store;

/// Who a request runs as, decided before any process is chosen.
pub(super) struct RunIdentity {
    pub(super) account: RunAccount,
    pub(super) viewer_id: Option<i64>,
    pub(super) keep_minimum: bool,
    /// `[PAM] UseSession`: the session to open for a viewer's process.
    pub(super) pam_session: Option<SessionPlan>,
}

/// Why no account could run a request; the scheduler words it for viewers.
#[derive(Debug, thiserror::Error)]
pub(super) enum AccountError {
    #[error("{0}")]
    Refused(AccountRefusal),
    #[error("{0}")]
    Provisioning(String),
    #[error("{0}")]
    Internal(String),
}

/// Resolves and checks accounts, with what it needs to provision them.
pub(super) struct Accounts {
    pub(super) settings: Arc<Settings>,
    pub(super) store: Arc<dyn Store>,
    pub(super) auth: Arc<Authenticator>,
}

impl Accounts {
    /// The account a request for `content` runs as: the viewer's own when
    /// the content asks for it and the server permits it, else the
    /// content's RunAs, else `Applications.RunAs` (also for anonymous
    /// viewers of current-user content).
    pub(super) async fn identity(
        &self,
        content: &Content,
        viewer: Option<&User>,
    ) -> Result<RunIdentity, AccountError> {
        let current_user = content.run_as_current_user && self.settings.run_as_current_user;
        let (name, viewer_id) = match viewer.filter(|_| current_user) {
            Some(user) => (self.viewer_account(user).await?, Some(user.id)),
            None => (
                content
                    .run_as
                    .clone()
                    .unwrap_or_else(|| self.settings.run_as.clone()),
                None,
            ),
        };
        let settings = self.settings.clone();
        let account = tokio::task::spawn_blocking(move || runas::check_account(&settings, &name))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?
            .map_err(AccountError::Refused)?;
        let pam = &self.settings.pam;
        // `[PAM] UseSession` is for viewers who are host accounts, which
        // only the PAM provider signs in.
        let host_account = self.auth.provider().accounts() == AccountSource::Host;
        let pam_session = match viewer_id {
            Some(id) if host_account && pam.use_session => {
                let password = if pam.forward_password {
                    self.auth.forwarded_password(id)
                } else {
                    None
                };
                Some(SessionPlan {
                    service: if password.is_some() {
                        pam.authenticated_session_service.clone()
                    } else {
                        pam.session_service.clone()
                    },
                    password,
                })
            }
            _ => None,
        };
        Ok(RunIdentity {
            account,
            viewer_id,
            keep_minimum: viewer_id.is_none(),
            pam_session,
        })
    }

    /// The viewer's Unix account name: host accounts (PAM) are named by
    /// the username; provisioned ones were recorded when the nameservice
    /// provisioned them, and are provisioned again now if that failed at
    /// sign-in. connectd's own users have no account, and the server
    /// refuses RunAsCurrentUser for them at start-up, so their username
    /// fails the run-as checks with the usual message.
    async fn viewer_account(&self, user: &User) -> Result<String, AccountError> {
        if self.auth.provider().accounts() != AccountSource::Provisioned {
            return Ok(user.username.clone());
        }
        let known = self
            .store
            .unix_account(user.id)
            .map_err(|e| AccountError::Internal(e.to_string()))?;
        if let (Some(name), false) = (&known, user.needs_provisioning) {
            return Ok(name.clone());
        }
        let groups: Vec<GroupRef> = self
            .store
            .groups_of(user.id)
            .map_err(|e| AccountError::Internal(e.to_string()))?
            .into_iter()
            .map(|g| GroupRef {
                unique_id: g.unique_id,
                name: g.name,
            })
            .collect();
        if !self.auth.provision(user, &groups).await {
            return Err(AccountError::Provisioning(
                "provisioning failed; the server log says why".to_owned(),
            ));
        }
        self.store
            .unix_account(user.id)
            .map_err(|e| AccountError::Internal(e.to_string()))?
            .ok_or_else(|| AccountError::Provisioning("no account was recorded".to_owned()))
    }
}

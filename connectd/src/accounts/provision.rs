//! Asking nameserviced for the viewer's Unix account, over its privileged
//! provisioning socket (connectd runs as root or as the configured
//! `[Nameservice] ServiceAccount`).

use crate::logging::error_chain;
use std::path::PathBuf;
use std::time::Duration;

use connect_proto::v1::{self, provisioning_client::ProvisioningClient};

use crate::model::{GroupRef, User};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "cannot reach the nameservice at {socket}: {reason}; is nameserviced running \
         (systemctl status nameserviced)?"
    )]
    Unreachable { socket: String, reason: String },
    #[error("the nameservice refused to provision {username:?}: {message}")]
    Refused { username: String, message: String },
    /// The nameservice answered, but something it depends on (a directory)
    /// did not: the same request works once that is back.
    #[error("the nameservice cannot give {username:?} an account yet: {message}")]
    Waiting { username: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Provisioner {
    socket: PathBuf,
    timeout: Duration,
}

impl Provisioner {
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self { socket, timeout }
    }

    /// Ensures the account exists with exactly these provider groups.
    /// Idempotent: nameserviced keys accounts by (provider, unique id).
    pub async fn ensure(
        &self,
        user: &User,
        groups: &[GroupRef],
    ) -> Result<v1::Account, ProvisionError> {
        let unreachable = |reason: String| ProvisionError::Unreachable {
            socket: self.socket.display().to_string(),
            reason,
        };
        let channel = connect_proto::client::connect(&self.socket, self.timeout)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let display_name = format!("{} {}", user.first_name, user.last_name)
            .trim()
            .to_owned();
        let request = v1::EnsureUserRequest {
            identity: Some(v1::Identity {
                provider: user.provider.clone(),
                unique_id: user.unique_id.clone(),
            }),
            username: user.username.clone(),
            display_name,
            groups: groups
                .iter()
                .map(|g| v1::IdpGroup {
                    unique_id: g.unique_id.clone(),
                    name: g.name.clone(),
                })
                .collect(),
        };
        let reply = ProvisioningClient::new(channel)
            .ensure_user(request)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable
                    if status
                        .metadata()
                        .contains_key(connect_proto::UPSTREAM_UNAVAILABLE) =>
                {
                    ProvisionError::Waiting {
                        username: user.username.clone(),
                        message: status.message().to_owned(),
                    }
                }
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled => unreachable(status.message().to_owned()),
                _ => ProvisionError::Refused {
                    username: user.username.clone(),
                    message: status.message().to_owned(),
                },
            })?
            .into_inner();
        for warning in &reply.warnings {
            tracing::warn!(user = %user.username, "nameservice: {warning}");
        }
        reply.account.ok_or_else(|| ProvisionError::Refused {
            username: user.username.clone(),
            message: "the reply held no account".into(),
        })
    }

    /// The nameservice's record of an identity's account (where it comes
    /// from, when it was bound and refreshed); `None` when it has none.
    pub async fn account_of(
        &self,
        provider: &str,
        unique_id: &str,
    ) -> Result<Option<v1::Account>, ProvisionError> {
        let unreachable = |reason: String| ProvisionError::Unreachable {
            socket: self.socket.display().to_string(),
            reason,
        };
        let channel = connect_proto::client::connect(&self.socket, self.timeout)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let selector = v1::AccountSelector {
            by: Some(v1::account_selector::By::Identity(v1::Identity {
                provider: provider.to_owned(),
                unique_id: unique_id.to_owned(),
            })),
        };
        match ProvisioningClient::new(channel).get_account(selector).await {
            Ok(reply) => Ok(reply.into_inner().account),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(unreachable(status.message().to_owned())),
        }
    }
}

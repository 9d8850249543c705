//! Existing directory accounts (OpenLDAP posixAccount, Active Directory with
//! RFC 2307 attributes): reading them, checking them, caching them.
//!
//! - `config::directory` reads the `[Nameservice "name"]` subsections;
//! - [`Directory`] is the seam to one directory server; [`ldap`] is the real
//!   one (`ldap3`), [`fake`] the one unit tests use;
//! - [`checks`] refuses entries that would shadow or collide with an account
//!   someone else already has;
//! - [`resolver`] ties them to the [`crate::service::Nameservice`]: which
//!   directory answers, the negative cache, backoff while a directory is
//!   down, and the background refresh.
//!
//! May import `config`, `local`, `names`, `host`, `store` and `service`; the
//! service never imports this module (it stores what it is given).

use async_trait::async_trait;

pub mod checks;
#[cfg(test)]
pub mod fake;
pub mod ldap;
pub mod resolver;
pub mod source;

pub use crate::config::directory::DirectorySettings;

/// Entries travel as the service stores them: a posixAccount is a
/// [`DirectoryAccount`], a posixGroup (or groupOfNames with a gidNumber) a
/// [`DirectoryGroup`]; the resolver stamps `source` with the directory that
/// answered.
pub use crate::service::{DirectoryAccount, DirectoryGroup};

/// What to look a user up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKey<'a> {
    Name(&'a str),
    Uid(u32),
    /// The value of the directory's `IdentityAttribute`.
    Link(&'a str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupKey<'a> {
    Name(&'a str),
    Gid(u32),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DirectoryError {
    /// Cannot be reached, timed out, or failed the operation: try later.
    #[error("{0}")]
    Unavailable(String),
    /// The settings cannot work (bad credentials, unreadable CA): an
    /// administrator must act; retrying will not help.
    #[error("{0}")]
    Misconfigured(String),
    /// More than one entry matched a key that must be unique.
    #[error("{0}")]
    Ambiguous(String),
}

/// One directory server. Implementations bound every operation by the
/// directory's `Timeout` and never block the caller's thread.
#[async_trait]
pub trait Directory: Send + Sync {
    async fn user(&self, key: UserKey<'_>) -> Result<Option<DirectoryAccount>, DirectoryError>;
    async fn group(&self, key: GroupKey<'_>) -> Result<Option<DirectoryGroup>, DirectoryError>;
    /// The groups that list `user` as a member.
    async fn groups_of(
        &self,
        user: &DirectoryAccount,
    ) -> Result<Vec<DirectoryGroup>, DirectoryError>;
}

#[cfg(test)]
mod resolver_tests;

//! connectd: the content server. It signs viewers in, maps their roles,
//! provisions their Unix accounts, and runs their content under them.
//!
//! - [`config`]: settings from the gcfg file, with Connect's names;
//! - [`auth`]: identity providers (password, LDAP, PAM, proxy);
//! - [`roles`]: roles and automatic role mapping;
//! - [`login`]: one sign-in, whatever the provider;
//! - [`store`]: users, groups, sessions and API keys in SQLite;
//! - [`provision`]: Unix accounts through nameserviced;
//! - [`unix`]: account lookups through libc;
//! - [`content`], [`runas`]: content items and who may run them as whom;
//! - [`bundle`], [`deploy`]: bundles, app modes and building environments;
//! - [`scheduler`], [`sandbox`]: content processes, their pools and their
//!   private mount namespaces;
//! - [`proxy`]: the reverse proxy to content processes;
//! - [`http`]: the login pages, the JSON API and `/content/`.

pub mod auth;
pub mod bundle;
pub mod config;
pub mod content;
pub mod deploy;
pub mod http;
pub mod layout;
pub mod logging;
pub mod login;
pub mod provision;
pub mod proxy;
pub mod roles;
pub mod runas;
pub mod sandbox;
pub mod scheduler;
pub mod secrets;
pub mod store;
pub mod unix;

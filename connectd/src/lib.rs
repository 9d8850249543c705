//! connectd: the content server. It signs viewers in, maps their roles,
//! provisions their Unix accounts, and runs their content under them.
//!
//! - [`config`]: settings from the gcfg file, with Connect's names;
//! - [`identity`]: identity providers (password, LDAP, PAM, proxy) and one
//!   sign-in, whatever the provider;
//! - [`roles`]: roles and automatic role mapping;
//! - [`store`]: users, groups, sessions and API keys in SQLite;
//! - [`accounts`]: Unix accounts through libc, run-as rules, provisioning
//!   through nameserviced;
//! - [`content`]: content items and who may change them;
//! - [`bundle`], [`deploy`]: bundles, app modes and building environments;
//! - [`run`]: content processes, their pools, and the local launcher with
//!   its private mount namespaces;
//! - [`proxy`]: the reverse proxy to content processes;
//! - [`http`]: the login pages, the JSON API and `/content/`.

pub mod accounts;
pub mod bundle;
pub mod config;
pub mod content;
pub mod deploy;
pub mod http;
pub mod identity;
pub mod layout;
pub mod logging;
pub mod model;
pub mod proxy;
pub mod roles;
pub mod run;
pub mod secrets;
pub mod store;

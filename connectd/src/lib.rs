//! connectd: the content server's identity half.
//!
//! - [`config`]: settings from the gcfg file, with Connect's names;
//! - [`auth`]: identity providers (password, LDAP, PAM, proxy);
//! - [`roles`]: roles and automatic role mapping;
//! - [`login`]: one sign-in, whatever the provider;
//! - [`store`]: users, groups, sessions and API keys in SQLite;
//! - [`provision`]: Unix accounts through nameserviced;
//! - [`unix`]: account lookups through libc;
//! - [`http`]: the login pages and the JSON API.

pub mod auth;
pub mod bundle;
pub mod config;
pub mod http;
pub mod logging;
pub mod login;
pub mod provision;
pub mod proxy;
pub mod roles;
pub mod sandbox;
pub mod secrets;
pub mod store;
pub mod unix;

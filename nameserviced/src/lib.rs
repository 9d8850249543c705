//! nameserviced: gives every federated identity (OAuth2/OIDC, SAML, LDAP) a
//! stable Unix account in the shared group, and answers libnss_connect's
//! questions about them.
//!
//! Layout: [`config`] reads the gcfg file, [`local`] the machine's own account
//! files, [`names`] holds the naming rules, [`store`] the SQLite rows,
//! [`state_dir`] keeps the state directory private and locked,
//! [`cache`] the lookup cache, [`publish`] the memory-mapped cache file for
//! the NSS module's fast path, [`service`] the rules that tie them together,
//! [`server`] the gRPC transport and [`client`] the way tools reach it.
//! [`host`] reads accounts the host resolves itself, [`directory`] the
//! accounts of RFC 2307 directories.

pub mod backup;
pub mod cache;
/// Kept for callers that reach the client through the daemon crate.
pub use connect_proto::client;
pub mod config;
pub mod directory;
pub mod high_water;
pub mod host;
pub mod local;
pub mod logging;
pub mod names;
pub mod publish;
pub mod server;
pub mod service;
pub mod state_dir;
pub mod store;

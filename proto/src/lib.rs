//! The gRPC contract of the Connect nameservice.
//!
//! Two services, served on two Unix sockets so that file modes and peer
//! credentials can tell them apart:
//! - [`v1::lookup_client::LookupClient`]: read-only questions NSS asks
//!   (any local process may call them);
//! - [`v1::provisioning_client::ProvisioningClient`]: changes to accounts
//!   (root and the configured service account only).

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("connect.nameservice.v1");
}

#[cfg(feature = "client")]
pub mod client;

/// Default path of the read-only lookup socket.
pub const DEFAULT_LOOKUP_SOCKET: &str = "/run/connect-nameservice/lookup.sock";
/// Default path of the privileged provisioning socket.
pub const DEFAULT_PROVISION_SOCKET: &str = "/run/connect-nameservice/provision.sock";
/// Default path of the memory-mapped account cache (the NSS fast path).
pub const DEFAULT_CACHE_FILE: &str = "/run/connect-nameservice/cache";
/// Environment variable (honoured only through `secure_getenv`) naming
/// another cache file for libnss_connect, or `off` to read none.
pub const NSS_CACHE_ENV: &str = "CONNECT_NSS_CACHE";
/// Environment variable that, when set to `1` in a process, makes
/// libnss_connect answer UNAVAIL at once. nameserviced sets it on itself so a
/// lookup made inside the daemon can never call back into the daemon.
pub const NSS_BYPASS_ENV: &str = "CONNECT_NSS_BYPASS";
/// gRPC metadata key nameserviced sets on an UNAVAILABLE status when the
/// daemon itself answered but something it depends on (a directory) did
/// not, so a client can tell "try again later" from "daemon not running".
pub const UPSTREAM_UNAVAILABLE: &str = "x-nameservice-upstream-unavailable";
/// Environment variable (honoured only through `secure_getenv`, so never in
/// setuid programs) that points libnss_connect at another lookup socket. It
/// also turns off the default cache file (that file is the default daemon's),
/// unless [`NSS_CACHE_ENV`] names the other daemon's cache.
pub const NSS_SOCKET_ENV: &str = "CONNECT_NSS_SOCKET";

/// Longest name any nameservice configuration can produce (`MaxNameLength`
/// is capped at this); longer names are answered "not found" without asking.
pub const MAX_NAME_LEN: usize = 255;

/// Could the nameservice ever have given out `name` (user or group)? The
/// rule behind every name it creates: ASCII lower-case letters, digits, `_`,
/// `.` and `-`, starting with a letter or `_`, at most `max` bytes. Both the
/// NSS module (before a round trip) and the daemon (before a database read)
/// answer "not found" for anything else.
pub fn is_plausible_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

//! Unix accounts: who a viewer runs as and how that account comes to exist.
//!
//! - [`unix`]: account and group lookups through libc (getpwnam_r,
//!   getgrouplist), the only way connectd resolves accounts;
//! - [`runas`]: which accounts content may run as (Connect's codes 54-58);
//! - [`provision`]: provisioning through nameserviced over its socket.
//!
//! Owns no state. May import `config`, `logging`, the plain types of
//! `store` and `roles`; never `identity`, `run` or `http`.

pub mod provision;
pub mod runas;
pub mod unix;

//! Content processes on this machine: the sandbox (fork on a spawner
//! thread, a private mount namespace, the account switch) and the PAM
//! sessions a viewer's processes run in. Imports nothing else of connectd.

pub mod pam_session;
pub mod sandbox;

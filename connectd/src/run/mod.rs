//! Running content: the scheduler's pools of content processes, the
//! Launcher seam they start through, and the local launcher.
//!
//! - [`launcher`]: the seam, [`launcher::Launcher`] and
//!   [`launcher::Running`], with a backend-neutral [`launcher::LaunchSpec`];
//! - [`scheduler`]: applies the pool policy, starts processes through the
//!   launcher, watches InitTimeout and supervises them; records job rows;
//! - `pool`: the policy itself (pools per content item and viewer or
//!   account, LoadFactor, MaxProcesses, MaxTotalProcesses, idle reaping);
//! - `account`: which Unix account a request runs as, and its PAM plan;
//! - [`jobs`]: what processes and builds share (job keys, base
//!   environment, logs, runtimes); deploy borrows it;
//! - [`local`]: the first launcher: processes on this machine, in a
//!   private mount namespace, under the viewer's or the RunAs account,
//!   with PAM sessions and Unix sockets;
//! - [`usage`]: what running processes cost (memory, CPU) and an hour of
//!   that history, for capacity planning in the dashboard.
//!
//! May import `config`, `content`, `bundle`, `layout`, `accounts`,
//! `identity::login` (forwarded passwords, provisioning), `store` and
//! `proxy` (a leaf); never `http` or `deploy`. `launcher` imports nothing
//! of connectd, so any backend can implement it.

mod account;
pub mod jobs;
pub mod launcher;
pub mod local;
mod pool;
pub mod scheduler;
pub mod usage;

pub use pool::Process;

#[cfg(test)]
pub(crate) mod fake;

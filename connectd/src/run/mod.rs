//! Running content: the scheduler's pools of content processes, the
//! Launcher seam they start through, and the local launcher.
//!
//! - [`launcher`]: the seam, [`launcher::Launcher`] and
//!   [`launcher::Running`], with a backend-neutral launch spec;
//! - [`scheduler`]: pools per content item and viewer, LoadFactor,
//!   MaxProcesses, reaping and InitTimeout;
//! - [`local`]: processes on this machine, in a private mount namespace,
//!   under the viewer's or the RunAs account, with PAM sessions.
//!
//! May import `config`, `content`, `bundle`, `layout`, `accounts`, `store`
//! and `proxy` (a leaf); never `http` or `deploy`.

pub mod launcher;
pub mod local;
pub mod scheduler;

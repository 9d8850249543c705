//! Stopping a content process: [`terminate`] asks the sandbox's monitor to
//! stop (it passes the signal to every process of the PID namespace) and
//! kills it if the content does not end in time.

use std::time::Duration;

use libc::c_int;

/// SIGTERM to the sandbox (the monitor `child` is, which passes it to
/// every process in the namespace, including any that left the process
/// group), then SIGKILL after `grace` if the content has not ended;
/// returns once the monitor has been reaped.
///
/// The monitor ends only after init, and init's end kills everything left
/// in the namespace, so when this returns no process of the content is
/// left running, even one started with `setsid`. The monitor is not reaped
/// before the end, so its pid (the group's id) cannot be reused by an
/// unrelated process while we signal it. A child that was already reaped
/// has nothing left to stop.
pub async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    signal(pid, libc::SIGTERM);
    // A stopped process would only see SIGTERM once continued.
    signal(pid, libc::SIGCONT);
    // `wait` is cancel-safe: the timeout leaves the child unreaped.
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::debug!(pid, "content outlived its grace period: SIGKILL");
        // The group: the monitor, init and whatever stayed in it. Init's
        // death takes the rest of the namespace.
        signal(-pid, libc::SIGKILL);
    }
    if let Err(e) = child.wait().await {
        tracing::warn!(pid, "could not reap the content process: {e}");
    }
}

/// The host pid of the content process a monitor (pid `monitor`, the
/// child [`spawn`](super::spawn) returned) runs: its grandchild, after
/// init. `None` once it has ended, or where the kernel does not list
/// children (`CONFIG_PROC_CHILDREN`).
pub fn content_pid(monitor: u32) -> Option<u32> {
    let first_child = |pid: u32| -> Option<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    first_child(first_child(monitor)?)
}

fn signal(target: libc::pid_t, signal: c_int) {
    // SAFETY: kill has no memory-safety preconditions. ESRCH (nothing left)
    // is the expected outcome of a race and needs no handling.
    unsafe { libc::kill(target, signal) };
}

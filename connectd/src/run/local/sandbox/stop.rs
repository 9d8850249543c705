//! Stopping a content process: [`terminate`] signals its whole process
//! group and waits for it by reading /proc.

use std::io;
use std::time::{Duration, Instant};

use libc::c_int;

/// How often [`terminate`] looks whether the group is gone.
const POLL: Duration = Duration::from_millis(25);

/// SIGTERM to the process group `pid` leads, then SIGKILL after `grace` if
/// any member is still alive; returns when the leader has been reaped or
/// `child` is gone.
///
/// The leader is not reaped before the end, so its pid (the group's id)
/// cannot be reused by an unrelated process while we signal the group. A
/// child that was already reaped has no group we can name safely: nothing is
/// sent. Members that left the group (`setsid`, `setpgid`) are not reached.
pub async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    signal_group(pgid, libc::SIGTERM);
    // A stopped member would only see SIGTERM once continued.
    signal_group(pgid, libc::SIGCONT);
    let deadline = Instant::now() + grace;
    loop {
        // Reading /proc costs microseconds and never waits on a disk, so
        // it is done inline. Unreadable /proc counts as alive: SIGKILL.
        if !group_alive(pgid).unwrap_or(true) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!(pgid, "process group outlived its grace period: SIGKILL");
            signal_group(pgid, libc::SIGKILL);
            break;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
    }
    if let Err(e) = child.wait().await {
        tracing::warn!(pid, "could not reap the content process: {e}");
    }
}

fn signal_group(pgid: libc::pid_t, signal: c_int) {
    // SAFETY: kill has no memory-safety preconditions. ESRCH (no member
    // left) is the expected outcome of a race and needs no handling.
    unsafe { libc::kill(-pgid, signal) };
}

/// Whether any process of group `pgid` is still running (zombies are dead:
/// they only wait to be reaped).
fn group_alive(pgid: libc::pid_t) -> io::Result<bool> {
    // The leader is the usual survivor: look at it before scanning.
    if let Some((group, running)) = process_state(pgid) {
        if group == pgid && running {
            return Ok(true);
        }
    }
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if let Some((group, running)) = process_state(pid) {
            if group == pgid && running {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// `(process group, running)` from /proc/<pid>/stat; `None` if it is gone.
pub(super) fn process_state(pid: libc::pid_t) -> Option<(libc::pid_t, bool)> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
    let end = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(end + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((pgrp, !matches!(state, "Z" | "X" | "x")))
}

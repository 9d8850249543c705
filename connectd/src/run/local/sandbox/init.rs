//! The PID namespace every sandbox gets, and the two small processes that
//! keep it: [`start_init`] and [`start_app`], each a fork that never execs.
//!
//! ```text
//! connectd ── monitor (the pid connectd holds; outside the namespace, root)
//!               └── init (PID 1 inside, root) ── the content process (PID 2), its children
//! ```
//!
//! - The **monitor** is the process connectd forked and knows by pid. It
//!   forwards the signals connectd sends (SIGTERM...) to init, waits for
//!   init, and ends as the content process ended (the same exit code, or
//!   killed by the same signal), so connectd sees no difference.
//! - **init** is PID 1 of the namespace. It forwards each signal to every
//!   process in the namespace (`kill(-1)`), so a process that left the
//!   process group (`setsid`) still gets it, reaps orphans, and exits when
//!   the content process exits, which makes the kernel kill everything
//!   left in the namespace: nothing outlives the content process.
//! - Each dies with its parent (SIGKILL on the parent's death): killing the
//!   monitor, or connectd, takes the whole namespace down.
//!
//! The content process itself is not PID 1 because the kernel drops every
//! signal an init has no handler for, SIGTERM included, so a stop would
//! always wait for SIGKILL, and orphans would never be reaped.
//!
//! Like `child`, async-signal-safe code only: both processes are forks of
//! connectd (other threads may have held the allocator's lock), so they
//! make raw system calls on stack data and never return to Rust code that
//! could allocate. Forks are raw `clone` calls, so no `pthread_atfork`
//! handler runs in them.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::c_int;

/// Signals connectd (or an administrator) sends to stop or poke content,
/// passed on by the monitor and init. SIGKILL and SIGSTOP cannot be
/// caught; SIGKILL reaches the namespace through the parent-death signals.
const FORWARDED: [c_int; 7] = [
    libc::SIGTERM,
    // terminate sends it in case the content was stopped (SIGSTOP).
    libc::SIGCONT,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Where [`forward`] sends a signal: init's pid in the monitor, -1 (the
/// whole namespace) in init. Each process is a separate copy of memory, so
/// one static serves both.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// The write end of the pipe init reports the content process's wait
/// status on, set in init by [`start_init`] for [`start_app`].
static STATUS_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(signal: c_int) {
    let target = FORWARD_TO.load(Ordering::Relaxed);
    if target != 0 {
        // SAFETY: kill is async-signal-safe and has no memory preconditions.
        unsafe { libc::kill(target, signal) };
    }
}

fn cvt(rc: c_int) -> io::Result<c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// `fork()` as a raw system call: glibc's would run atfork handlers, which
/// may take locks another thread of connectd held at the first fork.
fn raw_fork() -> io::Result<libc::pid_t> {
    // SAFETY: clone with only an exit signal and no new stack behaves as
    // fork: the child continues here on a copy of this stack.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    libc::pid_t::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `struct clone_args` (linux/sched.h), as far as `cgroup` (version 2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// linux/sched.h; libc's constant is typed too narrow for the flag.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`raw_fork`] with the child created inside the cgroup v2 directory open
/// as `cgroup`: nothing is moved, so no wait for the kernel's cgroup lock
/// (a move waits for an RCU grace period).
fn raw_fork_into(cgroup: RawFd) -> io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: u64::try_from(cgroup).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?,
        ..CloneArgs::default()
    };
    // SAFETY: a valid clone_args of the size given; no stack, so the child
    // continues here on a copy of this one, as with fork.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    libc::pid_t::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn pipe() -> io::Result<[RawFd; 2]> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok(fds)
}

fn close(fd: RawFd) {
    // SAFETY: closes a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}

/// Closes every descriptor above stderr except `keep`. The monitor and
/// init must not hold connectd's copy of the spawn's exec-status pipe,
/// or connectd would wait for them, and should hold nothing else.
fn close_all_except(keep: &[RawFd]) {
    let mut sorted = [RawFd::MAX; 4];
    for (slot, fd) in sorted.iter_mut().zip(keep) {
        *slot = *fd;
    }
    sorted.sort_unstable();
    let mut from: libc::c_uint = 3;
    for fd in sorted {
        let until = if fd == RawFd::MAX {
            libc::c_uint::MAX
        } else {
            match libc::c_uint::try_from(fd) {
                Ok(fd) if fd >= from => fd.saturating_sub(1),
                _ => continue,
            }
        };
        if until >= from {
            close_range(from, until);
        }
        if until == libc::c_uint::MAX {
            return;
        }
        from = until.saturating_add(2);
    }
}

fn close_range(from: libc::c_uint, until: libc::c_uint) {
    // SAFETY: no memory is involved.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, from, until, 0 as libc::c_uint) };
    if rc == 0 {
        return;
    }
    // Before Linux 5.9: one by one, up to the usual descriptor limit.
    for fd in from..=until.min(65_535) {
        // SAFETY: closing a descriptor that may not exist is harmless.
        unsafe { libc::close(fd as c_int) };
    }
}

/// Installs [`forward`] for [`FORWARDED`] and ignores SIGPIPE.
fn forward_signals_to(target: libc::pid_t) {
    FORWARD_TO.store(target, Ordering::Relaxed);
    for signal in FORWARDED {
        // SAFETY: a zeroed sigaction is valid; the handler is
        // async-signal-safe; SA_RESTART keeps waitpid and read going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as extern "C" fn(c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    // SAFETY: no memory is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Names the process in `ps` and /proc (at most 15 bytes).
fn set_name(name: &std::ffi::CStr) {
    // SAFETY: name is NUL-terminated.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
}

/// `waitpid(pid)`, retried when a forwarded signal interrupts it; the wait
/// status, or `None` if there is no such child.
fn wait_for(pid: libc::pid_t) -> Option<c_int> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: status is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc > 0 {
            return Some(status);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// Forks init into the PID namespace the caller has unshared, and into the
/// cgroup v2 directory open as `cgroup` unless it is -1. Returns in init,
/// which goes on with the sandbox's set-up; the caller becomes the monitor
/// and never returns.
pub(super) fn start_init(cgroup: RawFd) -> io::Result<()> {
    let [status_read, status_write] = pipe()?;
    // Held by the monitor for as long as it lives: init reads its end to
    // tell whether the monitor died before init could ask to die with it.
    let [alive_read, alive_write] = match pipe() {
        Ok(fds) => fds,
        Err(e) => {
            close(status_read);
            close(status_write);
            return Err(e);
        }
    };
    let forked = if cgroup >= 0 {
        raw_fork_into(cgroup)
    } else {
        raw_fork()
    };
    let init = match forked {
        Ok(pid) => pid,
        Err(e) => {
            for fd in [status_read, status_write, alive_read, alive_write] {
                close(fd);
            }
            return Err(e);
        }
    };
    if init != 0 {
        close(status_write);
        close(alive_read);
        monitor(init, status_read, alive_write)
    }
    close(status_read);
    close(alive_write);
    // SAFETY: no memory is involved.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
    let mut poll = libc::pollfd {
        fd: alive_read,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let polled = unsafe { libc::poll(&mut poll, 1, 0) };
    close(alive_read);
    if polled != 0 {
        // Hung up: the monitor is gone, and no parent-death signal will come.
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    STATUS_PIPE.store(status_write, Ordering::Relaxed);
    Ok(())
}

/// Forks the content process, which returns here and goes on to drop its
/// privileges and exec; the caller, init, never returns.
pub(super) fn start_app() -> io::Result<()> {
    let status_write = STATUS_PIPE.load(Ordering::Relaxed);
    let app = raw_fork()?;
    if app == 0 {
        close(status_write);
        return Ok(());
    }
    init(app, status_write)
}

fn monitor(init: libc::pid_t, status_read: RawFd, alive_write: RawFd) -> ! {
    set_name(c"connect-monitor");
    forward_signals_to(init);
    close_all_except(&[status_read, alive_write]);
    let init_status = wait_for(init).unwrap_or(0);
    let mut report = [0u8; 4];
    // SAFETY: report is valid for 4 bytes. Init has exited, so this never
    // blocks: it returns what init wrote, or end-of-file.
    let n = unsafe { libc::read(status_read, report.as_mut_ptr().cast(), report.len()) };
    let status = if n == 4 {
        c_int::from_ne_bytes(report)
    } else {
        // Init died without reporting (killed with its parent or by an
        // administrator): its own status is the answer.
        init_status
    };
    end_like(status)
}

fn init(app: libc::pid_t, status_write: RawFd) -> ! {
    set_name(c"connect-init");
    forward_signals_to(-1);
    close_all_except(&[status_write]);
    loop {
        let mut status: c_int = 0;
        // SAFETY: status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == app {
            let report = status.to_ne_bytes();
            // SAFETY: writes 4 bytes from a stack buffer; a pipe takes
            // them at once. If the monitor is gone, nobody needs them.
            unsafe { libc::write(status_write, report.as_ptr().cast(), report.len()) };
            // Exiting kills everything left in the namespace.
            // SAFETY: no preconditions.
            unsafe { libc::_exit(0) };
        }
        if pid == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: no preconditions.
            unsafe { libc::_exit(1) };
        }
    }
}

/// Exits as a process with wait status `status` would have: the same exit
/// code, or death by the same signal (without a core dump of connectd's
/// memory).
fn end_like(status: c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain data; each call is async-signal-safe.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            libc::signal(signal, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), signal);
        }
        // SAFETY: no preconditions.
        unsafe { libc::_exit(128 + signal) };
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    };
    // SAFETY: no preconditions.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_all_except_keeps_exactly_what_it_is_told() {
        // In a child, so the test harness's own descriptors are untouched;
        // no allocation there (other test threads may hold the lock).
        let pid = raw_fork().expect("fork");
        if pid == 0 {
            let mut fds = [-1; 8];
            for pair in fds.chunks_mut(2) {
                let [r, w] = pipe().unwrap_or([-1, -1]);
                pair[0] = r;
                pair[1] = w;
            }
            close_all_except(&[fds[5], fds[2]]);
            // SAFETY: F_GETFD only asks whether the descriptor is open.
            let open = |fd: RawFd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
            let highest = fds.iter().copied().max().unwrap_or(0);
            let ok = fds.iter().all(|&fd| fd >= 3)
                && (3..=highest + 4).all(|fd| open(fd) == (fd == fds[2] || fd == fds[5]));
            // SAFETY: no preconditions.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let status = wait_for(pid).expect("status");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}

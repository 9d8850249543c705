//! Launching a content process under a Unix account in a sandbox of its
//! own: mount, PID and IPC namespaces, a fresh /proc, a minimal /dev, a
//! system-call filter.
//!
//! [`spawn`] forks, and the child, still root, builds the sandbox before it
//! becomes the viewer:
//!
//! 1. `setsid()`, the parent-death signal (SIGKILL when connectd's forking
//!    thread dies, so a killed connectd leaves no content behind), joining
//!    the [`Launch::cgroups`] (cgroup v1), then `unshare` of the mount, PID
//!    and IPC namespaces;
//! 2. a fork into the new PID namespace (and into [`Launch::cgroup_dir`],
//!    cgroup v2, with `clone3`): the process connectd forked stays
//!    outside as the *monitor*, the new one is *init*, PID 1 inside (see
//!    `init` for what each does); init goes on as root:
//! 3. `MS_REC|MS_PRIVATE` on `/`: nothing done below reaches the host;
//! 4. every [`Isolation::expose`] directory is opened (an `O_PATH`
//!    descriptor) while it is still visible;
//! 5. the hide, expose and private-tmp mounts are applied in path order
//!    (parents before children), so that nesting works whichever order the
//!    caller listed them in: an empty read-only tmpfs over each hidden
//!    directory, the exposed directories bound back from their descriptors,
//!    a fresh tmpfs on `/tmp` and `/var/tmp`;
//! 6. a fresh procfs on /proc (only the namespace's processes: no other
//!    content's `/proc/<pid>/root`, environment or descriptors), with
//!    /proc/sys read-only, and a read-only tmpfs on /dev holding null,
//!    zero, full, random, urandom and tty, with a private /dev/shm and
//!    devpts;
//! 7. a second fork: init stays behind to reap and pass on signals, and
//!    the content process, PID 2, sets `PR_SET_NO_NEW_PRIVS`, `setgroups`,
//!    `setgid`, `setuid`, then checks that root cannot be regained (ids,
//!    saved ids, capabilities, `setuid(0)`);
//! 8. its own parent-death signal (init), the umask and the working
//!    directory, the system-call filter (`filter`), then `exec`.
//!
//! Everything the child needs is computed before the fork: between fork and
//! exec only async-signal-safe system calls run (no allocation, no locks),
//! as the parent may have other threads holding the allocator's lock.
//!
//! Path handling: `hide` and `expose` paths are resolved (symlinks followed,
//! `..` removed) before the fork, with root's view of the host; the child
//! then opens every mount point with `RESOLVE_NO_SYMLINKS` and mounts
//! through `/proc/self/fd/N`, so a directory swapped for a symlink during
//! the launch makes the launch fail instead of mounting somewhere else.
//!
//! What callers should know:
//! - [`spawn`] must run inside a Tokio runtime; it blocks for the fork and
//!   the set-up (milliseconds) and returns once the program is exec'd.
//!   The child it returns is the monitor: it ends as the content process
//!   ended (same exit code or signal), and only once nothing of the
//!   content is left running.
//! - The kernel sends the parent-death signal when the *thread* that forked
//!   ends, so long-lived processes must be started from a thread that lives
//!   as long as connectd: [`Spawner`].
//! - Exposing a directory under a hidden one also makes its path
//!   traversable (the tmpfs directories leading to it are root's, 0755);
//!   the directory's own permissions still apply.
//! - A private `/tmp` is a tmpfs without a size limit beyond the kernel's
//!   default (half of RAM), counted against memory.
//! - [`terminate`] signals the monitor, which passes the signal to every
//!   process of the namespace, then kills it after the grace period; the
//!   namespace's end takes everything with it, including processes that
//!   left the process group (`setsid`).
//! - The network is shared: content reaches databases and the local
//!   nameservice's lookup socket, and Unix sockets by path only where the
//!   file system lets it (other content's sockets are under connectd's
//!   hidden data directory).
//!
//! What lives where (none of it may import anything else of connectd):
//! - here: the launch spec ([`Launch`], [`Isolation`], [`Identity`]), its
//!   errors and the checks every part shares;
//! - `fork`: [`Spawner`] and [`spawn`], which check the spec, have the
//!   mounts resolved, the filter compiled and the child's steps planned,
//!   then fork;
//! - `mounts`: which paths are hidden, exposed or given a private tmpfs,
//!   resolved and put in mount order (root's view of the host, before the
//!   fork);
//! - `filter`: the system-call filter, compiled to BPF;
//! - `plan`: the child's steps, each with the words an error names it by,
//!   from the ordered mounts, the account and the filter;
//! - `child`: those steps as raw system calls, the only code that runs
//!   between fork and exec, and so all of it async-signal-safe;
//! - `init`: the monitor and init, the two forks that never exec (also
//!   async-signal-safe);
//! - `stop`: [`terminate`].
//!
//! Inside, `init` and `stop` may import nothing of the sandbox, `child`
//! only `init`, `mounts` only the spec from here, `plan` the spec, `mounts`
//! and `child`, and `fork` all of them. This file imports none of them (it
//! only re-exports), so the imports run one way.

mod child;
mod filter;
mod fork;
mod init;
mod mounts;
mod plan;
mod stop;

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use fork::{spawn, Spawner};
pub use stop::{content_pid, terminate};

/// The Unix account a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The full supplementary group list (as `getgrouplist` returns it).
    pub groups: Vec<u32>,
}

/// A directory made visible again after hiding, at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub path: PathBuf,
    /// Read-only (and nosuid, nodev) unless set.
    pub writable: bool,
}

/// What the process sees of the host's file system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Directories covered by an empty, root-owned, read-only tmpfs
    /// (mode 0755). A path that does not exist is skipped: there is nothing
    /// there to hide.
    pub hide: Vec<PathBuf>,
    /// Directories bind-mounted back at the same path after hiding, which
    /// may lie under a hidden path (the missing directories leading to them
    /// are created inside the tmpfs). They must exist.
    pub expose: Vec<Bind>,
    /// A fresh tmpfs (mode 1777) on `/tmp` and `/var/tmp`.
    pub private_tmp: bool,
}

/// One process to start.
#[derive(Debug)]
pub struct Launch {
    /// An absolute path, resolved inside the sandbox as `identity`.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The whole environment: nothing is inherited from connectd.
    pub env: Vec<(OsString, OsString)>,
    /// Entered after privileges are dropped, inside the sandbox.
    pub cwd: PathBuf,
    pub identity: Identity,
    pub umask: u32,
    pub isolation: Isolation,
    /// Receives stdout and stderr; stdin is /dev/null.
    pub log: std::fs::File,
    /// Open `cgroup.procs` files of the cgroups the process runs in (the
    /// caller keeps them open until [`spawn`] returns): cgroup v1, where the
    /// monitor moves itself in. Empty: connectd's.
    pub cgroups: Vec<std::os::fd::RawFd>,
    /// An open cgroup v2 directory: init is created inside it (the monitor
    /// stays in connectd's), which needs no move.
    pub cgroup_dir: Option<std::os::fd::RawFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "refusing to run {} with {what} 0 (root): content only ever runs under an \
         unprivileged account; check the account it was mapped to",
        program.display()
    )]
    Root {
        program: PathBuf,
        /// "uid", "gid" or "supplementary group".
        what: &'static str,
    },
    #[error("refusing to run {} with {what} {id}: not a valid id", program.display())]
    BadId {
        program: PathBuf,
        what: &'static str,
        id: u32,
    },
    #[error("the {what} {} {problem}", path.display())]
    BadPath {
        /// Which setting: "program", "working directory", "hide path"...
        what: &'static str,
        path: PathBuf,
        /// "is not absolute", "contains a NUL byte"...
        problem: &'static str,
    },
    #[error("argument {index} for {} contains a NUL byte", program.display())]
    BadArgument { program: PathBuf, index: usize },
    #[error("environment variable {name:?} {problem}")]
    BadEnvironment {
        name: String,
        /// "has an empty name", "has '=' in its name", "contains a NUL byte".
        problem: &'static str,
    },
    #[error("umask {0:#o} is not a permission mask (at most 0o777)")]
    BadUmask(u32),
    #[error("the {what} {} cannot be used: {source}", path.display())]
    Unusable {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the isolation settings cannot be applied: {0}")]
    Conflict(String),
    #[error("cannot prepare the launch of {}: {source}", program.display())]
    Setup { program: PathBuf, source: io::Error },
    /// A step of the sandbox set-up failed in the child, before `exec`.
    #[error("cannot start {}: {step} failed: {source}", program.display())]
    Sandbox {
        program: PathBuf,
        /// What the child was doing, e.g. "entering the working directory /srv/app".
        step: String,
        source: io::Error,
    },
    /// `fork` or `exec` failed (e.g. the program does not exist inside the
    /// sandbox, or the account may not execute it).
    #[error(
        "cannot start {} as uid {uid}: {source} (the program must exist inside the sandbox, \
         not be hidden, and be executable by that account)",
        program.display()
    )]
    Spawn {
        program: PathBuf,
        uid: u32,
        source: io::Error,
    },
}

fn check_identity(program: &Path, identity: &Identity) -> Result<(), LaunchError> {
    let root = |what| LaunchError::Root {
        program: program.to_path_buf(),
        what,
    };
    let bad = |what, id| LaunchError::BadId {
        program: program.to_path_buf(),
        what,
        id,
    };
    if identity.uid == 0 {
        return Err(root("uid"));
    }
    if identity.gid == 0 {
        return Err(root("gid"));
    }
    if identity.groups.contains(&0) {
        return Err(root("supplementary group"));
    }
    // (uid_t)-1 means "unchanged" to the set*id calls.
    if identity.uid == u32::MAX {
        return Err(bad("uid", identity.uid));
    }
    if identity.gid == u32::MAX {
        return Err(bad("gid", identity.gid));
    }
    if let Some(&g) = identity.groups.iter().find(|&&g| g == u32::MAX) {
        return Err(bad("supplementary group", g));
    }
    Ok(())
}

fn check_environment(env: &[(OsString, OsString)]) -> Result<(), LaunchError> {
    for (name, value) in env {
        let bad = |problem| LaunchError::BadEnvironment {
            name: name.to_string_lossy().into_owned(),
            problem,
        };
        if name.is_empty() {
            return Err(bad("has an empty name"));
        }
        if name.as_bytes().contains(&b'=') {
            return Err(bad("has '=' in its name"));
        }
        if name.as_bytes().contains(&0) || value.as_bytes().contains(&0) {
            return Err(bad("contains a NUL byte"));
        }
    }
    Ok(())
}

fn cstring(what: &'static str, path: &Path) -> Result<CString, LaunchError> {
    let bad = |problem| LaunchError::BadPath {
        what,
        path: path.to_path_buf(),
        problem,
    };
    if !path.is_absolute() {
        return Err(bad("is not absolute"));
    }
    CString::new(path.as_os_str().as_bytes()).map_err(|_| bad("contains a NUL byte"))
}

#[cfg(test)]
mod isolation_tests;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

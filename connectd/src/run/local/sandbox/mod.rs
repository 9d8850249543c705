//! Launching a content process under a Unix account in a private mount namespace.
//!
//! [`spawn`] forks, and the child, still root, builds its own view of the
//! file system before it becomes the viewer:
//!
//! 1. `setsid()`: its own session and process group, so that [`terminate`]
//!    can signal everything the content started;
//! 2. `unshare(CLONE_NEWNS)` and `MS_REC|MS_PRIVATE` on `/`: a private copy
//!    of the mount table; nothing done below reaches the host;
//! 3. every [`Isolation::expose`] directory is opened (an `O_PATH`
//!    descriptor) while it is still visible;
//! 4. the hide, expose and private-tmp mounts are applied in path order
//!    (parents before children), so that nesting works whichever order the
//!    caller listed them in: an empty read-only tmpfs over each hidden
//!    directory, the exposed directories bound back from their descriptors,
//!    a fresh tmpfs on `/tmp` and `/var/tmp`;
//! 5. `PR_SET_NO_NEW_PRIVS`, `setgroups`, `setgid`, `setuid`, then a check
//!    that root cannot be regained (ids, saved ids, capabilities,
//!    `setuid(0)`);
//! 6. the parent-death signal (SIGKILL when connectd's forking thread
//!    dies, so a killed connectd leaves no content behind), the umask and
//!    the working directory, then `exec`.
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
//! - The kernel sends the parent-death signal when the *thread* that forked
//!   ends, so long-lived processes must be started from a thread that lives
//!   as long as connectd: [`Spawner`].
//! - Exposing a directory under a hidden one also makes its path
//!   traversable (the tmpfs directories leading to it are root's, 0755);
//!   the directory's own permissions still apply.
//! - A private `/tmp` is a tmpfs without a size limit beyond the kernel's
//!   default (half of RAM), counted against memory.
//! - [`terminate`] reaches the process group; a process that leaves it
//!   (`setsid`, `setpgid`) escapes it, as it would escape any signal-based
//!   stop short of a cgroup.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use libc::{c_char, c_int, c_ulong};

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

/// The one thread that forks every content process and build, for as long
/// as connectd runs: the kernel ties a child's parent-death signal to the
/// thread that forked it, and the runtime's threads come and go.
pub struct Spawner {
    requests: std::sync::Mutex<std::sync::mpsc::Sender<SpawnRequest>>,
}

type SpawnRequest = (
    Launch,
    tokio::sync::oneshot::Sender<Result<tokio::process::Child, LaunchError>>,
);

impl Spawner {
    /// Starts the thread; `runtime` is where the children are reaped.
    pub fn new(runtime: tokio::runtime::Handle) -> io::Result<Self> {
        let (sender, receiver) = std::sync::mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("connectd-spawner".into())
            .spawn(move || {
                let _context = runtime.enter();
                // Ends when the Spawner is dropped.
                for (launch, reply) in receiver {
                    let _ = reply.send(spawn(launch));
                }
            })?;
        Ok(Self {
            requests: std::sync::Mutex::new(sender),
        })
    }

    /// [`spawn`], on the spawner thread.
    pub async fn spawn(&self, launch: Launch) -> Result<tokio::process::Child, LaunchError> {
        let program = launch.program.clone();
        let gone = || LaunchError::Setup {
            program: program.clone(),
            source: io::Error::other("the spawner thread has stopped"),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((launch, reply))
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Starts `launch.program` in its sandbox. Returns once the program has been
/// exec'd; every failure before that (validation, sandbox set-up, exec) is
/// an error and nothing keeps running.
pub fn spawn(launch: Launch) -> Result<tokio::process::Child, LaunchError> {
    let Launch {
        program,
        args,
        env,
        cwd,
        identity,
        umask,
        isolation,
        log,
    } = launch;

    check_identity(&program, &identity)?;
    cstring("program", &program)?;
    for (index, arg) in args.iter().enumerate() {
        if arg.as_bytes().contains(&0) {
            return Err(LaunchError::BadArgument {
                program: program.clone(),
                index,
            });
        }
    }
    check_environment(&env)?;
    if umask & !0o777 != 0 {
        return Err(LaunchError::BadUmask(umask));
    }
    let cwd_c = cstring("working directory", &cwd)?;
    let mounts = resolve(&isolation)?;
    let plan = Plan::new(&mounts, &identity, umask, cwd_c, &cwd)?;

    let setup = |source| LaunchError::Setup {
        program: program.clone(),
        source,
    };
    let stdout = log.try_clone().map_err(setup)?;
    let (report_read, report_write) = report_pipe().map_err(setup)?;

    let mut command = tokio::process::Command::new(&program);
    command
        .args(&args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log))
        .kill_on_drop(false);

    let Plan {
        steps,
        descriptions,
        sources,
    } = plan;
    let mut fds: Vec<RawFd> = vec![-1; sources];
    let report_fd = raw(&report_write);
    // SAFETY: the closure runs in the forked child, where only
    // async-signal-safe calls are allowed: `run_child` allocates nothing,
    // takes no lock and only makes raw system calls on data prepared above.
    unsafe {
        command.pre_exec(move || run_child(&steps, &mut fds, report_fd));
    }
    let spawned = command.spawn();
    // The child has exec'd or exited by now: our copy of the write end is
    // the last one that matters (others' forks close theirs at exec).
    drop(report_write);
    match spawned {
        Ok(child) => Ok(child),
        Err(source) => match failed_step(&report_read) {
            Some(index) => Err(LaunchError::Sandbox {
                program,
                step: descriptions
                    .get(index)
                    .cloned()
                    .unwrap_or_else(|| format!("sandbox step {index}")),
                source,
            }),
            None => Err(LaunchError::Spawn {
                program,
                uid: identity.uid,
                source,
            }),
        },
    }
}

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
fn process_state(pid: libc::pid_t) -> Option<(libc::pid_t, bool)> {
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

// ---------------------------------------------------------------------------
// Validation, before the fork.

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

// ---------------------------------------------------------------------------
// Ordering the mounts.

/// One mount of the isolation, at a resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mount {
    /// Empty read-only tmpfs.
    Hide,
    /// The host's directory bound back.
    Expose { writable: bool },
    /// Writable tmpfs, mode 1777.
    PrivateTmp,
}

impl Mount {
    /// Orders mounts at equal paths. None are left by the time mounts are
    /// sorted (duplicates merged, conflicts refused, a hide equal to an
    /// expose dropped); the rank only keeps the order total.
    fn rank(&self) -> u8 {
        match self {
            Mount::Hide => 0,
            Mount::Expose { .. } => 1,
            Mount::PrivateTmp => 2,
        }
    }

    fn is_tmpfs(&self) -> bool {
        matches!(self, Mount::Hide | Mount::PrivateTmp)
    }
}

/// A mount to make, in order, with the directories to create inside it
/// (for tmpfs mounts) so that later mounts under it have a mount point.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ordered {
    path: PathBuf,
    mount: Mount,
    mkdirs: Vec<PathBuf>,
}

/// Host paths the sandbox relies on: `/proc/self/fd` names every mount
/// source and target, so /proc cannot be hidden.
fn needed_by_sandbox(path: &Path) -> bool {
    path == Path::new("/") || path.starts_with("/proc")
}

/// Resolves and checks the isolation's paths, then orders the mounts:
/// parents before children, redundant hides dropped, and for every mount
/// under a tmpfs the directories to create in that tmpfs.
fn resolve(isolation: &Isolation) -> Result<Vec<Ordered>, LaunchError> {
    let mut mounts: Vec<(PathBuf, Mount)> = Vec::new();

    for path in &isolation.hide {
        cstring("hide path", path)?;
        let resolved = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "hide path does not exist: nothing to hide");
                continue;
            }
            Err(source) => {
                return Err(LaunchError::Unusable {
                    what: "hide path",
                    path: path.clone(),
                    source,
                })
            }
        };
        if needed_by_sandbox(&resolved) {
            return Err(LaunchError::Conflict(format!(
                "hide path {} would hide {} (/ and /proc must stay visible)",
                path.display(),
                resolved.display()
            )));
        }
        if !resolved.is_dir() {
            return Err(LaunchError::BadPath {
                what: "hide path",
                path: path.clone(),
                problem: "is not a directory (only directories can be hidden)",
            });
        }
        mounts.push((resolved, Mount::Hide));
    }

    for bind in &isolation.expose {
        cstring("expose path", &bind.path)?;
        let resolved =
            std::fs::canonicalize(&bind.path).map_err(|source| LaunchError::Unusable {
                what: "expose path",
                path: bind.path.clone(),
                source,
            })?;
        if resolved == Path::new("/") {
            return Err(LaunchError::Conflict(
                "/ cannot be exposed (it cannot be hidden either)".to_owned(),
            ));
        }
        if !resolved.is_dir() {
            return Err(LaunchError::BadPath {
                what: "expose path",
                path: bind.path.clone(),
                problem: "is not a directory (only directories can be exposed)",
            });
        }
        let mount = Mount::Expose {
            writable: bind.writable,
        };
        let twin = mounts
            .iter()
            .find(|(p, m)| *p == resolved && matches!(m, Mount::Expose { .. }));
        match twin {
            Some((_, existing)) if *existing == mount => continue,
            Some(_) => {
                return Err(LaunchError::Conflict(format!(
                    "{} is exposed twice, once read-only and once writable",
                    resolved.display()
                )))
            }
            None => mounts.push((resolved, mount)),
        }
    }

    if isolation.private_tmp {
        for tmp in ["/tmp", "/var/tmp"] {
            let resolved = match std::fs::canonicalize(tmp) {
                Ok(p) => p,
                // Created inside a hidden parent if there is one (below).
                Err(e) if e.kind() == io::ErrorKind::NotFound => PathBuf::from(tmp),
                Err(source) => {
                    return Err(LaunchError::Unusable {
                        what: "temporary directory",
                        path: PathBuf::from(tmp),
                        source,
                    })
                }
            };
            if let Some((_, m)) = mounts.iter().find(|(p, _)| *p == resolved) {
                if *m == Mount::PrivateTmp {
                    continue; // /var/tmp -> /tmp
                }
                return Err(LaunchError::Conflict(format!(
                    "{} is both {} and given a private tmpfs; drop one",
                    resolved.display(),
                    if *m == Mount::Hide {
                        "hidden"
                    } else {
                        "exposed"
                    }
                )));
            }
            mounts.push((resolved, Mount::PrivateTmp));
        }
    }

    // Hiding a path that is exposed as a whole changes nothing, and would
    // break the exposure: the recursive bind would copy the tmpfs already
    // mounted on its own source.
    let exposed: Vec<PathBuf> = mounts
        .iter()
        .filter(|(_, m)| matches!(m, Mount::Expose { .. }))
        .map(|(p, _)| p.clone())
        .collect();
    mounts.retain(|(p, m)| *m != Mount::Hide || !exposed.contains(p));

    // Path's order compares components: a parent sorts before its
    // children, so a mount is never made before the one it lies in (a
    // mount under an exposed directory made before the bind would be
    // copied into it by MS_REC).
    mounts.sort_by(|(a, m), (b, n)| a.cmp(b).then(m.rank().cmp(&n.rank())));

    let mut ordered: Vec<Ordered> = Vec::new();
    for (path, mount) in mounts {
        // The mount this one lies in (or replaces, at an equal path).
        let container = ordered.iter().rposition(|o| path.starts_with(&o.path));
        let in_tmpfs = container
            .and_then(|i| ordered.get(i))
            .is_some_and(|o| o.mount.is_tmpfs());
        match mount {
            // Already under an empty tmpfs: nothing of the host shows there.
            Mount::Hide if in_tmpfs => continue,
            Mount::PrivateTmp if !in_tmpfs && !path.exists() => {
                tracing::debug!(path = %path.display(), "no such directory: no private tmpfs for it");
                continue;
            }
            _ => {}
        }
        if in_tmpfs {
            if let Some(parent) = container.and_then(|i| ordered.get_mut(i)) {
                // Every directory from just below the tmpfs down to the
                // mount point, parents first.
                let mut dirs: Vec<PathBuf> = path
                    .ancestors()
                    .take_while(|a| a.starts_with(&parent.path) && *a != parent.path)
                    .map(Path::to_path_buf)
                    .collect();
                dirs.reverse();
                for dir in dirs {
                    if !parent.mkdirs.contains(&dir) {
                        parent.mkdirs.push(dir);
                    }
                }
            }
        }
        ordered.push(Ordered {
            path,
            mount,
            mkdirs: Vec::new(),
        });
    }
    Ok(ordered)
}

// ---------------------------------------------------------------------------
// The child's program.

/// One action of the child between fork and exec. Everything is owned and
/// prepared: running it allocates nothing.
#[derive(Debug)]
enum Step {
    NewSession,
    /// Marks every inherited descriptor above stderr close-on-exec, so a
    /// descriptor connectd leaked without `O_CLOEXEC` never reaches content.
    CloexecInherited,
    /// `umask(0)`: directories created for mount points get exactly 0755.
    ClearUmask,
    NewMountNamespace,
    PrivatePropagation,
    OpenSource {
        path: CString,
        slot: usize,
    },
    MountTmpfs {
        path: CString,
        flags: c_ulong,
        options: CString,
    },
    MakeDir {
        path: CString,
    },
    RemountTmpfsReadOnly {
        path: CString,
    },
    BindSource {
        slot: usize,
        path: CString,
    },
    BindReadOnly {
        path: CString,
    },
    CloseSources,
    NoNewPrivileges,
    SetGroups(Vec<libc::gid_t>),
    SetGid(libc::gid_t),
    SetUid(libc::uid_t),
    VerifyDropped {
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
    /// SIGKILL when the forking thread (connectd's spawner) dies, set after
    /// the credentials change (which clears it); `parent` is connectd's pid.
    DieWithParent {
        parent: libc::pid_t,
    },
    Umask(libc::mode_t),
    Chdir(CString),
}

/// The child's steps, with a description of each for error messages.
struct Plan {
    steps: Vec<Step>,
    descriptions: Vec<String>,
    /// How many expose sources the child opens.
    sources: usize,
}

impl Plan {
    fn new(
        mounts: &[Ordered],
        identity: &Identity,
        umask: u32,
        cwd: CString,
        cwd_path: &Path,
    ) -> Result<Self, LaunchError> {
        let mut plan = Plan {
            steps: Vec::new(),
            descriptions: Vec::new(),
            sources: 0,
        };
        plan.push(Step::NewSession, "starting a new session (setsid)".into());
        plan.push(
            Step::CloexecInherited,
            "marking inherited descriptors close-on-exec".into(),
        );
        plan.push(Step::ClearUmask, "clearing the umask".into());
        plan.push(
            Step::NewMountNamespace,
            "creating a mount namespace (unshare CLONE_NEWNS)".into(),
        );
        plan.push(
            Step::PrivatePropagation,
            "making all mounts private to the namespace".into(),
        );

        // Sources are opened while the host's view is still intact: a
        // directory under a hidden path is unreachable by name afterwards.
        // Slots number the exposes in order; the loop below counts alike.
        for m in mounts
            .iter()
            .filter(|m| matches!(m.mount, Mount::Expose { .. }))
        {
            plan.push(
                Step::OpenSource {
                    path: cstring("expose path", &m.path)?,
                    slot: plan.sources,
                },
                format!(
                    "opening {} to expose it (it must be a directory reached without symlinks)",
                    m.path.display()
                ),
            );
            plan.sources += 1;
        }

        let mut slot = 0;
        for m in mounts {
            let shown = m.path.display();
            let path = cstring("isolation path", &m.path)?;
            match m.mount {
                Mount::Hide | Mount::PrivateTmp => {
                    let hide = m.mount == Mount::Hide;
                    let (flags, options, what) = if hide {
                        (
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"mode=0755",
                            format!("mounting an empty tmpfs over hidden {shown}"),
                        )
                    } else {
                        (
                            libc::MS_NOSUID | libc::MS_NODEV,
                            c"mode=1777",
                            format!("mounting a private tmpfs on {shown}"),
                        )
                    };
                    plan.push(
                        Step::MountTmpfs {
                            path: path.clone(),
                            flags,
                            options: options.to_owned(),
                        },
                        what,
                    );
                    for dir in &m.mkdirs {
                        plan.push(
                            Step::MakeDir {
                                path: cstring("isolation path", dir)?,
                            },
                            format!(
                                "creating the mount point {} inside the tmpfs on {shown}",
                                dir.display()
                            ),
                        );
                    }
                    // Read-only as soon as its mount points exist: nothing
                    // is mounted on top yet, so the path still names it.
                    if hide {
                        plan.push(
                            Step::RemountTmpfsReadOnly { path },
                            format!("making the tmpfs over hidden {shown} read-only"),
                        );
                    }
                }
                Mount::Expose { writable } => {
                    plan.push(
                        Step::BindSource {
                            slot,
                            path: path.clone(),
                        },
                        format!("bind-mounting {shown} back into the namespace"),
                    );
                    slot += 1;
                    if !writable {
                        plan.push(
                            Step::BindReadOnly { path },
                            format!("making exposed {shown} read-only"),
                        );
                    }
                }
            }
        }
        plan.push(
            Step::CloseSources,
            "closing the exposed directories' descriptors".into(),
        );

        plan.push(
            Step::NoNewPrivileges,
            "setting no_new_privs (so setuid programs cannot regain root)".into(),
        );
        plan.push(
            Step::SetGroups(identity.groups.clone()),
            format!("setting supplementary groups {:?}", identity.groups),
        );
        plan.push(
            Step::SetGid(identity.gid),
            format!("setting gid {}", identity.gid),
        );
        plan.push(
            Step::SetUid(identity.uid),
            format!("setting uid {}", identity.uid),
        );
        plan.push(
            Step::VerifyDropped {
                uid: identity.uid,
                gid: identity.gid,
            },
            format!(
                "checking that uid {} gid {} holds no root privilege and cannot regain it \
                 (a process that could is never started)",
                identity.uid, identity.gid
            ),
        );
        plan.push(
            Step::DieWithParent {
                // SAFETY: no preconditions.
                parent: unsafe { libc::getpid() },
            },
            "arranging to be killed if connectd dies".into(),
        );
        plan.push(Step::Umask(umask), format!("setting umask {umask:03o}"));
        plan.push(
            Step::Chdir(cwd),
            format!(
                "entering the working directory {} as uid {} (it must exist inside the \
                 sandbox and be searchable by that account)",
                cwd_path.display(),
                identity.uid
            ),
        );
        Ok(plan)
    }

    fn push(&mut self, step: Step, description: String) {
        self.steps.push(step);
        self.descriptions.push(description);
    }
}

/// A pipe the child writes the index of its failing step to. Both ends are
/// close-on-exec (a successful exec closes the child's copy) and
/// non-blocking (another thread's fork may hold a copy of the write end for
/// a moment: reading must not wait for it).
fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let [read, write] = fds;
    // SAFETY: pipe2 just returned these two descriptors; nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(read), OwnedFd::from_raw_fd(write)) })
}

fn raw(fd: &OwnedFd) -> RawFd {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}

fn failed_step(report: &OwnedFd) -> Option<usize> {
    let mut buf = [0u8; 4];
    // SAFETY: buf is valid for 4 bytes; the descriptor is open and ours.
    let n = unsafe { libc::read(raw(report), buf.as_mut_ptr().cast(), buf.len()) };
    if n == 4 {
        usize::try_from(u32::from_ne_bytes(buf)).ok()
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// In the child: async-signal-safe code only (no allocation, no locks, no
// formatting, no tracing, no panics).

fn run_child(steps: &[Step], fds: &mut [RawFd], report: RawFd) -> io::Result<()> {
    for (index, step) in steps.iter().enumerate() {
        if let Err(e) = step.run(fds) {
            let index = u32::try_from(index).unwrap_or(u32::MAX).to_ne_bytes();
            // SAFETY: writes 4 bytes from a stack buffer; a failure only
            // loses the step's name from the error message.
            unsafe { libc::write(report, index.as_ptr().cast(), index.len()) };
            return Err(e);
        }
    }
    Ok(())
}

fn cvt(rc: c_int) -> io::Result<c_int> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cvt_long(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// `struct open_how` (linux/openat2.h); kept here as libc marks its own
/// non-exhaustive.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct __user_cap_header_struct` / `__user_cap_data_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Opens a directory as an `O_PATH` descriptor without following any
/// symlink on the way: the paths were resolved before the fork, so a
/// symlink now means something changed under us.
fn open_dir_nofollow(path: &CStr) -> io::Result<RawFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: path is NUL-terminated and `how` is a valid open_how of the
    // size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if rc >= 0 {
        return RawFd::try_from(rc).map_err(|_| einval());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Before Linux 5.6: at least refuse a symlink as the last component.
    // SAFETY: path is NUL-terminated.
    cvt(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    })
}

/// "/proc/self/fd/N", NUL-terminated, in a stack buffer: names the object
/// behind descriptor N to mount(2).
struct ProcFdPath([u8; 32]);

impl ProcFdPath {
    fn new(fd: RawFd) -> io::Result<Self> {
        const PREFIX: &[u8] = b"/proc/self/fd/";
        let mut buf = [0u8; 32];
        let mut n = u32::try_from(fd).map_err(|_| einval())?;
        let mut digits = [0u8; 10];
        let mut len = 0;
        for d in digits.iter_mut() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
            len += 1;
            if n == 0 {
                break;
            }
        }
        let text = PREFIX
            .iter()
            .chain(digits.iter().take(len).rev())
            .chain(std::iter::once(&0u8));
        for (slot, byte) in buf.iter_mut().zip(text) {
            *slot = *byte;
        }
        Ok(ProcFdPath(buf))
    }

    fn as_ptr(&self) -> *const c_char {
        self.0.as_ptr().cast()
    }
}

/// Closes `fd` after `f`, keeping `f`'s errno.
fn with_fd<T>(fd: RawFd, f: impl FnOnce(RawFd) -> io::Result<T>) -> io::Result<T> {
    let result = f(fd);
    // SAFETY: fd was opened by the caller and is not used afterwards.
    unsafe { libc::close(fd) };
    result
}

fn mount(
    source: *const c_char,
    target: &ProcFdPath,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_char,
) -> io::Result<()> {
    // SAFETY: every pointer is null or a NUL-terminated string that
    // outlives the call.
    cvt(unsafe { libc::mount(source, target.as_ptr(), fstype, flags, data.cast()) }).map(drop)
}

/// Read-only, nosuid and nodev for the bind mount `fd` is the root of, and
/// for every mount below it; noexec and atime flags stay as they were.
fn make_read_only(fd: RawFd) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: "" is NUL-terminated and attr is a valid mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOSYS) {
        return Err(err);
    }
    // Before Linux 5.12: a bind remount, which only covers the top mount
    // and resets noexec unless we pass it again.
    // SAFETY: statvfs is plain data, valid zeroed.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid statvfs buffer. (glibc takes the flags from
    // fstatfs's f_flags, a plain system call, on any kernel since 2.6.36.)
    cvt(unsafe { libc::fstatvfs(fd, &mut st) })?;
    let mut flags =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    if st.f_flag & libc::ST_NOEXEC != 0 {
        flags |= libc::MS_NOEXEC;
    }
    mount(
        std::ptr::null(),
        &ProcFdPath::new(fd)?,
        std::ptr::null(),
        flags,
        std::ptr::null(),
    )
}

/// Whether uid/gid hold no trace of root: real, effective and saved ids,
/// no capability, and `setuid(0)`/`setgid(0)` refused.
fn verify_dropped(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let denied = || io::Error::from_raw_os_error(libc::EPERM);
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: the out-pointers are valid locals.
    cvt(unsafe { libc::getresuid(&mut ruid, &mut euid, &mut suid) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::getresgid(&mut rgid, &mut egid, &mut sgid) })?;
    if [ruid, euid, suid] != [uid; 3] || [rgid, egid, sgid] != [gid; 3] {
        return Err(denied());
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and a two-element data array, as version 3 requires.
    cvt_long(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    })?;
    if data.iter().any(|d| d.effective != 0 || d.permitted != 0) {
        return Err(denied());
    }
    // SAFETY: no preconditions; success means root came back, and the
    // caller then fails the launch, so the child exits without exec.
    if unsafe { libc::setuid(0) } == 0 || unsafe { libc::setgid(0) } == 0 {
        return Err(denied());
    }
    Ok(())
}

impl Step {
    fn run(&self, fds: &mut [RawFd]) -> io::Result<()> {
        match self {
            // SAFETY: no preconditions.
            Step::NewSession => cvt(unsafe { libc::setsid() }).map(drop),
            Step::CloexecInherited => {
                // SAFETY: no memory is involved.
                let rc = unsafe {
                    libc::syscall(
                        libc::SYS_close_range,
                        3 as libc::c_uint,
                        libc::c_uint::MAX,
                        libc::CLOSE_RANGE_CLOEXEC,
                    )
                };
                match cvt_long(rc) {
                    // Kernels before 5.11 lack the flag: descriptors
                    // connectd opens are close-on-exec anyway.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
                        Ok(())
                    }
                    other => other,
                }
            }
            Step::ClearUmask => {
                // SAFETY: no preconditions.
                unsafe { libc::umask(0) };
                Ok(())
            }
            // SAFETY: no preconditions.
            Step::NewMountNamespace => cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) }).map(drop),
            Step::PrivatePropagation => {
                // SAFETY: "/" is NUL-terminated; the other pointers are null.
                cvt(unsafe {
                    libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    )
                })
                .map(drop)
            }
            Step::OpenSource { path, slot } => {
                let fd = open_dir_nofollow(path)?;
                match fds.get_mut(*slot) {
                    Some(s) => {
                        *s = fd;
                        Ok(())
                    }
                    None => with_fd(fd, |_| Err(einval())),
                }
            }
            Step::MountTmpfs {
                path,
                flags,
                options,
            } => with_fd(open_dir_nofollow(path)?, |fd| {
                mount(
                    c"tmpfs".as_ptr(),
                    &ProcFdPath::new(fd)?,
                    c"tmpfs".as_ptr(),
                    *flags,
                    options.as_ptr(),
                )
            }),
            Step::MakeDir { path } => {
                // SAFETY: path is NUL-terminated.
                match cvt(unsafe { libc::mkdir(path.as_ptr(), 0o755) }) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                    other => other.map(drop),
                }
            }
            Step::RemountTmpfsReadOnly { path } => with_fd(open_dir_nofollow(path)?, |fd| {
                mount(
                    std::ptr::null(),
                    &ProcFdPath::new(fd)?,
                    std::ptr::null(),
                    libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                )
            }),
            Step::BindSource { slot, path } => {
                let source = ProcFdPath::new(*fds.get(*slot).ok_or_else(einval)?)?;
                with_fd(open_dir_nofollow(path)?, |fd| {
                    mount(
                        source.as_ptr(),
                        &ProcFdPath::new(fd)?,
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    )
                })
            }
            // Opened after the bind: the descriptor is the bind's root.
            Step::BindReadOnly { path } => with_fd(open_dir_nofollow(path)?, make_read_only),
            Step::CloseSources => {
                for fd in fds.iter_mut() {
                    if *fd >= 0 {
                        // SAFETY: opened by OpenSource, closed once.
                        unsafe { libc::close(*fd) };
                        *fd = -1;
                    }
                }
                Ok(())
            }
            Step::NoNewPrivileges => {
                // SAFETY: no memory is involved.
                cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
            }
            Step::SetGroups(groups) => {
                let list = if groups.is_empty() {
                    std::ptr::null()
                } else {
                    groups.as_ptr()
                };
                // SAFETY: list points to groups.len() gids (or is null for none).
                cvt(unsafe { libc::setgroups(groups.len(), list) }).map(drop)
            }
            // SAFETY: no preconditions.
            Step::SetGid(gid) => cvt(unsafe { libc::setgid(*gid) }).map(drop),
            // SAFETY: no preconditions.
            Step::SetUid(uid) => cvt(unsafe { libc::setuid(*uid) }).map(drop),
            Step::VerifyDropped { uid, gid } => verify_dropped(*uid, *gid),
            Step::DieWithParent { parent } => {
                // SAFETY: no memory is involved.
                cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
                // The parent may have died before the request took effect.
                // SAFETY: no preconditions.
                if unsafe { libc::getppid() } != *parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            }
            Step::Umask(mask) => {
                // SAFETY: no preconditions.
                unsafe { libc::umask(*mask) };
                Ok(())
            }
            // SAFETY: the path is NUL-terminated.
            Step::Chdir(path) => cvt(unsafe { libc::chdir(path.as_ptr()) }).map(drop),
        }
    }
}

#[cfg(test)]
mod tests;

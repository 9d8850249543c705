//! The Launcher seam: what the scheduler and deployments need from
//! whatever starts content processes and builds.
//!
//! A [`Launcher`] takes a [`LaunchSpec`] (who, what, where, which
//! directories) and returns a [`Running`] handle (its endpoint, its pid,
//! its exit, a stop with a grace period). Pool policy, job rows, readiness
//! and InitTimeout stay with the caller; the launcher only starts, watches
//! and stops one process.
//!
//! The spec is written so that a launcher other than this machine's could
//! implement it: a Kubernetes launcher would map the account to the pod's
//! `runAsUser`/`runAsGroup`/`supplementalGroups`, the mounts to volumes at
//! the same paths, the log to a sink it copies the pod's output into, and
//! its endpoint to the pod's address. What only the local sandbox knows
//! (which of connectd's directories to hide, the umask, private `/tmp`,
//! socket directories, process groups, PDEATHSIG) is decided inside
//! [`crate::run::local`], not here. The PAM session plan is the one local
//! detail the spec carries, because the scheduler decides it per viewer;
//! another launcher may refuse a spec that asks for one. Resource limits
//! are the content's (a pod's resources, a local cgroup).

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use crate::config::ResourceLimits;

/// A boxed future, so that both traits stay object-safe
/// (`Arc<dyn Launcher>`, `Box<dyn Running>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a content process listens, and where connectd reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A Unix socket (the local launcher's: one private directory per job).
    Unix(PathBuf),
    /// A TCP address (a pod's, say). Apps trust whoever connects with the
    /// viewer's identity (the credentials header, X-Forwarded-For): a
    /// launcher that hands one out must let only connectd reach it.
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp:{address}"),
        }
    }
}

/// What is started: a content process (serves requests until stopped) or
/// one step of a build (runs to its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaunchKind {
    App,
    Build,
}

impl LaunchKind {
    /// The jobs API's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchKind::App => "run",
            LaunchKind::Build => "build",
        }
    }
}

/// A directory the process sees at the same path as on connectd's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub path: PathBuf,
    /// Read-only unless set.
    pub writable: bool,
}

/// `[PAM] UseSession`: the session a viewer's process runs in. Only a
/// launcher on the machine whose PAM stack signed the viewer in can open
/// one.
#[derive(Clone)]
pub struct SessionPlan {
    /// The PAM service whose session stack runs.
    pub service: String,
    /// The viewer's password, kept from sign-in with `[PAM] ForwardPassword`.
    pub password: Option<String>,
}

impl fmt::Debug for SessionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPlan")
            .field("service", &self.service)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// One process to start, in terms any launcher understands.
#[derive(Debug)]
pub struct LaunchSpec {
    /// The job key: names the job row, the log and (locally) the socket
    /// directory; a pod would be named by it.
    pub job: String,
    pub kind: LaunchKind,
    /// The Unix account it runs as, resolved and checked by the caller.
    pub account: String,
    pub uid: u32,
    pub gid: u32,
    /// The full supplementary group list, the primary group first.
    pub groups: Vec<u32>,
    /// An absolute path, as the process sees the file system.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The whole environment: nothing of connectd's own is inherited.
    pub env: Vec<(OsString, OsString)>,
    /// The working directory, entered as the account.
    pub cwd: PathBuf,
    /// The bundle, the environment and the working or cache directories.
    pub mounts: Vec<Mount>,
    /// Where an app listens: what [`Launcher::endpoint`] gave for this job.
    /// Builds listen nowhere.
    pub listen: Option<Endpoint>,
    /// Receives stdout and stderr (a file, or a pipe someone reads).
    pub log: std::fs::File,
    /// The PAM session to open around the process, if any.
    pub session: Option<SessionPlan>,
    /// What it may use (memory, CPU, tasks). A launcher that cannot
    /// enforce them says so once, at start-up.
    pub limits: ResourceLimits,
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// Its exit code; `None` when a signal ended it or it could not be
    /// waited for.
    pub code: Option<i32>,
    pub success: bool,
    /// How it ended, as the launcher words it (`exit status: 1`,
    /// `signal: 9 (SIGKILL)`); `None` when nobody knows.
    pub status: Option<String>,
    /// The limit it was killed for exceeding, in the administrator's words
    /// (`its memory limit of 512 MiB ([Scheduler] MemoryLimit)`).
    pub over_limit: Option<String>,
}

impl Exit {
    /// The text the log, the job's waiters and the viewer read.
    pub fn reason(&self) -> String {
        if let Some(limit) = &self.over_limit {
            return format!("the process was killed for using more than {limit}");
        }
        match (&self.status, self.success) {
            (Some(_), true) => "the process exited".to_owned(),
            (Some(status), false) => format!("the process ended ({status})"),
            (None, _) => "the process ended".to_owned(),
        }
    }
}

/// Why a process could not be started. The text is for administrators
/// (the server log, the process log, the viewer's error page).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Preparing something the process needs (its socket directory).
    #[error("{what}: {source}")]
    Prepare {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the PAM session could not be opened: {0}")]
    Session(String),
    /// The launcher's own words on why the program did not start.
    #[error("{0}")]
    Spawn(String),
}

/// Starts content processes and builds. The local sandbox
/// ([`crate::run::local::LocalLauncher`]) is the first; one launcher serves
/// the whole server and may be shared by many tasks.
pub trait Launcher: Send + Sync {
    /// Where job `job`'s app, running as `uid`:`gid`, will listen, ready
    /// for it (the local launcher creates the socket's private directory).
    /// Quick: the scheduler calls it with its pools locked.
    fn endpoint(&self, job: &str, uid: u32, gid: u32) -> Result<Endpoint, StartError>;

    /// Starts `spec`; returns once the program runs (not once it listens:
    /// the caller polls the endpoint). On an error nothing keeps running
    /// and the endpoint has been cleaned up.
    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Box<dyn Running>, StartError>>;
}

/// A started process, owned by whoever supervises it. Whichever of
/// [`wait`](Running::wait) and [`stop`](Running::stop) returns first, the
/// launcher has cleaned up after it (process group, socket directory, PAM
/// session); call neither again afterwards.
pub trait Running: Send {
    /// Where connectd reaches it (`None` for a build).
    fn endpoint(&self) -> Option<&Endpoint>;

    /// Its pid on this machine, for the jobs API and logs; `None` where
    /// there is none to show (a pod).
    fn pid(&self) -> Option<u32>;

    /// Waits for it to end by itself. Cancel-safe: dropping the future
    /// before it completes loses nothing, and `stop` may follow.
    fn wait(&mut self) -> BoxFuture<'_, Exit>;

    /// Asks it to leave, and forces it after `grace`; returns once it has
    /// ended.
    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Exit>;
}

//! Starting a content process: [`Spawner`], the thread every fork happens
//! on, and [`spawn`], which checks the launch, has its mounts resolved and
//! its steps planned, forks, and turns a step the child reports as failed
//! into an error that names it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;

use libc::c_int;

use std::sync::OnceLock;

use super::child::run_child;
use super::filter::content_filters;
use super::mounts::resolve;
use super::plan::{Confinement, Plan};
use super::{check_environment, check_identity, cstring, Launch, LaunchError};

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
        cgroups,
        cgroup_dir,
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
    let filters = system_call_filters().map_err(|reason| LaunchError::Setup {
        program: program.clone(),
        source: io::Error::other(reason),
    })?;
    let confinement = Confinement {
        filters,
        cgroups: &cgroups,
        cgroup_dir,
    };
    let plan = Plan::new(&mounts, &identity, umask, cwd_c, &cwd, confinement)?;

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

/// The same for every launch: compiled once.
fn system_call_filters() -> Result<&'static [seccompiler::BpfProgram], String> {
    static FILTERS: OnceLock<Result<Vec<seccompiler::BpfProgram>, String>> = OnceLock::new();
    FILTERS
        .get_or_init(content_filters)
        .as_deref()
        .map_err(Clone::clone)
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

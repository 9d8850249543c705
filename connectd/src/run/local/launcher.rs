//! [`LocalLauncher`]: the [`Launcher`] that runs content on this machine,
//! through the [`sandbox`] (forked on the spawner thread, in a private
//! mount namespace, under the account) with an optional PAM session, and
//! listening on a Unix socket in a directory only its uid may enter.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Settings, DEFAULT_CONFIG_PATH};
use crate::layout::{self, Layout};
use crate::run::launcher::{
    BoxFuture, Endpoint, Exit, LaunchKind, LaunchSpec, Launcher, Mount, Running, StartError,
};
use crate::run::local::cgroup::{Cgroups, JobCgroup};
use crate::run::local::pam_session::PamSession;
use crate::run::local::sandbox::{self, Bind, Identity, Isolation, Launch, Spawner};

/// Files content processes write are group-readable (the shared group, as
/// the working directory is setgid) and hidden from everyone else; the
/// group may read but not overwrite another viewer's files.
pub const CONTENT_UMASK: u32 = 0o027;

/// What builds write (environments, caches) every account may read.
const BUILD_UMASK: u32 = 0o022;

/// The socket's name in its job's private directory.
const SOCKET_NAME: &str = "app.sock";

pub struct LocalLauncher {
    layout: Layout,
    /// Covered by an empty tmpfs in every process: connectd's data and
    /// configuration.
    hide: Vec<PathBuf>,
    spawner: Spawner,
    /// Where each app's cgroup (its memory, CPU and task limits) goes.
    cgroups: Cgroups,
}

impl LocalLauncher {
    /// Starts the spawner thread. Must be called inside the runtime that
    /// will reap the processes.
    pub fn new(settings: &Settings) -> std::io::Result<Self> {
        let spawner = Spawner::new(tokio::runtime::Handle::current())?;
        let layout = Layout::new(&settings.data_dir);
        let mut hide = vec![layout.data_dir().to_path_buf()];
        hide.extend(layout::dedicated_config_dir(&settings.config_path));
        let default_config = Path::new(DEFAULT_CONFIG_PATH);
        if let Some(dir) = default_config.parent() {
            if dir.exists() && !hide.iter().any(|h| h == dir) {
                hide.push(dir.to_path_buf());
            }
        }
        let cgroups = Cgroups::detect(&settings.limits);
        if cgroups.enforced() {
            tracing::info!("{}", cgroups.describe());
        } else {
            tracing::warn!("{}", cgroups.describe());
        }
        Ok(Self {
            layout,
            hide,
            spawner,
            cgroups,
        })
    }

    /// What every content process and build sees: nothing of connectd's
    /// data or configuration, a private /tmp, and `expose`.
    fn isolation(&self, expose: Vec<Bind>) -> Isolation {
        Isolation {
            hide: self.hide.clone(),
            expose,
            private_tmp: true,
        }
    }

    async fn launch(&self, spec: LaunchSpec) -> Result<Box<dyn Running>, StartError> {
        let socket_dir = match &spec.listen {
            Some(Endpoint::Unix(socket)) => socket.parent().map(Path::to_path_buf),
            Some(Endpoint::Tcp(address)) => {
                return Err(StartError::Spawn(format!(
                    "the local launcher listens on Unix sockets only, not {address}"
                )))
            }
            None => None,
        };
        let started = self.launch_in(spec, socket_dir.clone()).await;
        if started.is_err() {
            if let Some(dir) = &socket_dir {
                let _ = fs::remove_dir_all(dir);
            }
        }
        started
    }

    async fn launch_in(
        &self,
        spec: LaunchSpec,
        socket_dir: Option<PathBuf>,
    ) -> Result<Box<dyn Running>, StartError> {
        let LaunchSpec {
            job,
            kind,
            account,
            uid,
            gid,
            groups,
            program,
            args,
            mut env,
            cwd,
            mounts,
            listen,
            log,
            session: plan,
            limits,
        } = spec;
        let mut expose: Vec<Bind> = mounts
            .into_iter()
            .map(|Mount { path, writable }| Bind { path, writable })
            .collect();
        if let Some(dir) = &socket_dir {
            expose.push(Bind {
                path: dir.clone(),
                writable: true,
            });
        }
        // The spec's limits, whoever chose them (deployments give builds
        // none): a cgroup only for those that are set.
        let cgroup = self
            .cgroups
            .create(&job, &limits)
            .map_err(|source| StartError::Prepare {
                what: "cgroup",
                source,
            })?;
        let mut session = None;
        if let Some(plan) = plan {
            let opened = tokio::task::spawn_blocking(move || {
                PamSession::open(&plan.service, &account, plan.password.as_deref())
            })
            .await;
            match opened {
                Ok(Ok(opened)) => {
                    // PAM's variables (KRB5CCNAME, …) win over ours but
                    // never replace the account's identity.
                    for (key, value) in opened.environment() {
                        if !["HOME", "USER", "LOGNAME", "PATH"].contains(&key.as_str()) {
                            env.retain(|(k, _)| k != key.as_str());
                            env.push((key.into(), value.into()));
                        }
                    }
                    session = Some(opened);
                }
                Ok(Err(e)) => return Err(StartError::Session(e.to_string())),
                Err(e) => return Err(StartError::Spawn(e.to_string())),
            }
        }
        let launch = Launch {
            program,
            args,
            env,
            cwd,
            identity: Identity { uid, gid, groups },
            umask: match kind {
                LaunchKind::App => CONTENT_UMASK,
                LaunchKind::Build => BUILD_UMASK,
            },
            isolation: self.isolation(expose),
            log,
            cgroups: cgroup
                .as_ref()
                .map(JobCgroup::procs_fds)
                .unwrap_or_default(),
            cgroup_dir: cgroup.as_ref().and_then(JobCgroup::dir_fd),
        };
        let child = match self.spawner.spawn(launch).await {
            Ok(child) => child,
            Err(e) => {
                close_pam(session);
                return Err(StartError::Spawn(e.to_string()));
            }
        };
        // What administrators see in `ps` as the content: not the monitor
        // connectd holds, but the process it runs (spawn returns once it
        // has exec'd, so it is there).
        let pid = child
            .id()
            .map(|monitor| sandbox::content_pid(monitor).unwrap_or(monitor));
        Ok(Box::new(LocalRunning {
            pid,
            child,
            endpoint: listen,
            socket_dir,
            session,
            cgroup,
            memory_limit: limits.memory_bytes,
        }))
    }
}

impl Launcher for LocalLauncher {
    fn endpoint(&self, job: &str, uid: u32, gid: u32) -> Result<Endpoint, StartError> {
        let socket_dir = self.layout.socket_dir(job);
        // Only the process's own uid (and root) may enter it.
        layout::prepare_dir(&socket_dir, uid, gid, 0o700).map_err(|source| {
            StartError::Prepare {
                what: "socket directory",
                source,
            }
        })?;
        Ok(Endpoint::Unix(socket_dir.join(SOCKET_NAME)))
    }

    fn start(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Box<dyn Running>, StartError>> {
        Box::pin(self.launch(spec))
    }
}

/// A process the sandbox started: our child is its monitor, which ends
/// only once nothing of the content runs any more (see the sandbox).
struct LocalRunning {
    child: tokio::process::Child,
    pid: Option<u32>,
    endpoint: Option<Endpoint>,
    socket_dir: Option<PathBuf>,
    session: Option<PamSession>,
    cgroup: Option<JobCgroup>,
    memory_limit: Option<u64>,
}

impl LocalRunning {
    /// After the monitor has ended, and with it everything the content
    /// left behind (a worker, a `sleep &`, even one that called `setsid`):
    /// the socket directory and the PAM session.
    fn finish(&mut self, status: Option<std::process::ExitStatus>) -> Exit {
        if let Some(dir) = self.socket_dir.take() {
            let _ = fs::remove_dir_all(&dir);
        }
        close_pam(self.session.take());
        let mut over_limit = None;
        if let Some(mut cgroup) = self.cgroup.take() {
            if cgroup.out_of_memory() {
                let limit = self
                    .memory_limit
                    .map_or(String::new(), |b| format!(" of {} MiB", b >> 20));
                over_limit = Some(format!("its memory limit{limit} ([Scheduler] MemoryLimit)"));
            }
            cgroup.remove();
        }
        Exit {
            code: status.and_then(|s| s.code()),
            success: status.is_some_and(|s| s.success()),
            status: status.map(|s| s.to_string()),
            over_limit,
        }
    }
}

impl Running for LocalRunning {
    fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            let status = self.child.wait().await.ok();
            self.finish(status)
        })
    }

    fn stop(&mut self, grace: Duration) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            sandbox::terminate(&mut self.child, grace).await;
            let status = self.child.try_wait().ok().flatten();
            self.finish(status)
        })
    }
}

impl Drop for LocalRunning {
    fn drop(&mut self) {
        // Dropped unfinished (its supervisor was cancelled): the session
        // still closes, off the async threads.
        if self.session.is_some() && tokio::runtime::Handle::try_current().is_ok() {
            close_pam(self.session.take());
        }
    }
}

/// Closes a PAM session off the async threads (modules may block).
fn close_pam(session: Option<PamSession>) {
    if let Some(session) = session {
        tokio::task::spawn_blocking(move || {
            if let Err(e) = session.close() {
                tracing::warn!("closing the PAM session failed: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Instant;

    use crate::config::ResourceLimits;
    use crate::run::local::sandbox::testing::{sleeping, wait_for_sleep};
    use connect_gcfg::Config;

    use super::*;

    const NOBODY: u32 = 65534;

    /// Namespaces and set*id need root; as anyone else these say so and
    /// pass without checking anything (as the sandbox's own tests do).
    fn root() -> bool {
        // SAFETY: no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("local launcher tests need root: skipped");
        }
        root
    }

    fn launcher(data: &Path) -> LocalLauncher {
        let config = Config::parse("", "test.gcfg").expect("empty config");
        let mut settings = Settings::from_config(&config).expect("defaults");
        settings.data_dir = data.to_path_buf();
        LocalLauncher::new(&settings).expect("spawner")
    }

    fn spec(kind: LaunchKind, script: &str, listen: Option<Endpoint>, log: &Path) -> LaunchSpec {
        LaunchSpec {
            job: "job".to_owned(),
            kind,
            account: "nobody".to_owned(),
            uid: NOBODY,
            gid: NOBODY,
            groups: vec![NOBODY],
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: PathBuf::from("/"),
            mounts: vec![],
            listen,
            log: fs::File::create(log).expect("log"),
            session: None,
            limits: ResourceLimits::default(),
        }
    }

    /// Whether every `sleep <seconds>` is gone within ten seconds.
    async fn gone(seconds: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sleeping(seconds).is_empty() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    #[tokio::test]
    async fn an_app_gets_a_private_socket_directory_and_takes_its_group_along() {
        if !root() {
            return;
        }
        let data = tempfile::tempdir().expect("data dir");
        let local = launcher(data.path());
        let endpoint = local.endpoint("job", NOBODY, NOBODY).expect("endpoint");
        let Endpoint::Unix(socket) = &endpoint else {
            panic!("not a Unix socket: {endpoint}")
        };
        let dir = socket.parent().expect("its directory").to_path_buf();
        assert_eq!(dir, data.path().join("run/job"));
        let meta = fs::metadata(&dir).expect("socket directory");
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        let log = data.path().join("app.log");
        // The socket directory is writable inside the sandbox; a worker
        // is left behind when the leader exits.
        // (It waits for the test to have seen the worker.)
        let script = format!(
            "sleep 600.25 & touch {0}/written; until [ -e {0}/go ]; do sleep 0.01; done; exit 0",
            dir.display()
        );
        let mut running = local
            .start(spec(LaunchKind::App, &script, Some(endpoint.clone()), &log))
            .await
            .expect("start");
        assert_eq!(running.endpoint(), Some(&endpoint));
        assert!(running.pid().is_some());
        wait_for_sleep("600.25").await;
        fs::write(dir.join("go"), "").expect("go");
        let exit = tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .expect("it ended");
        assert_eq!(exit.code, Some(0), "{exit:?}; log: {:?}", fs::read(&log));
        assert_eq!(exit.reason(), "the process exited");
        assert!(gone("600.25").await, "the app's worker outlived it");
        assert!(!dir.exists(), "the socket directory was left behind");
    }

    #[tokio::test]
    async fn an_app_over_its_memory_limit_is_killed_and_its_exit_says_so() {
        if !root() {
            return;
        }
        let data = tempfile::tempdir().expect("data dir");
        let local = launcher(data.path());
        assert!(
            local.cgroups.enforced(),
            "this machine gives connectd no cgroup: {}",
            local.cgroups.describe()
        );
        let endpoint = local.endpoint("hungry", NOBODY, NOBODY).expect("endpoint");
        let log = data.path().join("app.log");
        // 512 MiB, every page written, against a limit of 64 MiB.
        let mut hungry = spec(
            LaunchKind::App,
            "exec /usr/bin/python3 -c \"x = b'x' * (512 << 20); print('allocated', len(x))\"",
            Some(endpoint),
            &log,
        );
        hungry.job = "hungry".to_owned();
        hungry.limits = ResourceLimits {
            memory_bytes: Some(64 << 20),
            ..ResourceLimits::default()
        };
        let mut running = local.start(hungry).await.expect("start");
        let exit = tokio::time::timeout(Duration::from_secs(30), running.wait())
            .await
            .expect("it ended");
        let printed = fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !printed.contains("allocated"),
            "it got its memory: {printed}"
        );
        assert!(!exit.success, "{exit:?}");
        assert_eq!(
            exit.reason(),
            "the process was killed for using more than its memory limit of 64 MiB \
             ([Scheduler] MemoryLimit)"
        );
        // A process within the limit is not reported as over it.
        let endpoint = local.endpoint("modest", NOBODY, NOBODY).expect("endpoint");
        let mut modest = spec(LaunchKind::App, "exit 0", Some(endpoint), &log);
        modest.job = "modest".to_owned();
        let exit = local.start(modest).await.expect("start").wait().await;
        assert_eq!(exit.reason(), "the process exited");
    }

    #[tokio::test]
    async fn stop_ends_an_app_with_sigterm() {
        if !root() {
            return;
        }
        let data = tempfile::tempdir().expect("data dir");
        let local = launcher(data.path());
        let endpoint = local.endpoint("job", NOBODY, NOBODY).expect("endpoint");
        let log = data.path().join("app.log");
        let mut running = local
            .start(spec(
                LaunchKind::App,
                "exec sleep 600.5",
                Some(endpoint),
                &log,
            ))
            .await
            .expect("start");
        wait_for_sleep("600.5").await;
        let exit = running.stop(Duration::from_secs(5)).await;
        assert_eq!(exit.code, None);
        assert_eq!(exit.reason(), "the process ended (signal: 15 (SIGTERM))");
        assert!(gone("600.5").await);
        assert!(!data.path().join("run/job").exists());
    }

    #[tokio::test]
    async fn nothing_a_build_step_started_outlives_it() {
        if !root() {
            return;
        }
        let data = tempfile::tempdir().expect("data dir");
        let local = launcher(data.path());
        let log = data.path().join("build.log");
        // A directory the step sees, where the test says when to go on
        // (once it has seen the background process).
        let shared = tempfile::tempdir_in("/tmp").expect("shared dir");
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let script = format!(
            "sleep 600.75 & until [ -e {0}/go ]; do sleep 0.01; done; exit 3",
            shared.path().display()
        );
        let mut step = spec(LaunchKind::Build, &script, None, &log);
        step.mounts.push(crate::run::launcher::Mount {
            path: shared.path().to_path_buf(),
            writable: false,
        });
        let mut running = local.start(step).await.expect("start");
        assert_eq!(running.endpoint(), None);
        wait_for_sleep("600.75").await;
        fs::write(shared.path().join("go"), "").expect("go");
        let exit = running.wait().await;
        assert_eq!(exit.code, Some(3));
        assert!(!exit.success);
        assert_eq!(exit.status.as_deref(), Some("exit status: 3"));
        assert_eq!(exit.reason(), "the process ended (exit status: 3)");
        // The step's PID namespace ends with it: a background process
        // cannot linger into the next step or past the build.
        assert!(
            gone("600.75").await,
            "a build step's background process survived"
        );
    }

    #[tokio::test]
    async fn a_missing_program_fails_the_start_and_cleans_up() {
        if !root() {
            return;
        }
        let data = tempfile::tempdir().expect("data dir");
        let local = launcher(data.path());
        let endpoint = local.endpoint("job", NOBODY, NOBODY).expect("endpoint");
        let log = data.path().join("app.log");
        let mut missing = spec(LaunchKind::App, "", Some(endpoint), &log);
        missing.program = PathBuf::from("/nonexistent/app");
        let error = match local.start(missing).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing program started"),
        };
        assert!(
            error.starts_with("cannot start /nonexistent/app"),
            "{error}"
        );
        assert!(!data.path().join("run/job").exists());
    }
}

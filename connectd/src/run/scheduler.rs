//! The process scheduler: which process serves a viewer's request, when a
//! new one starts, and when idle ones stop.
//!
//! Processes live in pools keyed by content and Unix account. Content that
//! runs as a shared account (RunAs) has one pool that serves every viewer,
//! up to `MaxConnsPerProcess` connections per process; content that runs as
//! the current user has one pool per viewer's account, so a process is
//! never shared across viewers (the scheduler limits then apply per viewer).
//! A new process starts when the pool's connections would exceed
//! `LoadFactor` x its capacity and `MaxProcesses` allows; a pool that is
//! full answers "busy", and so does the whole server once it runs
//! `[Scheduler] MaxTotalProcesses` processes, rather than exhausting the
//! machine. Processes idle for `IdleTimeout` are stopped (pools of shared
//! content keep `MinProcesses`).
//!
//! The rules are in `run::pool`, the account decisions in
//! `run::account`; this module applies them, builds launch specs,
//! starts processes through the [`Launcher`], watches them become ready
//! and supervises them until they end.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::accounts::runas::AccountRefusal;
use crate::bundle::{self, AppMode, Runtimes};
use crate::config::{SchedulerSettings, Settings};
use crate::identity::login::Authenticator;
use crate::layout::Layout;
use crate::model::Content;
use crate::model::User;
use crate::proxy::Upstream;
use crate::run::account::{AccountError, Accounts, RunIdentity};
use crate::run::jobs::{base_environment, new_job_key, open_log, runtimes};
use crate::run::launcher::{Endpoint, LaunchKind, LaunchSpec, Launcher, Mount, Running};
use crate::run::pool::{self, Choice, PoolKey, Pools, ProcessState};
use crate::store::Store;

pub use crate::run::pool::{Lease, Process};

/// How long a process gets to leave after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a viewer's request found no process.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error(
        "the server is running as many content processes as it may ([Scheduler] \
         MaxTotalProcesses = {0}); try again in a moment"
    )]
    ServerBusy(u32),
    #[error(
        "this content is serving as many connections as its settings allow (MaxProcesses \
         = {max_processes}, MaxConnsPerProcess = {max_conns}); try again in a moment"
    )]
    ContentBusy { max_processes: u32, max_conns: u32 },
    #[error("{0}")]
    Refused(AccountRefusal),
    #[error("the nameservice could not provide your Unix account: {0}")]
    Provisioning(String),
    #[error("the content has not been deployed yet")]
    NotDeployed,
    #[error("the application failed to start: {0}")]
    StartFailed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<AccountError> for AcquireError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Refused(refusal) => AcquireError::Refused(refusal),
            AccountError::Provisioning(why) => AcquireError::Provisioning(why),
            AccountError::Internal(why) => AcquireError::Internal(why),
        }
    }
}

pub struct Scheduler {
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    layout: Layout,
    accounts: Accounts,
    runtimes: Runtimes,
    server_url: String,
    pools: Mutex<Pools>,
    launcher: Arc<dyn Launcher>,
}

/// What the launch task records about a process.
struct JobRecord {
    content_id: i64,
    content_guid: String,
    bundle_id: i64,
    viewer_id: Option<i64>,
    log_path: String,
}

impl Scheduler {
    /// Every content process starts through `launcher`.
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<dyn Store>,
        auth: Arc<Authenticator>,
        launcher: Arc<dyn Launcher>,
    ) -> Arc<Self> {
        let layout = Layout::new(&settings.data_dir);
        let runtimes = runtimes(&settings, &layout);
        let server_url = settings.address.clone().unwrap_or_else(|| {
            let ip = settings.listen.ip();
            let host = if ip.is_unspecified() {
                "localhost".to_owned()
            } else {
                ip.to_string()
            };
            format!("http://{host}:{}", settings.listen.port())
        });
        Arc::new(Self {
            accounts: Accounts {
                settings: settings.clone(),
                store: store.clone(),
                auth,
            },
            settings,
            store,
            layout,
            runtimes,
            server_url,
            pools: Mutex::new(Pools::default()),
            launcher,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// What starts every content process and build.
    pub fn launcher(&self) -> &Arc<dyn Launcher> {
        &self.launcher
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, Pools> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Processes running now (starting or ready), for the API and tests.
    pub fn running(&self, content_id: i64) -> Vec<Arc<Process>> {
        self.pools().of_content(content_id).cloned().collect()
    }

    /// Every process running now with its content's id, for the
    /// dashboard's processes pages and the usage history.
    pub fn all_running(&self) -> Vec<(i64, Arc<Process>)> {
        self.pools()
            .by_key
            .iter()
            .flat_map(|(key, processes)| processes.iter().map(|p| (key.content_id, p.clone())))
            .collect()
    }

    pub fn total(&self) -> usize {
        self.pools().total
    }

    /// Finds or starts a process for one connection of `viewer` to
    /// `content`, and waits until it listens.
    pub async fn acquire(
        self: &Arc<Self>,
        content: &Content,
        viewer: Option<&User>,
    ) -> Result<Lease, AcquireError> {
        let (Some(bundle_id), Some(deployment)) =
            (content.bundle_id, content.deployment.as_deref())
        else {
            return Err(AcquireError::NotDeployed);
        };
        let limits = content.process.effective(&self.settings.scheduler);
        let key = pool::pool_key(&self.settings, content, viewer);
        // Most requests find a process: no account lookups on that path.
        // The account is resolved (and checked) only to start one.
        let mut identity = None;
        loop {
            let step = self.take_or_start(
                content,
                &key,
                (bundle_id, deployment),
                &limits,
                identity.as_ref(),
            )?;
            let lease = match step {
                Some(lease) => lease,
                None => {
                    identity = Some(self.accounts.identity(content, viewer).await?);
                    continue;
                }
            };
            self.wait_ready(lease.process(), limits.init_timeout)
                .await?;
            return Ok(lease);
        }
    }

    /// Under the pools' lock: a connection on a process that has room, or
    /// a new process (which needs the resolved `identity`: `Ok(None)` asks
    /// for it), or busy.
    fn take_or_start(
        self: &Arc<Self>,
        content: &Content,
        key: &PoolKey,
        (bundle_id, deployment): (i64, &str),
        limits: &SchedulerSettings,
        identity: Option<&RunIdentity>,
    ) -> Result<Option<Lease>, AcquireError> {
        let mut pools = self.pools();
        let max_total = self.settings.scheduler.max_total_processes;
        let process = match pools.choose(key, deployment, limits, max_total) {
            Choice::Use(process) => process,
            Choice::Start => {
                let Some(identity) = identity else {
                    return Ok(None);
                };
                let process = self.start(
                    content,
                    (bundle_id, deployment),
                    identity,
                    *limits,
                    key.clone(),
                )?;
                pools.add(process.clone());
                process
            }
            Choice::ServerFull => {
                tracing::warn!(
                    content = %content.guid,
                    limit = self.settings.scheduler.max_total_processes,
                    "refused a connection: the server runs as many content processes as \
                     [Scheduler] MaxTotalProcesses allows"
                );
                return Err(AcquireError::ServerBusy(
                    self.settings.scheduler.max_total_processes,
                ));
            }
            Choice::ContentFull => {
                return Err(AcquireError::ContentBusy {
                    max_processes: limits.max_processes,
                    max_conns: limits.max_conns_per_process,
                })
            }
        };
        Ok(Some(Lease::take(process)))
    }

    async fn wait_ready(
        &self,
        process: &Arc<Process>,
        timeout: Duration,
    ) -> Result<(), AcquireError> {
        let mut state = process.state.subscribe();
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                match &*state.borrow_and_update() {
                    ProcessState::Ready => return Ok(()),
                    ProcessState::Exited(why) => return Err(why.clone()),
                    ProcessState::Starting => {}
                }
                if state.changed().await.is_err() {
                    return Err("the process's watcher ended".to_owned());
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(AcquireError::StartFailed(why)),
            Err(_) => {
                process.stop.notify_one();
                Err(AcquireError::StartFailed(format!(
                    "it did not listen within InitTimeout ({} s); its log says more",
                    timeout.as_secs()
                )))
            }
        }
    }

    /// Starts a process; called with the pools locked, so it only does
    /// quick filesystem work and hands the waiting to tasks.
    fn start(
        self: &Arc<Self>,
        content: &Content,
        (bundle_id, deployment): (i64, &str),
        identity: &RunIdentity,
        settings: SchedulerSettings,
        pool: PoolKey,
    ) -> Result<Arc<Process>, AcquireError> {
        let internal =
            |what: &str, e: std::io::Error| AcquireError::Internal(format!("{what}: {e}"));
        let static_content = || AcquireError::Internal("static content runs no process".to_owned());
        let layout = &self.layout;
        let bundle_dir = layout.bundle_dir(&content.guid, bundle_id);
        let env_dir = layout.env_dir(&content.guid, deployment);
        let work_dir = layout.work_dir(&content.guid);
        let manifest = bundle::read_manifest(&bundle_dir)
            .map_err(|e| AcquireError::StartFailed(e.to_string()))?;
        if manifest.app_mode == AppMode::Static {
            return Err(static_content());
        }
        let job = new_job_key();
        let account = &identity.account;
        let uid = account.account.uid;
        let gid = account.account.gid;
        let endpoint = self
            .launcher
            .endpoint(&job, uid, gid)
            .map_err(|e| AcquireError::Internal(e.to_string()))?;
        let listen = match &endpoint {
            Endpoint::Unix(socket) => bundle::Listen::Unix(socket),
            Endpoint::Tcp(address) => bundle::Listen::Tcp(*address),
        };
        let step = bundle::run_step(
            &manifest,
            &bundle_dir,
            &env_dir,
            &work_dir,
            listen,
            &self.runtimes,
        )
        .ok_or_else(static_content)?;

        let log_path = layout.log_file(&content.guid, &job);
        let log = open_log(&log_path).map_err(|e| internal("log file", e))?;

        let mut env = base_environment(&account.account);
        env.push(("CONNECT_SERVER".into(), self.server_url.clone().into()));
        env.push(("CONNECT_CONTENT_GUID".into(), content.guid.clone().into()));
        env.extend(step.env.iter().cloned());
        let spec = LaunchSpec {
            job: job.clone(),
            kind: LaunchKind::App,
            account: account.account.name.clone(),
            uid,
            gid,
            groups: account.groups.clone(),
            program: step.program.clone(),
            args: step.args.clone(),
            env,
            cwd: step.cwd.clone(),
            mounts: vec![
                Mount {
                    path: bundle_dir,
                    writable: false,
                },
                Mount {
                    path: env_dir,
                    writable: false,
                },
                Mount {
                    path: work_dir,
                    writable: true,
                },
            ],
            listen: Some(endpoint.clone()),
            log,
            session: identity.pam_session.clone(),
            limits: content.process.limits(&self.settings.limits),
        };
        let (state, _) = watch::channel(ProcessState::Starting);
        let process = Arc::new(Process {
            job: job.clone(),
            pid: AtomicU32::new(0),
            uid,
            account: account.account.name.clone(),
            bundle_id,
            deployment: deployment.to_owned(),
            upstream: upstream_to(&endpoint),
            pool,
            settings,
            keep_minimum: identity.keep_minimum,
            connections: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            state,
            draining: AtomicBool::new(false),
            stop: Notify::new(),
            over_limit: Mutex::new(None),
            memory_limited: spec.limits.memory_bytes.is_some(),
        });
        let record = JobRecord {
            content_id: content.id,
            content_guid: content.guid.clone(),
            bundle_id,
            viewer_id: identity.viewer_id,
            log_path: log_path.display().to_string(),
        };
        // Forking, and opening a PAM session (which may talk to a KDC),
        // happen outside the pools' lock; connections that arrive meanwhile
        // wait for this process instead of starting their own.
        tokio::spawn(self.clone().launch(process.clone(), spec, endpoint, record));
        Ok(process)
    }

    async fn launch(
        self: Arc<Self>,
        process: Arc<Process>,
        spec: LaunchSpec,
        endpoint: Endpoint,
        record: JobRecord,
    ) {
        let record_start = |pid: Option<u32>| {
            self.store.start_job(
                &process.job,
                record.content_id,
                LaunchKind::App.as_str(),
                Some(record.bundle_id),
                pid,
                &process.account,
                process.uid,
                record.viewer_id,
                &record.log_path,
            )
        };
        let fail = |why: String| {
            tracing::error!(content = %record.content_guid, job = %process.job, "could not start a content process: {why}");
            // The owner reads why in the content's process list and log.
            if let Ok(mut log) = open_log(Path::new(&record.log_path)) {
                let _ = writeln!(log, "connectd: could not start this process: {why}");
            }
            let _ = record_start(None);
            let _ = self.store.end_job(&process.job, None);
            process.state.send_replace(ProcessState::Exited(why));
            self.pools().forget(&process);
        };
        let running = match self.launcher.start(spec).await {
            Ok(running) => running,
            Err(e) => return fail(e.to_string()),
        };
        let pid = running.pid().unwrap_or(0);
        process.pid.store(pid, Ordering::Release);
        tracing::info!(
            content = %record.content_guid,
            job = %process.job,
            pid,
            account = %process.account,
            uid = process.uid,
            "started a content process"
        );
        if let Err(e) = record_start(Some(pid)) {
            tracing::error!(job = %process.job, "could not record the process: {e}");
        }
        let endpoint = running.endpoint().cloned().unwrap_or(endpoint);
        tokio::spawn(watch_readiness(process.clone(), endpoint));
        self.supervise(process, running).await;
    }

    /// Owns the process: records its end, or stops it when asked.
    async fn supervise(&self, process: Arc<Process>, mut running: Box<dyn Running>) {
        let exit = tokio::select! {
            exit = running.wait() => exit,
            _ = process.stop.notified() => running.stop(STOP_GRACE).await,
        };
        let why = exit.reason();
        if exit.over_limit.is_some() {
            tracing::warn!(
                job = %process.job,
                pid = process.pid.load(Ordering::Acquire),
                "content process ended: {why}"
            );
        } else {
            tracing::info!(
                job = %process.job,
                pid = process.pid.load(Ordering::Acquire),
                "content process ended: {why}"
            );
        }
        *process.over_limit.lock().unwrap_or_else(|p| p.into_inner()) = exit.over_limit.clone();
        process.state.send_replace(ProcessState::Exited(why));
        self.pools().forget(&process);
        if let Err(e) = self.store.end_job(&process.job, exit.code) {
            tracing::error!(job = %process.job, "could not record the process's end: {e}");
        }
    }

    /// Stops processes that have been idle for their IdleTimeout, and
    /// draining ones as soon as they are idle. Runs until the server stops.
    pub async fn reap_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.reap_once();
        }
    }

    fn reap_once(&self) {
        self.pools().reap();
    }

    /// The process could not be reached: it is gone or going, whatever its
    /// watcher has seen so far. It gets no more connections.
    pub fn retire(&self, process: &Process) {
        process.stop_now();
    }

    /// A new bundle is live: processes of older ones finish what they
    /// serve and stop.
    pub fn drain_content(&self, content_id: i64, except: Option<&str>) {
        for process in self.pools().of_content(content_id) {
            if Some(process.deployment.as_str()) != except {
                process.draining.store(true, Ordering::Release);
            }
        }
    }

    /// Stops every process of the content now (it is being deleted).
    pub fn stop_content(&self, content_id: i64) {
        for process in self.pools().of_content(content_id) {
            process.stop_now();
        }
    }

    /// Stops everything, for shutdown; returns once all have ended or the
    /// grace period is over.
    pub async fn stop_all(&self) {
        let all: Vec<Arc<Process>> = {
            let pools = self.pools();
            pools.by_key.values().flatten().cloned().collect()
        };
        for process in &all {
            process.stop_now();
        }
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(1);
        while self.total() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls the endpoint until the app accepts a connection, or it exits.
/// A process that never listens within InitTimeout is stopped, whether or
/// not anyone is still waiting for it (else abandoned starts would pile up
/// against MaxTotalProcesses).
async fn watch_readiness(process: Arc<Process>, endpoint: Endpoint) {
    // Every millisecond for the first second (a connect to a socket that
    // is not there yet costs microseconds), then backing off: a viewer's
    // first byte should follow the app's readiness, not a polling step.
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(1);
    let deadline = started + process.settings.init_timeout;
    loop {
        if matches!(*process.state.borrow(), ProcessState::Exited(_)) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                job = %process.job,
                pid = process.pid.load(Ordering::Acquire),
                seconds = process.settings.init_timeout.as_secs(),
                "stopping a content process that did not listen within InitTimeout"
            );
            process.stop_now();
            return;
        }
        if listens(&endpoint).await {
            process.state.send_if_modified(|s| {
                if *s == ProcessState::Starting {
                    *s = ProcessState::Ready;
                    true
                } else {
                    false
                }
            });
            return;
        }
        tokio::time::sleep(delay).await;
        if started.elapsed() > Duration::from_secs(1) {
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

/// The proxy's way to `endpoint`: the proxy is a leaf, with its own type.
fn upstream_to(endpoint: &Endpoint) -> Upstream {
    match endpoint {
        Endpoint::Unix(socket) => Upstream::unix(socket.clone()),
        Endpoint::Tcp(address) => Upstream::tcp(*address),
    }
}

/// Whether something accepts connections at `endpoint`.
async fn listens(endpoint: &Endpoint) -> bool {
    match endpoint {
        Endpoint::Unix(socket) => tokio::net::UnixStream::connect(socket).await.is_ok(),
        Endpoint::Tcp(address) => tokio::net::TcpStream::connect(address).await.is_ok(),
    }
}

#[cfg(test)]
mod tests;
